"""Parity: the exported model must compute what PyTorch computes, on the same inputs.

Checks names, shapes, then values; reports one line per check against named tolerances;
collects every failure and raises one :class:`ParityError`. Unlike optimum, which downgrades a
tolerance failure to a warning, parity is our product: a failure fails the export.

With random weights a ResNet-50 answers nearly the same class for every input, so agreement of
top-k proves little there: the numeric checks (logits, probabilities) are what count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from lambda_onnx.classifier import Classifier
from lambda_onnx.errors import ParityError
from lambda_onnx.preprocess import prepare
from lambda_onnx.sidecar import Preprocessing
from local.photos import Photo

# fp32 ONNX Runtime against fp32 PyTorch on identical inputs: only summation order differs.
LOGIT_ATOL = 1e-3
PROB_ATOL = 1e-4
# Our Pillow path against torchvision's transforms on the same photo: the same resampling, so
# only float rounding in the normalisation may differ.
PREPROCESS_ATOL = 1e-5
# The export traces with a batch of 2; the check runs another size to prove the dynamic axis.
EXPORT_BATCH = 2
CHECK_BATCH = 5
TOP_K = 5


@dataclass
class Check:
    """One line of the report."""

    name: str
    samples: int
    passed: bool
    max_abs_logit: float | None = None
    max_abs_prob: float | None = None
    top1_agree: int | None = None
    top5_agree: int | None = None
    max_abs_input: float | None = None
    top1: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = []
        if self.max_abs_input is not None:
            parts.append(f"max|Δx| {self.max_abs_input:.2e}")
        if self.max_abs_logit is not None:
            parts.append(f"max|Δlogit| {self.max_abs_logit:.2e}")
        if self.max_abs_prob is not None:
            parts.append(f"max|Δp| {self.max_abs_prob:.2e}")
        if self.top1_agree is not None:
            parts.append(f"top-1 {self.top1_agree}/{self.samples}")
        if self.top5_agree is not None:
            parts.append(f"top-5 {self.top5_agree}/{self.samples}")
        if self.top1:
            parts.append("→ " + ", ".join(self.top1))
        return f"{'✓' if self.passed else '✗'} {self.name}: " + ", ".join(parts)


@dataclass
class ParityReport:
    reference: str
    candidate: str
    tolerances: dict[str, float]
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[str]:
        return [f"{check.name}: {failure}" for check in self.checks for failure in check.failures]

    def lines(self) -> list[str]:
        return [check.line() for check in self.checks]

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise ParityError(self.failures)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _topk_agrees(ref: np.ndarray, got: np.ndarray, k: int, tie: float) -> bool:
    """Same top-k set, except where the classes that differ sit within ``tie`` of the boundary."""
    ref_top = set(np.argsort(-ref)[:k].tolist())
    got_top = set(np.argsort(-got)[:k].tolist())
    if ref_top == got_top:
        return True
    boundary = np.sort(ref)[::-1][k - 1]
    return all(abs(ref[c] - boundary) <= tie for c in ref_top ^ got_top)


def compare_logits(name: str, ref: np.ndarray, got: np.ndarray, *, logit_atol: float = LOGIT_ATOL,
                   prob_atol: float = PROB_ATOL, require_topk: bool = True,
                   categories: Sequence[str] | None = None) -> Check:
    """Compare two (N, C) logit arrays: shapes, then values, then top-1/top-5 agreement."""
    if ref.shape != got.shape:
        return Check(name, len(ref), False, failures=[f"expected shape {ref.shape} but received {got.shape}"])
    failures = []
    if not np.all(np.isfinite(got)):
        failures.append("non-finite values in the output")
    logit_diff = float(np.max(np.abs(ref.astype(np.float64) - got)))
    prob_diff = float(np.max(np.abs(softmax(ref) - softmax(got))))
    if logit_atol is not None and logit_diff > logit_atol:
        failures.append(f"max abs logit difference {logit_diff:.3e} exceeds {logit_atol:.0e}")
    if prob_atol is not None and prob_diff > prob_atol:
        failures.append(f"max abs probability difference {prob_diff:.3e} exceeds {prob_atol:.0e}")
    tie = 2 * (logit_atol if logit_atol is not None else 0.0)
    top1 = sum(_topk_agrees(r, g, 1, tie) for r, g in zip(ref, got))
    top5 = sum(_topk_agrees(r, g, min(TOP_K, ref.shape[1]), tie) for r, g in zip(ref, got))
    if require_topk and top1 < len(ref):
        failures.append(f"top-1 agrees on {top1} of {len(ref)}")
    if require_topk and top5 < len(ref):
        failures.append(f"top-5 agrees on {top5} of {len(ref)}")
    labels = [categories[int(np.argmax(g))] for g in got] if categories is not None else []
    return Check(name, len(ref), not failures, logit_diff, prob_diff, top1, top5, top1=labels, failures=failures)


def check_preprocessing(photos: Sequence[Photo], params: Preprocessing, reference: Callable) -> Check:
    """Our Pillow+NumPy path against a torchvision transform on real photos."""
    worst = 0.0
    failures = []
    for photo in photos:
        ours, _ = prepare(photo.read(), params, fast=False)
        with Image.open(photo.path) as image:
            ref = reference(image.convert("RGB")).numpy()[None]
        diff = float(np.max(np.abs(ours.tensor - ref))) if ours.tensor.shape == ref.shape else float("inf")
        worst = max(worst, diff)
        if diff > PREPROCESS_ATOL:
            failures.append(f"{photo.name}: max abs input difference {diff:.3e} exceeds {PREPROCESS_ATOL:.0e}")
    return Check("preprocessing vs torchvision transforms", len(photos), not failures,
                 max_abs_input=worst, failures=failures)


def check_onnx(module: torch.nn.Module, classifier: Classifier, photos: Sequence[Photo], reference_transforms: Callable,
               *, seed: int = 0, on_check: Callable[[Check], None] | None = None) -> ParityReport:
    """PyTorch ``module`` against the exported model served by ``classifier``."""
    meta = classifier.sidecar
    report = ParityReport(
        reference=f"pytorch {torch.__version__}",
        candidate=f"{classifier.engine.runtime} {meta.precision}",
        tolerances={"logit_atol": LOGIT_ATOL, "prob_atol": PROB_ATOL, "preprocess_atol": PREPROCESS_ATOL},
    )

    def add(check: Check) -> None:
        report.checks.append(check)
        if on_check:
            on_check(check)

    size = meta.preprocessing.crop_size
    add(check_preprocessing(photos, meta.preprocessing, reference_transforms))
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randn(CHECK_BATCH, 3, size, size, generator=generator)
    with torch.inference_mode():
        ref = module(batch).numpy()
    add(compare_logits(f"random batch of {CHECK_BATCH}", ref, classifier.infer(batch.numpy())))
    for photo in photos:
        prepared, _ = prepare(photo.read(), meta.preprocessing, fast=False)
        with torch.inference_mode():
            ref = module(torch.from_numpy(prepared.tensor)).numpy()
        add(compare_logits(f"photo {photo.name}", ref, classifier.infer(prepared.tensor), categories=meta.categories))
    return report
