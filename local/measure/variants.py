"""One runtime x precision (x OpenVINO hint, x forced INT8 kernel): what the bench and ``evaluate`` measure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lambda_onnx.classifier import Classifier
from lambda_onnx.cpu import cpu_info
from lambda_onnx.sidecar import Sidecar, sidecar_path


@dataclass(frozen=True)
class Variant:
    """A model file on a runtime, with OpenVINO's precision hint or a forced ONNX Runtime INT8 kernel."""

    model: Path
    runtime: str = "onnxruntime"
    precision_hint: str | None = None  # OpenVINO only: "f32" (default), "bf16", "auto", ...
    int8_kernel: str | None = None  # ONNX Runtime only: a forced kernel ("fast"), measured as asked, never served

    @property
    def precision(self) -> str:
        return Sidecar.load(sidecar_path(self.model)).precision

    @property
    def key(self) -> str:
        """``runtime/precision/hint/kernel``: the same variant's rows match across measurements."""
        return f"{self.runtime}/{self.precision}/{self.precision_hint or '-'}/{self.int8_kernel or 'auto'}"

    def load(self, threads: int | None = None, *, fast_preprocess: bool = True) -> Classifier:
        """The classifier, its canary run on this CPU and recorded but never refused, and a forced kernel
        kept as forced (``measuring``): a tool measures what fails too, and says so."""
        return Classifier(self.model, threads=threads, runtime=self.runtime, precision_hint=self.precision_hint,
                          int8_kernel=self.int8_kernel or "auto", fast_preprocess=fast_preprocess, measuring=True)

    def name(self, classifier: Classifier) -> str:
        """``onnxruntime int8``, ``onnxruntime int8 (u8s8 saturating (no VNNI), forced)``,
        ``openvino fp32 (hint f32 → f32)``, ``openvino fp32 (hint auto → bf16)``, ..."""
        precision, engine = classifier.sidecar.precision, classifier.engine
        if self.runtime == "openvino":
            hint = getattr(engine, "hint", self.precision_hint or "f32")
            return f"openvino {precision} (hint {hint} → {getattr(engine, 'precision', 'f32')})"
        return f"onnxruntime {precision}" + (f" ({engine.int8_kernel}, forced)" if self.int8_kernel else "")


def variants_for(models: Iterable[Path], runtimes: Sequence[str] = ("onnxruntime", "openvino"),
                 openvino_hints: Sequence[str] = ("f32", "auto"), *, forced_kernels: bool = False,
                 by: str = "model") -> list[Variant]:
    """Each model on each runtime (OpenVINO once per precision hint), listed model by model (``by="model"``,
    as ``evaluate`` shows them) or runtime by runtime (``by="runtime"``, as the bench does). The first
    is the reference the others' agreement is counted against. With ``forced_kernels``, where ONNX
    Runtime's default INT8 kernel saturates (x86-64 without VNNI) a quantised model is measured with
    it forced too, to show what the exact kernel costs (it is never chosen)."""
    if by not in ("model", "runtime"):
        raise ValueError(f"by must be 'model' or 'runtime', got {by!r}")
    models = [Path(model) for model in models]
    pairs = [(m, r) for m in models for r in runtimes] if by == "model" else [(m, r) for r in runtimes for m in models]
    out = []
    for model, runtime in pairs:
        hints = openvino_hints if runtime == "openvino" else (None,)
        out += [Variant(model, runtime, hint) for hint in hints]
        quantised = Sidecar.load(sidecar_path(model)).precision == "int8"
        if forced_kernels and runtime == "onnxruntime" and quantised and cpu_info().int8_saturates:
            out.append(Variant(model, runtime, int8_kernel="fast"))
    return out
