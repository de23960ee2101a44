"""Compare tab: one image, both backends, side by side.

Plain functions first (the logic, callable without a running app); :func:`build_tab` lays the tab
out under the app's ``gr.Blocks`` and names every event (``api_name``) for ``gradio_client``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from gui.access import Access, redact
from gui.context import AppContext
from gui.views.banner import random_banner
from lambda_onnx import photos
from lambda_onnx.classifier import ModelBody
from lambda_onnx.errors import ClassifierError, PayloadTooLargeError
from lambda_onnx.limits import LAMBDA_PAYLOAD_BYTES, MAX_IMAGE_BYTES
from lambda_onnx.preprocess import FORMAT_NAMES, IMAGE_SUFFIXES, decode
from local.clients.base import Backend, BackendResult
from local.clients.images import downscale_to_fit
from local.measure.monitor import cpu_label
from local.report import charts

EXAMPLES = photos.available(photos.EVALUATION)


@dataclass
class Outcome:
    """One backend's answer to the compare click: a result or an error message."""

    name: str
    result: BackendResult | None = None
    error: str | None = None
    status: int | None = None


@dataclass
class CompareTab:
    """What other tabs read from this one."""

    banner: gr.Markdown
    last: gr.State  # the digest (:func:`summary`) of this session's last compare click


# ---- plain functions ------------------------------------------------------------------------------


def read(path: str | Path | None) -> bytes:
    """The chosen image's bytes (a ClassifierError that says so when none was chosen)."""
    if not path:
        raise ClassifierError("choose an image first (upload one or pick an example)")
    return Path(path).read_bytes()


def check_size(data: bytes) -> None:
    """Refuse, before sending, what cannot pass Lambda's synchronous invoke limit."""
    if len(data) > MAX_IMAGE_BYTES:
        raise PayloadTooLargeError(
            f"the image is {len(data) / 1e6:.2f} MB; Lambda's {LAMBDA_PAYLOAD_BYTES / 2**20:.0f} MiB invoke payload limit "
            f"applies on every path (API Gateway included) and base64 adds a third, so at most "
            f"{MAX_IMAGE_BYTES / 1e6:.2f} MB of image fit. Use “Downscale to fit” to send a smaller copy."
        )


def describe_upload(path: str | None) -> tuple[Any, str, bool]:
    """Preview (decoded upright, HEIC too), a size line, and whether to offer the downscale."""
    if not path:
        return None, "", False
    data = Path(path).read_bytes()
    try:
        # Any size is decoded for the preview: the limit is the invoke's, checked when sending.
        decoded = decode(data, max_bytes=max(len(data), MAX_IMAGE_BYTES))
    except ClassifierError as exc:
        return None, f"❌ {exc.message} ({exc.status})", False
    line = f"{decoded.format} {decoded.width}×{decoded.height}, {len(data) / 1e3:,.0f} kB"
    if len(data) > MAX_IMAGE_BYTES:
        return decoded.image, (f"⚠️ {line}: over the {MAX_IMAGE_BYTES / 1e6:.2f} MB that fit in one Lambda invoke "
                               "(6 MiB payload, base64 adds a third). Downscale it to send it."), True
    return decoded.image, f"✅ {line}: fits the serverless limit ({MAX_IMAGE_BYTES / 1e6:.2f} MB)", False


def classify_both(backends: list[Backend], data: bytes) -> list[Outcome]:
    """Send the same bytes to each backend in turn; an error on one does not hide the other.

    In turn, not at once: when both run on this machine they would otherwise share its CPUs and
    slow each other down, and the comparison would measure the contention.
    """
    outcomes = []
    for backend in backends:
        try:
            outcomes.append(Outcome(backend.name, result=backend.classify(data)))
        except ClassifierError as exc:
            outcomes.append(Outcome(backend.name, error=exc.message, status=exc.status))
    return outcomes


