"""The same sweep on a real function, the way AWS Lambda Power Tuning does it
(https://github.com/alexcasalboni/aws-lambda-power-tuning): set the memory size through the Lambda
API, wait for the update (``function_updated_v2``), invoke N+1 times with the log tail and read the
durations from each invoke's REPORT line; the original memory size is restored afterwards.

Changing the memory of ``$LATEST`` affects everyone invoking it meanwhile: point the sweep at a
function of your own, not at production."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lambda_onnx.errors import BackendTimeoutError
from lambda_onnx.resources import lambda_vcpus
from local.clients.base import BackendResult
from local.clients.invoke import LambdaInvokeBackend
from local.measure import cost
from local.measure.tune.results import SizeResult, cold_then_warm, format_ms, record_cold, record_warm


def sweep_aws(function: str, region: str | None, sizes: Sequence[int], requests: int, image: bytes,
              prices: cost.CostInputs, tick: Callable[..., None] | None = None, *, timeout_s: float = 65.0,
              session: Any = None) -> list[SizeResult]:
    """The real sweep: each size set on ``function``, one cold and ``requests`` warm invokes (with the
    log tail, for each REPORT line); the function's original memory size is restored afterwards,
    whatever happens."""
    tick = tick or (lambda *a, **k: None)
    lam = LambdaInvokeBackend(function, region, timeout=timeout_s, session=session, name=f"lambda {function}", log_tail=True)
    original = lam.client.memory_mb(function)
    results = []
    try:
        for size in sizes:
            lam.client.set_memory(function, size)
            tick(f"AWS {function}: {size} MB configured; cold start…", steps=0)
            result = SizeResult("aws", "?", size, lambda_cpus=round(lambda_vcpus(size), 3), requests=requests)

            def after_cold(cold: BackendResult, result: SizeResult = result) -> None:
                record_cold(result, cold)
                result.precision = cold.model["precision"]
                tick(f"  AWS cold: round trip {cold.round_trip_ms:.0f} ms, Init Duration {format_ms(result.init_phase_ms)}")

            series = cold_then_warm(lambda: lam.classify(image), requests, tick, on_cold=after_cold)
            if series.error is not None:
                exc = series.error
                oom = "OutOfMemory" in exc.message or "signal: killed" in exc.message
                result.status = "oom" if oom else "timeout" if isinstance(exc, BackendTimeoutError) else "error"
                result.message = f"{series.phase}: {exc.message}"
                tick(f"  AWS {result.status.upper()}: {result.message}", steps=series.remaining)
                results.append(result)
                continue
            answers = [series.cold, *series.warm]
            memory = [r.extra["max_memory_used_mb"] for r in answers if r is not None and "max_memory_used_mb" in r.extra]
            result.memory_peak_mb = max(memory) if memory else None
            record_warm(result, series.warm, prices)
            tick(f"  AWS warm: duration p50 {format_ms(result.latency('p50'))}, p90 {format_ms(result.latency('p90'))}; "
                 f"${result.cost_per_million_usd:.2f} per million", steps=0)
            results.append(result)
    finally:
        lam.client.set_memory(function, original)
        lam.close()
    return results
