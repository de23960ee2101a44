"""Top-1 agreement on real photos (through :func:`local.measure.evaluate.evaluate`), and which
variant may be chosen as the fastest: only one whose parity holds on this CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lambda_onnx import photos as sample_photos
from lambda_onnx.sidecar import Sidecar, sidecar_path
from local.measure.bench.config import AgreementRow, BenchReport, Step, noop
from local.measure.evaluate import evaluate, photo_images
from local.measure.variants import variants_for


def measure_agreement(fp32: Path | None, int8: Path | None, threads: int, on_step: Step = noop) -> dict[str, Any]:
    """Top-1 of every runtime × precision against ONNX Runtime fp32 on the EVALUATION photos."""
    if fp32 is None or int8 is None:
        return {"measured": False, "reason": "no real-weights model (python -m export --arch efficientnet_lite0 --int8)"}
    meta = Sidecar.load(sidecar_path(fp32))
    if meta.random_weights:
        return {"measured": False, "reason": f"{fp32} has random weights: agreement would prove nothing"}
    on_step(f"top-1 agreement on real photos with {meta.label}")
    photos = sample_photos.available()
    result = evaluate(photo_images(photos, meta.categories), variants_for([fp32, int8], forced_kernels=True, by="runtime"),
                      threads=threads, fast_preprocess=True)
    rows: list[AgreementRow] = [
        {"name": r.name, "key": r.key, "same_as": r.same_as, "int8_kernel": r.int8_kernel, "canary": r.canary,
         "top1_same_as_fp32": r.agrees_with_first, "photos": r.images, "correct": r.top1_correct,
         "differs_on": r.differs_from_first} for r in result.results]
    return {"measured": True, "model": meta.label, "photos": [p.name for p in photos], "variants": rows}


def judge_parity(report: BenchReport) -> None:
    """Mark which variants may be chosen as the fastest here: only those whose parity holds on
    this CPU (their canary passes on the benchmarked model, and INT8 keeps fp32's top-1 on every real
    photo of the agreement model), computing in fp32 or int8 (bf16 is opt-in). Say why for the others."""
    rows = report.accuracy.get("variants", [])
    agreement = {key: row for row in rows for key in (row.get("key"), *row.get("same_as", []))}
    for result in report.inference:
        if result.runtime == "pytorch":
            result.eligible, result.why_not = False, "the reference, not a serving runtime"
            continue
        row = agreement.get(result.key)
        if result.computes_in not in ("fp32", "int8"):
            result.eligible, result.why_not = False, f"computes in {result.computes_in}: opt-in, changes the numbers by design"
        elif result.canary == "failed":
            result.eligible, result.why_not = False, f"its canary fails on this CPU ({result.int8_kernel or result.computes_in})"
        elif row is not None and row["canary"] == "failed":
            result.eligible, result.why_not = False, f"its canary fails on this CPU with {report.accuracy['model']}"
        elif row is None and result.precision == "int8" and report.accuracy.get("measured"):
            result.eligible, result.why_not = False, f"its top-1 on real photos was not measured ({report.accuracy['model']})"
        elif row is not None and result.precision == "int8" and row["top1_same_as_fp32"] < row["photos"]:
            result.eligible, result.why_not = False, (f"top-1 differs from fp32 on {row['photos'] - row['top1_same_as_fp32']} of "
                                                      f"{row['photos']} real photos here ({', '.join(row['differs_on'])})")


def choose_fastest(report: BenchReport) -> None:
    """The fastest eligible variant (for ``local serve --runtime auto``), and every faster one skipped, with why."""
    judge_parity(report)
    candidates = [r for r in report.inference if r.runtime != "pytorch"]
    eligible = [r for r in candidates if r.eligible]
    if not eligible:
        report.fastest = "none: no runtime x precision passed its parity checks on this CPU"
        return
    best = min(eligible, key=lambda r: r.median_ms)
    report.fastest = f"{best.name}: {best.median_ms:.1f} ms batch-1 median on this machine"
    report.fastest_choice = {"runtime": best.runtime, "precision": best.precision, "median_ms": round(best.median_ms, 2),
                             "int8_kernel": best.int8_kernel}
    report.skipped = [{"name": r.name, "median_ms": round(r.median_ms, 2), "why": r.why_not}
                      for r in sorted(candidates, key=lambda r: r.median_ms) if r.median_ms < best.median_ms and not r.eligible]
    if report.skipped:
        report.fastest += "; faster but skipped: " + "; ".join(f"{x['name']} ({x['median_ms']:.1f} ms): {x['why']}"
                                                                for x in report.skipped)