def label_value(outcome: Outcome) -> dict[str, float] | None:
    """A backend's top-5 as ``gr.Label`` shows it ({label: probability}); None without an answer."""
    if outcome.result is None:
        return None
    return {p.label: p.probability for p in outcome.result.predictions}


def _kb(n: float | None) -> str:
    return "n/a" if n is None else (f"{n / 1e3:.1f} kB" if n < 1e6 else f"{n / 1e6:.2f} MB")


def facts_markdown(outcome: Outcome) -> str:
    """Cold/warm badge, timings, memory, payload and model identity of one backend."""
    if outcome.result is None:
        return f"### ❌ {outcome.status or 'no answer'}\n{outcome.error}"
    r = outcome.result
    m = r.metrics
    badge = (f"🧊 **cold start** — init {m['init_ms']:.0f} ms (module import to model ready)"
             if m["cold_start"] else f"🔥 **warm** — this environment was initialised in {m['init_ms']:.0f} ms")
    memory = m["memory_mb"]
    peak = m["peak_rss_mb"]
    used = (f"peak {peak:.0f} MB of {memory} MB configured ({m['memory_utilisation_pct']}%)" if memory
            else f"peak RSS {peak:.0f} MB (no memory limit configured)")
    if r.kind == "server" and r.request_bytes and "in-process" in outcome.name:
        used += " — the app's own process, GUI included"
    model = r.model
    return "\n".join([
        badge,
        "",
        f"- round trip **{r.round_trip_ms:.1f} ms** = handler {r.server_ms:.1f} ms + network/invoke {r.overhead_ms:.1f} ms",
        f"- inference {m['inference_ms']:.1f} ms, decode {m['decode_ms']:.1f} ms, preprocess {m['preprocess_ms']:.1f} ms",
        f"- memory: {used}",
        f"- payload: request {_kb(r.request_bytes)}, response {_kb(r.response_bytes)}",
        f"- model: {model['arch']} {model['precision']} on {model['runtime']} "
        f"({model['threads']} threads), sha256 `{model['sha256'][:12]}…`",
        f"- host: {cpu_label(r.host)}; {_canary_text(model)}",
        *[f"- ⚠️ **{warning}**" for warning in r.body["warnings"]],
    ])


def _canary_text(model: ModelBody) -> str:
    canary = model["canary"]
    kernel = f"INT8 kernel {model['int8_kernel']}, " if model["int8_kernel"] else ""
    status = canary.get("status", "not reported")
    mark = {"passed": "✅", "failed": "❌"}.get(status, "")
    detail = f" (relative error {canary['rel_rms']:.3f})" if canary.get("rel_rms") is not None else ""
    fallback = f"; {canary['kernel_fallback']}" if canary.get("kernel_fallback") else ""
    return f"{kernel}canary {canary.get('photo', '')} {mark}{status}{detail}{fallback}"


def agreement_markdown(outcomes: list[Outcome]) -> str:
    """Do the two answers agree: top-1, top-5 set, probabilities, and the artifact itself."""
    done = [o.result for o in outcomes if o.result is not None]
    if len(done) < 2:
        return "Agreement: needs an answer from both sides."
    a, b = done[:2]
    top_a, top_b = a.predictions, b.predictions
    same_top1 = top_a[0].class_id == top_b[0].class_id
    same_top5 = {p.class_id for p in top_a} == {p.class_id for p in top_b}
    probs_b = {p.class_id: p.probability for p in top_b}
    deltas = [abs(p.probability - probs_b[p.class_id]) for p in top_a if p.class_id in probs_b]
    sha_a, sha_b = a.model.get("sha256"), b.model.get("sha256")
    return "\n".join([
        f"- top-1: {'✅ both say' if same_top1 else '❌ differ:'} **{top_a[0].label}**"
        + ("" if same_top1 else f" vs **{top_b[0].label}**"),
        f"- top-5 sets: {'✅ identical' if same_top5 else '❌ differ'}"
        + (f"; max |Δ probability| {max(deltas):.2e}" if deltas else ""),
        f"- artifact: {'✅ the same model file' if sha_a == sha_b else '❌ different model files'} "
        f"(`{str(sha_a)[:12]}…`" + ("" if sha_a == sha_b else f" vs `{str(sha_b)[:12]}…`") + ")",
    ])


