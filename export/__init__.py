"""Everything that needs torch: the model registry, the ONNX export, the parity check, INT8."""
