"""The canary: one real photo and PyTorch's answer for it, checked by every runner at model load.

Parity is proven when a model is exported, on the exporting machine's CPU. A runner may land on
another CPU (Lambda's x86 hosts vary between cold starts; INT8 kernels without VNNI saturate), a
different runtime, or a model file changed after its sha256 was checked (the Lambda image checks
only the size at a cold start). So the export writes, beside each model, ``<stem>.canary.json``:
a small real photo from the evaluation set (never a calibration photo) and the logits PyTorch
computed for it. Every runner classifies it once at load, on its own CPU, and compares with the
tolerances below for what the engine computes in. The run doubles as the engine's warm-up, so a
cold start pays only for decoding one small PNG.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from lambda_onnx.errors import ModelLoadError

CANARY_FORMAT = 1

# fp32 against PyTorch fp32 on the same input: only the order of summation differs between CPUs
# and runtimes (the export measured up to 5e-5 here; OpenVINO f32 9e-6). A changed weight or a
# broken kernel moves logits by far more.
FP32_MAX_ABS_LOGIT = 5e-3
# INT8 against PyTorch fp32, as the RMS of the logit error over the spread (std) of the reference
# logits: scale-free, so one limit serves every model. Exact INT8 kernels (VNNI, ONNX Runtime's
# U8U8) compute the same integers on every CPU, so a runner should see what the export saw; the
# limit is twice that, within [INT8_MIN_REL_RMS, INT8_MAX_REL_RMS]. Measured on EfficientNet-Lite0,
# 8 evaluation photos, AMD EPYC without VNNI: 0.06-0.17 with the U8U8 kernel, 0.30-0.61 with the
# saturating U8S8 kernel; a random-weight ResNet-50: 0.02-0.03 with either.
INT8_MIN_REL_RMS = 0.05
INT8_MAX_REL_RMS = 0.25
INT8_GROWTH = 2.0
# bf16/f16 (OpenVINO's opt-in hints) against fp32: about a tenth of the INT8 error.
HALF_MAX_REL_RMS = 0.1
# Top-1 must stay the reference's unless the reference's first two classes are closer than this
# (in logits): the export picks a photo with a clear winner, so this rarely applies.
TOP1_TIE_LOGITS = 0.15

STATUSES = ("passed", "failed", "absent")
# "1" lets a runner serve a model whose canary failed on its CPU; every answer then carries a warning.
ALLOW_CANARY_FAILURE_ENV = "ALLOW_CANARY_FAILURE"


def canary_path(model_path: str | Path) -> Path:
    """``models/resnet50.onnx`` -> ``models/resnet50.canary.json`` (``.int8.onnx`` -> ``.int8.canary.json``)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".canary.json")


