"""Checking an existing export again: rebuild its PyTorch source, prove parity (INT8 against its fp32
source too), and run its canary on this CPU. ``python -m export --check`` calls :func:`check_model`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from export import parity, quantize
from export.pipeline import Step, no_step, rebuild
from lambda_onnx import photos as sample_photos
from lambda_onnx.canary import canary_path
from lambda_onnx.classifier import Classifier
from lambda_onnx.cpu import cpu_info
from lambda_onnx.sidecar import file_sha256, load_verified


def check_model(model_path: Path, *, on_step: Step = no_step,
                on_check: Callable[[parity.Check], None] | None = None) -> parity.ParityReport:
    """Re-run the parity check of an existing export against a freshly built PyTorch model.

    fp32: the export's report (PyTorch, OpenVINO, fast path). INT8: the quantisation's report,
    against its fp32 source (found next to it, or where the sidecar says it was) and PyTorch.
    The file's sha256 is checked too but does not stop the check, so a tampered file that
    still matches PyTorch and a consistent file that does not are both reported.
    """
    model_path = Path(model_path)
    meta = load_verified(model_path, verify_sha256=False)
    digest = file_sha256(model_path)
    source = None
    if meta.precision == "int8":
        source = quantize.source_of(model_path, meta)
        on_step(f"rebuilding {meta.arch} ({meta.label}) in PyTorch; fp32 source {source}")
        built = rebuild(load_verified(source))
    else:
        on_step(f"rebuilding {meta.arch} ({meta.label}) in PyTorch")
        built = rebuild(meta)
    on_step("checking parity against PyTorch" + (" and the fp32 source" if source else ""))
    sha = parity.Check("sha256 matches the sidecar", 1, digest == meta.sha256,
                       failures=[] if digest == meta.sha256 else [f"file has {digest[:12]}…, sidecar says {meta.sha256[:12]}…"])
    if on_check:
        on_check(sha)
    if source is not None:
        report = quantize.check(model_path, source, built.module, on_check=on_check)
    else:
        classifier = Classifier(model_path, threads=os.cpu_count() or 1, fast_preprocess=False,
                                verify_sha256=False, warmup=False, canary=False)
        report = parity.check_onnx(built.module, classifier, sample_photos.available(), built.reference_transforms,
                                   on_check=on_check, random_weights=meta.random_weights)
    report.checks.insert(0, sha)
    canary = canary_on_this_cpu(model_path)
    if on_check:
        on_check(canary)
    report.checks.append(canary)
    return report


def canary_on_this_cpu(model_path: Path) -> parity.Check:
    """The model's canary, run as every runner runs it at load (with the kernel it would choose)."""
    name = f"canary on this CPU ({cpu_info().describe()})"
    if not canary_path(model_path).is_file():
        return parity.Check(name, 0, False, failures=[f"no {canary_path(model_path).name} beside the model: export it again"])
    classifier = Classifier(model_path, verify_sha256=False, allow_canary_failure=True)
    result = classifier.canary
    kernel = classifier.engine.int8_kernel or classifier.engine.computes_in
    note = f"{result.photo}, {kernel}, relative logit error {result.rel_rms:.4f} ({result.limit})"
    if result.kernel_fallback:
        note += f"; {result.kernel_fallback}"
    return parity.Check(name, 1, result.passed, max_abs_logit=result.max_abs_logit, note=note,
                        failures=[] if result.passed else [result.reason])
