"""The same image through the Lambda emulator and in-process: what the invoke path adds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from lambda_onnx import photos as sample_photos
from lambda_onnx.classifier import Classifier
from local.measure.bench.config import BenchConfig, Step, noop
from local.measure.core.images import DEFAULT_PHOTO


def measure_emulator(fp32: Path, config: BenchConfig, on_step: Step = noop) -> dict[str, Any]:
    """HOOK (emulator vs in-process): the same image through the Lambda emulator and in-process.

    The emulator (:mod:`local.lambda_env`, built in parallel with this benchmark) is reached through
    the one client interface (:class:`local.clients.emulator.EmulatorBackend`). The in-process side uses
    the thread count the emulated function chose (Lambda's memory size decides it), so the
    difference is the invoke path, not the threads. Where the emulator is missing or cannot start
    (no ``aws-lambda-rie`` binary), the report says "not measured" and why.
    """
    try:
        from local.clients.emulator import EmulatorBackend
        from local.clients.inprocess import InProcessBackend
        from local.lambda_env.rie import Emulator
    except ImportError as exc:
        return {"measured": False, "reason": f"not yet measured: the emulator is not available ({exc})"}
    image = sample_photos.upscaled_jpeg(sample_photos.by_name(DEFAULT_PHOTO), megapixels=0.3)
    rounds = max(3, config.repeats // 3)
    try:
        on_step("starting the Lambda emulator (its first invoke is the function's cold start)")
        started = time.perf_counter()
        backend = EmulatorBackend(Emulator(fp32).start(), name="emulator")
        try:
            first = backend.classify(image)
            cold_ms = (time.perf_counter() - started) * 1e3
            on_step(f"emulator warm round trips ×{rounds}")
            warm = [backend.classify(image) for _ in range(rounds)]
        finally:
            backend.close()
    except Exception as exc:  # no emulator binary, a port problem, …: say so, measure the rest
        return {"measured": False, "reason": f"the emulator could not run: {exc}"}
    threads = warm[-1].model["threads"]
    on_step(f"in-process round trips ×{rounds} with the emulated function's {threads} thread(s)")
    local_backend = InProcessBackend(Classifier(fp32, threads=threads))
    local_runs = [local_backend.classify(image) for _ in range(rounds + 1)][1:]
    return {"measured": True, "model": str(fp32), "threads": threads, "memory_mb": warm[-1].metrics["memory_mb"],
            "cold_start_end_to_end_ms": cold_ms, "first_round_trip_ms": first.round_trip_ms,
            "first_was_cold": first.cold_start, "init_ms": first.metrics["init_ms"],
            "warm_round_trip_median_ms": float(np.median([r.round_trip_ms for r in warm])),
            "warm_handler_median_ms": float(np.median([r.server_ms for r in warm])),
            "in_process_median_ms": float(np.median([r.round_trip_ms for r in local_runs])),
            "in_process_handler_median_ms": float(np.median([r.server_ms for r in local_runs]))}