def breakdown_figure(outcomes: list[Outcome]) -> Any:
    """Where each answer's time went (network/invoke, decode, preprocess, inference, ...); None without answers."""
    rows = [(o.result.kind, {**o.result.metrics, "overhead_ms": o.result.overhead_ms}) for o in outcomes if o.result is not None]
    return charts.timing_breakdown(rows) if rows else None


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    """A JSON-friendly digest of the click (what the API endpoint returns for scripts and tests)."""
    out: dict[str, Any] = {}
    for o in outcomes:
        if o.result is None:
            out[o.name] = {"error": o.error, "status": o.status}
        else:
            out[o.name] = {"kind": o.result.kind, "predictions": o.result.body["predictions"], "metrics": o.result.metrics,
                           "model": o.result.model, "round_trip_ms": o.result.round_trip_ms,
                           "request_bytes": o.result.request_bytes, "response_bytes": o.result.response_bytes,
                           "request_id": o.result.body.get("request_id"), "trace_id": o.result.body.get("trace_id"),
                           "function_name": o.result.body.get("function_name")}
    return out


def last_serverless_answer(summary: dict | None) -> dict:
    """The serverless side's answer to the last compare click (its :func:`summary`), or a visible error saying why not."""
    if not summary:
        raise gr.Error("classify an image in the Compare view first")
    serverless = next((v for v in summary.values() if v.get("kind") == "serverless" and "metrics" in v), None)
    if serverless is None:
        raise gr.Error("the last compare click has no serverless answer")
    return serverless


AWS_IS_THE_OPERATORS = "calling AWS with the host's credentials is the operator's: a viewer compares with the server only"


def compare(ctx: AppContext, path: str | None, access: Access | None = None) -> tuple:
    """Classify the image on both sides: each side's top-5 and facts, their agreement, the timing chart, the digest.

    A viewer's click never reaches AWS (the serverless side says so instead), and its error texts are redacted."""
    viewer = access is not None and not access.operator
    aws_refused = viewer and ctx.targets.serverless_is_aws
    try:
        data = read(path)
        check_size(data)
        backends = [ctx.server()] + ([] if aws_refused else [ctx.serverless()])
    except ClassifierError as exc:
        raise gr.Error(exc.message) from None
    outcomes = classify_both(backends, data)
    if aws_refused:
        outcomes.append(Outcome("serverless (AWS)", error=AWS_IS_THE_OPERATORS, status=403))
    if viewer:
        for outcome in outcomes:
            outcome.error = redact(outcome.error) if outcome.error else outcome.error
    if all(o.result is None for o in outcomes):
        gr.Warning("neither backend answered: " + "; ".join(f"{o.name}: {o.error}" for o in outcomes))
    random = ctx.banner() != ""
    labels = [gr.Label(label_value(o), label=f"{o.name} — top-5" + (" (RANDOM WEIGHTS: meaningless)" if random else ""))
              for o in outcomes]
    return (labels[0], facts_markdown(outcomes[0]), labels[1], facts_markdown(outcomes[1]),
            agreement_markdown(outcomes), breakdown_figure(outcomes), summary(outcomes))


def downscale(path: str | None, folder: Path) -> str:
    """A JPEG copy of the image that fits one Lambda invoke, written to ``folder`` (a temporary one)."""
    if not path:
        raise gr.Error("choose an image first")
    try:
        smaller = downscale_to_fit(Path(path).read_bytes())
    except ClassifierError as exc:
        raise gr.Error(exc.message) from None
    out = folder / (Path(path).stem[:64] + "-downscaled.jpg")
    out.write_bytes(smaller)
    gr.Info(f"downscaled to {len(smaller) / 1e3:,.0f} kB")
    return str(out)


