"""What a sweep finds: one result per memory size x precision, the recommendation, the report, and
how one cold-then-warm series of invokes is recorded (the same for the emulator and for AWS)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lambda_onnx.errors import BackendError
from local.clients.base import BackendResult
from local.measure import cost
from local.measure.core.stats import duration_summary
from local.measure.monitor import cpu_label
from local.measure.tune.config import DISTURBED_OTHER_CPUS


@dataclass
class SizeResult:
    """One memory size × precision, emulated or measured on AWS."""

    source: str  # "emulated" or "aws"
    precision: str
    memory_mb: int
    status: str = "ok"  # "ok", "oom", "timeout" or "error"
    message: str = ""
    lambda_cpus: float = 0.0  # the CPU share Lambda gives this size
    cpus: float | None = None  # the quota applied here (emulated)
    cpu_capped: bool = False  # this machine had fewer CPUs than Lambda would give
    threads: int | None = None  # what the handler chose (from AWS_LAMBDA_FUNCTION_MEMORY_SIZE)
    cpu: str = ""  # the CPU the function ran on (its answer's host section): AWS hosts vary
    int8_kernel: str | None = None  # the INT8 kernel it ran with
    canary: str = ""  # its canary at load on that CPU: passed, failed, absent
    requests: int = 0  # warm requests planned
    requests_ok: int = 0
    cold_round_trip_ms: float | None = None
    cold_duration_ms: float | None = None  # the cold invoke's REPORT Duration (the init phase excluded)
    init_ms: float | None = None  # the handler's: module import to model ready
    init_phase_ms: float | None = None  # the runtime's whole init phase (INIT REPORT / Init Duration): billed
    warm: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> p50, p90, p99, mean, min, max, n
    peak_rss_mb: float | None = None  # the handler's own peak resident set
    memory_peak_mb: float | None = None  # the cgroup's peak (emulated) or REPORT Max Memory Used (AWS)
    throttling: dict[str, dict[str, float]] = field(default_factory=dict)  # "total", "warm" -> nr_periods, nr_throttled, throttled_ms
    oom_kills: int | None = None
    other_cpus: float | None = None  # CPUs other processes used on this machine during the warm requests
    billed_ms: int | None = None  # a warm request's billed duration (p50, rounded up to 1 ms)
    cost_per_million_usd: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.memory_mb} MB {self.precision}"

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.requests_ok == self.requests

    @property
    def outgrows_its_memory(self) -> bool:
        """Emulated with a peak RSS above the size: the cgroup here does not count shared libraries,
        Lambda does, so there it would likely run out of memory."""
        return self.source == "emulated" and self.peak_rss_mb is not None and self.peak_rss_mb > self.memory_mb

    def latency(self, percentile: str, metric: str = "duration") -> float | None:
        return self.warm.get(metric, {}).get(percentile)


@dataclass(frozen=True)
class Recommendation:
    """The cheapest configuration within the budget, or none, and why."""

    source: str
    percentile: str
    metric: str
    budget_ms: float | None
    choice: str | None  # SizeResult.key
    memory_mb: int | None
    precision: str | None
    text: str
    within_budget: tuple[str, ...] = ()
    excluded: dict[str, str] = field(default_factory=dict)  # key -> why it cannot be recommended

    @property
    def chosen(self) -> tuple[str, int] | None:
        """(precision, memory MB) of the choice; None when nothing could be recommended."""
        if not self.choice or self.precision is None or self.memory_mb is None:
            return None
        return self.precision, self.memory_mb


@dataclass
class TuneReport:
    created: str
    emulation_note: str
    machine: dict[str, Any]
    config: dict[str, Any]
    models: dict[str, str]  # precision -> path
    results: list[SizeResult] = field(default_factory=list)
    aws_results: list[SizeResult] = field(default_factory=list)
    recommendation: Recommendation | None = None
    aws_recommendation: Recommendation | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)




# --- one series: a cold invoke, then warm ones ----------------------------------------------------


@dataclass
class Series:
    """A cold invoke and the warm ones after it, or where it stopped and why."""

    cold: BackendResult | None = None
    warm: list[BackendResult] = field(default_factory=list)
    error: BackendError | None = None
    phase: str = "the cold start"  # what was running when ``error`` happened
    remaining: int = 0  # invokes planned but not made (for the progress count)


def cold_then_warm(classify: Callable[[], BackendResult], requests: int, tick: Callable[..., None],
                   on_cold: Callable[[BackendResult], None] | None = None) -> Series:
    """One cold invoke (``on_cold`` sees it first), then ``requests`` warm ones, ``tick()`` after each
    warm one; a :class:`BackendError` ends the series (recorded, not raised)."""
    series = Series(remaining=1 + requests)
    try:
        series.cold = classify()
        series.remaining -= 1
        if on_cold is not None:
            on_cold(series.cold)
        for i in range(requests):
            series.phase = f"warm request {i + 1}"
            series.warm.append(classify())
            series.remaining -= 1
            tick()
    except BackendError as exc:
        series.error = exc
    return series


def cost_per_million(prices: cost.CostInputs, memory_mb: int, warm_duration_ms: float, init_ms: float | None) -> tuple[int, float]:
    """(billed ms of a warm request, USD per million requests) at ``memory_mb``, by :mod:`local.cost`.

    A warm request is billed its duration rounded up to 1 ms; ``prices.cold_start_fraction`` of the
    requests also pay a billed INIT of ``init_ms``.
    """
    inputs = replace(prices, memory_mb=memory_mb, warm_duration_ms=warm_duration_ms,
                     init_ms=init_ms if init_ms is not None else 0.0)
    return math.ceil(warm_duration_ms), cost.serverless_per_request(inputs) * 1e6




def record_cold(result: SizeResult, cold: BackendResult) -> None:
    result.cold_round_trip_ms = round(cold.round_trip_ms, 2)
    result.cold_duration_ms = cold.extra.get("duration_ms")
    result.init_ms = rounded(cold.metrics["init_ms"])
    result.init_phase_ms = cold.extra.get("emulator_init_ms", cold.extra.get("init_duration_ms"))
    result.threads = cold.model["threads"]
    result.cpu = cpu_label(cold.host)
    result.int8_kernel = cold.model["int8_kernel"]
    result.canary = cold.model["canary"].get("status", "")
    if result.canary == "failed":
        result.warnings.append("its canary failed on this CPU (served only because ALLOW_CANARY_FAILURE is set): "
                               "its answers may be wrong")
    if not cold.cold_start:
        result.warnings.append("the first invoke was not a cold start (an environment was already warm)")



def record_warm(result: SizeResult, warm: list[BackendResult], prices: cost.CostInputs) -> None:
    result.requests_ok = len(warm)
    values = {"duration": [r.extra["duration_ms"] for r in warm if "duration_ms" in r.extra],
              "handler": [r.server_ms for r in warm], "round_trip": [r.round_trip_ms for r in warm]}
    result.warm = {metric: duration_summary(v) for metric, v in values.items() if v}
    if len(values["duration"]) < len(warm):
        result.warnings.append(f"{len(warm) - len(values['duration'])} REPORT line(s) were not seen in time: the "
                               "duration percentiles use the others")
    peaks = [r.metrics["peak_rss_mb"] for r in warm]
    result.peak_rss_mb = rounded(max(peaks)) if peaks else None
    if result.outgrows_its_memory:
        result.warnings.append(f"peak RSS {result.peak_rss_mb:.0f} MB is above {result.memory_mb} MB: on Lambda, where "
                               "shared libraries count too, this size would likely run out of memory")
    if result.other_cpus is not None and result.other_cpus > DISTURBED_OTHER_CPUS:
        result.warnings.append(f"other processes used {result.other_cpus:.1f} CPUs on this machine during the warm "
                               "requests: the figures may be disturbed; re-run on a quiet machine")
    billing = result.warm.get("duration") or result.warm.get("handler")
    if billing:
        result.billed_ms, result.cost_per_million_usd = cost_per_million(
            prices, result.memory_mb, billing["p50"], result.init_phase_ms if result.init_phase_ms is not None
            else result.init_ms)
        result.cost_per_million_usd = round(result.cost_per_million_usd, 4)



def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def format_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def format_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


