"""The Gradio app: views over the backends; it computes nothing the CLI cannot compute too."""