@dataclass(frozen=True)
class Canary:
    """One photo, PyTorch's logits for it, and what the export measured with its own kernel."""

    model_sha256: str  # the model this canary belongs to
    precision: str  # the model's: "fp32" or "int8"
    photo: str  # evaluation photo name, e.g. "coffee"
    source: str  # where the photo comes from (package and path)
    image: bytes  # PNG, the photo at the model's resize size (a few tens of kB)
    reference_logits: np.ndarray  # (num_classes,) float32, PyTorch fp32 on this very image
    reference_top5: list[dict[str, Any]]
    computed_by: str  # e.g. "pytorch 2.14.1 fp32"
    export: dict[str, Any] = field(default_factory=dict)  # the exporting CPU, kernel and error seen there

    def to_dict(self) -> dict[str, Any]:
        return {"format": CANARY_FORMAT, "model_sha256": self.model_sha256, "precision": self.precision,
                "photo": self.photo, "source": self.source, "image_png_base64": base64.b64encode(self.image).decode("ascii"),
                "reference": {"computed_by": self.computed_by, "top5": self.reference_top5,
                              "logits": [float(f"{v:.7g}") for v in self.reference_logits.tolist()]},
                "export": self.export}

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Canary:
        """Read a canary file; a damaged one is a :class:`ModelLoadError` (it was exported with the model)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            reference = data["reference"]
            return cls(model_sha256=data["model_sha256"], precision=data["precision"], photo=data["photo"],
                       source=data.get("source", ""), image=base64.b64decode(data["image_png_base64"], validate=True),
                       reference_logits=np.asarray(reference["logits"], dtype=np.float32),
                       reference_top5=list(reference.get("top5", [])), computed_by=reference.get("computed_by", ""),
                       export=dict(data.get("export", {})))
        except (OSError, ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise ModelLoadError(f"canary {path} is not valid ({type(exc).__name__}: {exc}); export the model again") from None


def rel_rms(reference: np.ndarray, got: np.ndarray) -> float:
    """RMS of the logit error over the standard deviation of the reference logits."""
    reference = reference.astype(np.float64)
    spread = float(reference.std()) or 1.0
    return float(np.sqrt(np.mean((got.astype(np.float64) - reference) ** 2)) / spread)


def int8_limit(canary: Canary) -> float:
    """The INT8 relative-RMS limit for this canary: twice what the export measured, clamped."""
    seen = canary.export.get("rel_rms")
    if not isinstance(seen, (int, float)):
        return INT8_MAX_REL_RMS
    return min(INT8_MAX_REL_RMS, max(INT8_MIN_REL_RMS, INT8_GROWTH * float(seen)))


class CanaryBody(TypedDict, total=False):
    """``model.canary`` in every answer (:meth:`CanaryResult.summary`)."""

    status: str  # passed, failed, absent
    photo: str
    rel_rms: float
    max_abs_logit: float
    reason: str
    kernel_fallback: str
    restored: str  # set when a SnapStart restore re-checked (or kept) the snapshot's model: lambda_onnx.snapshot


@dataclass(frozen=True)
class CanaryResult:
    """What the canary found on this CPU (``status`` ``absent``: no canary file beside the model)."""

    status: str
    photo: str = ""
    computes_in: str = ""
    max_abs_logit: float | None = None
    rel_rms: float | None = None
    limit: str = ""  # the tolerance applied, as text
    top1_same: bool | None = None
    reason: str = ""  # why it failed (or why it is absent)
    ms: float = 0.0  # decode + preprocess + inference of the canary
    kernel_fallback: str = ""  # "u8s8 saturating (no VNNI) -> u8u8 precise" when the load switched kernels
    restored: str = ""  # what a SnapStart restore did with the snapshot's model (lambda_onnx.snapshot)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def summary(self) -> CanaryBody:
        """The small dict every answer's ``model.canary`` carries."""
        out: CanaryBody = {"status": self.status, "photo": self.photo}
        if self.rel_rms is not None:
            out["rel_rms"] = round(self.rel_rms, 4)
        if self.max_abs_logit is not None:
            out["max_abs_logit"] = float(f"{self.max_abs_logit:.3g}")
        if self.reason:
            out["reason"] = self.reason
        if self.kernel_fallback:
            out["kernel_fallback"] = self.kernel_fallback
        if self.restored:
            out["restored"] = self.restored
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(canary: Canary, logits: np.ndarray, computes_in: str, categories: list[str] | None = None) -> CanaryResult:
    """Compare one row of logits computed here with the canary's PyTorch reference (pure).

    ``computes_in``: ``"fp32"``, ``"int8"``, ``"bf16"`` or ``"f16"`` — what the engine really
    computes in, which decides the tolerance.
    """
    got = np.asarray(logits, dtype=np.float32).reshape(-1)
    reference = canary.reference_logits
    if got.shape != reference.shape:
        return CanaryResult("failed", photo=canary.photo, computes_in=computes_in,
                            reason=f"expected {reference.shape[0]} logits but the model gave {got.shape[0]}")
    if not np.all(np.isfinite(got)):
        return CanaryResult("failed", photo=canary.photo, computes_in=computes_in,
                            reason="the model's logits are not all finite")
    max_abs = float(np.max(np.abs(got.astype(np.float64) - reference)))
    relative = rel_rms(reference, got)
    order = np.argsort(-reference)
    tie = float(reference[order[0]] - reference[order[1]]) <= TOP1_TIE_LOGITS if reference.size > 1 else False
    top1_same = int(np.argmax(got)) == int(order[0])
    failures = []
    if computes_in == "fp32":
        limit = f"max|Δlogit| ≤ {FP32_MAX_ABS_LOGIT:g}"
        if max_abs > FP32_MAX_ABS_LOGIT:
            failures.append(f"max|Δlogit| {max_abs:.3g} exceeds {FP32_MAX_ABS_LOGIT:g} (fp32)")
    else:
        bound = int8_limit(canary) if computes_in == "int8" else HALF_MAX_REL_RMS
        limit = f"rel RMS ≤ {bound:.3g}"
        if relative > bound:
            failures.append(f"relative logit error {relative:.3f} exceeds {bound:.3g} ({computes_in})")
    if not top1_same and not tie:
        def name(i: int) -> str:
            return categories[i] if categories and i < len(categories) else f"class {i}"

        failures.append(f"top-1 is {name(int(np.argmax(got)))}, PyTorch says {name(int(order[0]))}")
    return CanaryResult("failed" if failures else "passed", photo=canary.photo, computes_in=computes_in,
                        max_abs_logit=max_abs, rel_rms=relative, limit=limit, top1_same=top1_same,
                        reason="; ".join(failures))