def cold_start(ctx: AppContext) -> str:
    """Restart the serverless environment so that the next request is a cold start."""
    try:
        message = ctx.restart_serverless()
    except ClassifierError as exc:
        raise gr.Error(exc.message) from None
    gr.Info(message)
    return message


# ---- the tab --------------------------------------------------------------------------------------


def build_tab(ctx: AppContext, access: Access) -> CompareTab:
    """The Compare tab, under the app's ``gr.Blocks``; events ``describe``, ``compare``, ``downscale``, ``cold_start``
    (every role's: they read, or restart the local emulator)."""
    # The events' parameter names and docstrings are their API's (gradio_client's keywords and descriptions).

    def on_describe(path: str | None, request: gr.Request) -> tuple:
        """Preview (decoded upright, HEIC too), a size line, and whether to offer the downscale."""
        with access.work(request):
            preview, note, offer = describe_upload(path)
        return preview, note, gr.Button(visible=offer)

    def on_compare(path: str | None, request: gr.Request) -> tuple:
        with access.work(request):
            shown = compare(ctx, path, access)
        return (*shown, shown[-1])  # the digest also goes to this session's State, for the Cost and AWS tabs

    def on_downscale(path: str | None, request: gr.Request) -> str:
        with access.work(request):
            return downscale(path, ctx.scratch.folder("downscaled-"))

    def on_cold_start(request: gr.Request) -> str:
        with access.work(request):
            return cold_start(ctx)

    with gr.Tab("Compare"):
        banner = random_banner(ctx)
        with gr.Row():
            with gr.Column(scale=1):
                image_file = gr.File(label=f"Image ({FORMAT_NAMES})", type="filepath",
                                     file_types=["image", *sorted(IMAGE_SUFFIXES)], elem_id="image-file")
                preview = gr.Image(label="What the model sees (upright)", type="pil", interactive=False, height=240)
                size_note = gr.Markdown()
                gr.Examples(examples=[[str(p.path)] for p in EXAMPLES], inputs=[image_file],
                            example_labels=[p.name for p in EXAMPLES], label="Example photos (shipped in installed packages)")
                with gr.Row():
                    classify_button = gr.Button("Classify on both", variant="primary", elem_id="classify")
                    downscale_button = gr.Button("Downscale to fit", visible=False)
                    cold_button = gr.Button("Force a cold start (serverless)")
                cold_note = gr.Markdown()
            with gr.Column(scale=2):
                with gr.Row():
                    with gr.Column():
                        server_label = gr.Label(num_top_classes=5, label=f"Server: {ctx.targets.server_label}",
                                                elem_id="server-top5")
                        server_facts = gr.Markdown()
                    with gr.Column():
                        serverless_label = gr.Label(num_top_classes=5, label=f"Serverless: {ctx.targets.serverless_label}",
                                                    elem_id="serverless-top5")
                        serverless_facts = gr.Markdown()
                agreement = gr.Markdown()
                breakdown = gr.Plot(label="Where the time went", elem_id="breakdown")
                with gr.Accordion("Raw results", open=False):
                    raw = gr.JSON()
        last = gr.State()

    image_file.change(on_describe, inputs=image_file, outputs=[preview, size_note, downscale_button], api_name="describe")
    # The State is an output of the event itself (not of a private `.then`), so that an API client's
    # session, not only a browser's, has it for /cost_from_compare and /aws_trace.
    classify_button.click(on_compare, inputs=image_file,
                          outputs=[server_label, server_facts, serverless_label, serverless_facts, agreement, breakdown, raw, last],
                          api_name="compare")
    downscale_button.click(on_downscale, inputs=image_file, outputs=image_file, api_name="downscale")
    cold_button.click(on_cold_start, outputs=cold_note, api_name="cold_start", concurrency_limit=1)
    return CompareTab(banner=banner, last=last)
