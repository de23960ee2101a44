"""Compare view: one image, both backends, side by side."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambda_onnx.errors import ClassifierError
from lambda_onnx.limits import LAMBDA_PAYLOAD_BYTES, MAX_IMAGE_BYTES
from local import charts
from local.monitor import cpu_label
from local.backends import Backend, BackendResult


@dataclass
class Outcome:
    """One backend's answer to the compare click: a result or an error message."""

    name: str
    result: BackendResult | None = None
    error: str | None = None
    status: int | None = None


class ImageTooLargeError(ClassifierError):
    status = 413
    code = "payload_too_large"


def check_size(data: bytes) -> None:
    """Refuse, before sending, what cannot pass Lambda's synchronous invoke limit."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(
            f"the image is {len(data) / 1e6:.2f} MB; Lambda's {LAMBDA_PAYLOAD_BYTES / 2**20:.0f} MiB invoke payload limit "
            f"applies on every path (API Gateway included) and base64 adds a third, so at most "
            f"{MAX_IMAGE_BYTES / 1e6:.2f} MB of image fit. Use “Downscale to fit” to send a smaller copy."
        )


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
    badge = (f"🧊 **cold start** — init {m.get('init_ms', 0):.0f} ms (module import to model ready)"
             if m.get("cold_start") else f"🔥 **warm** — this environment was initialised in {m.get('init_ms', 0):.0f} ms")
    memory = m.get("memory_mb")
    peak = m.get("peak_rss_mb")
    used = (f"peak {peak:.0f} MB of {memory} MB configured ({m.get('memory_utilisation_pct')}%)" if memory
            else f"peak RSS {peak:.0f} MB (no memory limit configured)") if peak is not None else "n/a"
    if r.kind == "server" and r.request_bytes and "in-process" in outcome.name:
        used += " — the app's own process, GUI included"
    model = r.model
    return "\n".join([
        badge,
        "",
        f"- round trip **{r.round_trip_ms:.1f} ms** = handler {r.server_ms:.1f} ms + network/invoke {r.overhead_ms:.1f} ms",
        f"- inference {m.get('inference_ms', 0):.1f} ms, decode {m.get('decode_ms', 0):.1f} ms, "
        f"preprocess {m.get('preprocess_ms', 0):.1f} ms",
        f"- memory: {used}",
        f"- payload: request {_kb(r.request_bytes)}, response {_kb(r.response_bytes)}",
        f"- model: {model.get('arch')} {model.get('precision')} on {model.get('runtime')} "
        f"({model.get('threads')} threads), sha256 `{str(model.get('sha256', ''))[:12]}…`",
        f"- host: {cpu_label(r.body.get('host') or {}) or 'not reported'}; {_canary_text(model)}",
        *[f"- ⚠️ **{warning}**" for warning in r.body.get("warnings", [])],
    ])


def _canary_text(model: dict) -> str:
    canary = model.get("canary") or {}
    kernel = f"INT8 kernel {model['int8_kernel']}, " if model.get("int8_kernel") else ""
    status = canary.get("status", "not reported")
    mark = {"passed": "✅", "failed": "❌"}.get(status, "")
    detail = f" (relative error {canary['rel_rms']:.3f})" if canary.get("rel_rms") is not None else ""
    fallback = f"; {canary['kernel_fallback']}" if canary.get("kernel_fallback") else ""
    return f"{kernel}canary {canary.get('photo', '')} {mark}{status}{detail}{fallback}"


def agreement_markdown(outcomes: list[Outcome]) -> str:
    """Do the two answers agree: top-1, top-5 set, probabilities, and the artifact itself."""
    done = [o for o in outcomes if o.result is not None]
    if len(done) < 2:
        return "Agreement: needs an answer from both sides."
    a, b = (o.result for o in done[:2])
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


def read(path: str | Path | None) -> bytes:
    if not path:
        raise ClassifierError("choose an image first (upload one or pick an example)")
    return Path(path).read_bytes()
