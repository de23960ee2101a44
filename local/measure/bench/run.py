"""The whole benchmark in one run, and the issue's targets met or not."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from lambda_onnx.resources import default_threads
from lambda_onnx.sidecar import Sidecar, sidecar_path
from local.measure.bench.agreement import choose_fastest, measure_agreement
from local.measure.bench.coldstart import measure_cold_starts
from local.measure.bench.config import (
    BATCH,
    TARGET_COLD_START_VS_TORCH,
    TARGET_INT8_VS_FLOOR,
    TARGET_INT8_VS_TORCH,
    TARGET_ORT_FP32_VS_TORCH,
    TARGET_PAYLOAD_INT8_MB,
    TARGET_PREPROCESS_VS_INT8,
    TARGET_RSS_FP32_MB,
    TARGET_RSS_INT8_MB,
    BenchConfig,
    BenchReport,
    Latency,
    Step,
    Target,
    noop,
)
from local.measure.bench.emulator import measure_emulator
from local.measure.bench.floor import compute_floor
from local.measure.bench.inference import measure_inference, measure_threads
from local.measure.bench.models import ensure_models
from local.measure.bench.payload import measure_payload
from local.measure.bench.preprocess import measure_preprocess
from local.measure.core.machine import machine


def _target(name: str, value: float | None, limit: float, unit: str = "×") -> Target:
    return {"target": name, "value": value, "limit": limit, "unit": unit,
            "met": None if value is None else bool(value <= limit)}


def evaluate_targets(report: BenchReport) -> list[Target]:
    """The issue's targets, met or not, from this run's numbers."""
    by = {r.name: r for r in report.inference}
    torch_ms = by["pytorch eager fp32"].median_ms if "pytorch eager fp32" in by else None
    ort32 = by.get("onnxruntime fp32")
    ort8 = by.get("onnxruntime int8")
    best8 = min((r for r in report.inference if r.precision == "int8" and r.eligible), key=lambda r: r.median_ms, default=None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def median(row: Latency | None) -> float | None:
        return row.median_ms if row is not None else None

    cold = {row["handler"]: row for row in report.cold_start}

    def cold_start(handler: str, key: Literal["median_ms", "peak_rss_mb"]) -> float | None:
        row = cold.get(handler)
        return row[key] if row is not None else None

    torch_cold = cold_start("pytorch handler fp32", "median_ms")
    pre = next((row for row in report.preprocess if row["fast_allowed"] and row["image"].startswith("12")), None)
    payload8 = next((row for row in report.payload if row["runtime"] == "onnxruntime" and row["precision"] == "int8"), None)
    agreement = next((row for row in report.accuracy.get("variants", []) if row["name"] == "onnxruntime int8"), None)
    targets = [
        _target("ONNX Runtime fp32 latency / PyTorch eager", ratio(median(ort32), torch_ms), TARGET_ORT_FP32_VS_TORCH),
        _target("ONNX Runtime INT8 latency / PyTorch eager", ratio(median(ort8), torch_ms), TARGET_INT8_VS_TORCH),
        _target(f"fastest INT8 ({best8.name if best8 else '-'}) latency / PyTorch eager",
                ratio(median(best8), torch_ms), TARGET_INT8_VS_TORCH),
        _target("ONNX Runtime INT8 latency / INT8 compute floor", ratio(median(ort8), report.floor.get("int8_floor_ms")),
                TARGET_INT8_VS_FLOOR),
        _target("ONNX handler fp32 cold start / PyTorch handler", ratio(cold_start("onnx handler fp32", "median_ms"), torch_cold),
                TARGET_COLD_START_VS_TORCH),
        _target("ONNX handler INT8 cold start / PyTorch handler", ratio(cold_start("onnx handler int8", "median_ms"), torch_cold),
                TARGET_COLD_START_VS_TORCH),
        _target("12 MP JPEG decode + preprocess / ONNX Runtime INT8 inference",
                ratio(pre["median_ms"] if pre is not None else None, median(ort8)), TARGET_PREPROCESS_VS_INT8),
        _target("ONNX handler fp32 peak RSS", cold_start("onnx handler fp32", "peak_rss_mb"), TARGET_RSS_FP32_MB, "MB"),
        _target("ONNX handler INT8 peak RSS", cold_start("onnx handler int8", "peak_rss_mb"), TARGET_RSS_INT8_MB, "MB"),
        _target("INT8 runtime payload (ONNX Runtime)", payload8["total_mb"] if payload8 is not None else None,
                TARGET_PAYLOAD_INT8_MB, "MB"),
    ]
    differing = None if agreement is None else agreement["photos"] - agreement["top1_same_as_fp32"]
    targets.append({"target": f"INT8 top-1 identical to fp32 on every real photo ({report.accuracy.get('model', '-')})",
                    "value": differing, "limit": 0, "unit": "photos differing",
                    "met": None if differing is None else differing == 0})
    return targets


def run_bench(config: BenchConfig, on_step: Step = noop) -> BenchReport:
    """Measure everything the issue lists, in one process (plus fresh ones for cold starts)."""
    config.out = Path(config.out)
    config.cache.mkdir(parents=True, exist_ok=True)
    fp32, int8, accuracy_fp32, accuracy_int8 = ensure_models(config, on_step)
    threads = config.threads or default_threads()
    meta, meta8 = Sidecar.load(sidecar_path(fp32)), Sidecar.load(sidecar_path(int8))
    settings = {k: v for k, v in asdict(config).items() if k not in ("model", "int8", "accuracy_model", "out")}
    report = BenchReport(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        machine=machine(),
        config={**settings, "threads": threads, "batch": BATCH},
        models={"fp32": {"path": str(fp32), "label": meta.label, "bytes": meta.onnx_bytes},
                "int8": {"path": str(int8), "label": meta8.label, "bytes": meta8.onnx_bytes},
                "accuracy": {"fp32": str(accuracy_fp32) if accuracy_fp32 else None,
                             "int8": str(accuracy_int8) if accuracy_int8 else None}},
    )
    report.inference = measure_inference(fp32, int8, threads, config, on_step)
    report.floor = compute_floor(meta, threads, config, on_step)
    for result in report.inference:
        floor = report.floor["int8_floor_ms"] if result.precision == "int8" else report.floor["fp32_floor_ms"]
        result.floor_fraction = floor / result.median_ms
    report.threads = measure_threads(fp32, int8, threads, config, on_step)
    report.preprocess = measure_preprocess(meta.preprocessing, config, on_step)
    report.cold_start = measure_cold_starts(fp32, int8, config, on_step)
    on_step("measuring the runtime payload (installed packages + code + model)")
    report.payload = measure_payload(fp32, int8)
    report.emulator = measure_emulator(fp32, config, on_step)
    report.accuracy = measure_agreement(accuracy_fp32, accuracy_int8, threads, on_step)
    choose_fastest(report)
    report.targets = evaluate_targets(report)
    return report


