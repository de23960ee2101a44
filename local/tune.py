"""Power tuning, locally: which Lambda memory size (and precision) is the cheapest fast enough?

For every memory size × precision, a fresh Lambda emulator (:mod:`local.emulator`) runs the real
handler inside a cgroup sized the way Lambda sizes a function (:mod:`local.cgroups`: CPU quota of
memory/1,769 vCPU, memory limit without swap; the handler picks its thread count from
``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` as on Lambda). Its first invoke is the cold start; then N warm
invokes give latency percentiles. The cgroup's own counters give peak memory, CPU throttling and
out-of-memory kills; :mod:`local.cost` turns the durations into a cost per million requests with
the cost view's price inputs; :func:`recommend` picks the cheapest configuration within a latency
budget and says why.

Every figure is EMULATED (see :data:`EMULATION_NOTE`). With a real function configured, the same
sweep also runs on AWS the way AWS Lambda Power Tuning does
(https://github.com/alexcasalboni/aws-lambda-power-tuning): set the function's memory with
``update_function_configuration``, wait for the update (``function_updated_v2``), invoke N+1 times
and read the durations from the REPORT line of each invoke's log tail; the original memory size is
restored afterwards.

Libraries do not print: progress goes to ``on_progress``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from lambda_onnx.errors import BackendError, BackendTimeoutError, ClassifierError, ModelLoadError
from lambda_onnx.resources import LAMBDA_MB_PER_VCPU, LAMBDA_MIN_MB, lambda_vcpus
from lambda_onnx.sidecar import Sidecar, int8_path, load_verified, sidecar_path
from local import cost
from local.backends import BackendResult, EmulatorBackend, invoke_answer, json_request
from local.cgroups import CGROUP_ROOT, PROC_CGROUP, LambdaCgroup
from local.emulator import Emulator, session_members
from local.monitor import cpu_label, duration_summary

DEFAULT_SIZES = (512, 1024, 1769, 2048, 3008, 4096)
DEFAULT_REQUESTS = 20
DEFAULT_OUT = Path("artifacts/tune")
DEFAULT_PHOTO = "chelsea"
PRECISIONS = ("fp32", "int8")
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
# What "latency" means: the function's duration as Lambda reports and bills it (the REPORT line),
# the handler's own time, or the client's round trip (locally: the emulator's HTTP hop on top).
METRICS = {"duration": "function duration (REPORT Duration, what Lambda bills)",
           "handler": "handler time (the handler's own handler_ms)",
           "round_trip": "client round trip (invoke HTTP exchange)"}
LAMBDA_MAX_MB = 10_240  # https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html
DEFAULT_FUNCTION_TIMEOUT_S = 30  # the template's; also bounds an invoke that thrashes near its memory limit
# Other processes using more than this much CPU during a warm series may have slowed it.
DISTURBED_OTHER_CPUS = 0.5

EMULATION_NOTE = ("EMULATED on this machine, not measured on AWS Lambda: the same handler code and the same Lambda "
                  "runtime client (the AWS Lambda Runtime Interface Emulator), with CPU and memory constrained by Linux "
                  "cgroups the way Lambda sizes a function (memory / 1,769 MB vCPU, a memory limit without swap). No "
                  "network, no API Gateway, no container image pull; this machine's CPU ({cpu}) may differ from Lambda's.")


@dataclass(frozen=True)
class TuneProgress:
    """One step of a sweep: ``message`` is a line worth showing, empty for a plain step."""

    done: int
    total: int
    message: str = ""


Progress = Callable[[TuneProgress], None]


@dataclass(frozen=True)
class TuneConfig:
    """What to sweep and how to judge it.

    ``prices`` carries the cost view's price inputs and cold-start share (its memory size and
    durations are replaced per configuration by the measured ones).
    """

    model: Path
    int8_model: Path | None = None  # None: <stem>.int8.onnx next to ``model`` if there, else INT8 is skipped
    precisions: tuple[str, ...] = PRECISIONS
    sizes: tuple[int, ...] = DEFAULT_SIZES
    requests: int = DEFAULT_REQUESTS
    budget_ms: float | None = None
    percentile: str = "p90"
    metric: str = "duration"
    image: Path | None = None  # None: the sample photo DEFAULT_PHOTO
    prices: cost.CostInputs = field(default_factory=cost.CostInputs)
    timeout_s: int = DEFAULT_FUNCTION_TIMEOUT_S
    function: str | None = None  # a real Lambda function to sweep too (its memory is changed, then restored)
    region: str | None = None
    cgroup_root: Path = CGROUP_ROOT
    proc_cgroup: Path = PROC_CGROUP

    def __post_init__(self) -> None:
        sizes = tuple(sorted({int(s) for s in self.sizes}))
        bad = [s for s in sizes if not LAMBDA_MIN_MB <= s <= LAMBDA_MAX_MB]
        if not sizes or bad:
            raise ValueError(f"memory sizes must be between {LAMBDA_MIN_MB} and {LAMBDA_MAX_MB} MB (Lambda's range), "
                             f"got {list(self.sizes)}")
        object.__setattr__(self, "sizes", sizes)
        if self.requests < 1:
            raise ValueError(f"at least one warm request per configuration is needed, got {self.requests}")
        if self.percentile not in PERCENTILES:
            raise ValueError(f"percentile must be one of {', '.join(PERCENTILES)}, got {self.percentile!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        unknown = set(self.precisions) - set(PRECISIONS)
        if unknown or not self.precisions:
            raise ValueError(f"precisions must be among {', '.join(PRECISIONS)}, got {list(self.precisions)}")
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise ValueError(f"the latency budget must be positive, got {self.budget_ms} ms")
        cost.gb_second_price(self.prices)  # an unknown architecture without a price: refused now, not mid-sweep


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


# --- statistics and cost -------------------------------------------------------------------------


def cost_per_million(prices: cost.CostInputs, memory_mb: int, warm_duration_ms: float, init_ms: float | None) -> tuple[int, float]:
    """(billed ms of a warm request, USD per million requests) at ``memory_mb``, by :mod:`local.cost`.

    A warm request is billed its duration rounded up to 1 ms; ``prices.cold_start_fraction`` of the
    requests also pay a billed INIT of ``init_ms``.
    """
    inputs = replace(prices, memory_mb=memory_mb, warm_duration_ms=warm_duration_ms,
                     init_ms=init_ms if init_ms is not None else 0.0)
    return math.ceil(warm_duration_ms), cost.serverless_per_request(inputs) * 1e6


# --- the recommendation (pure) ------------------------------------------------------------------------


def recommend(results: Sequence[SizeResult], budget_ms: float | None, percentile: str = "p90",
              metric: str = "duration", max_memory_mb: int | None = None) -> Recommendation:
    """The cheapest configuration whose ``percentile`` of ``metric`` is within ``budget_ms``.

    Not eligible: a configuration that failed (out of memory, timeout, errors) or whose handler's
    peak RSS exceeded its memory size when emulated (shared libraries are not charged to a cgroup
    but count on Lambda: it would likely run out of memory there). Ties in cost go to the faster,
    then the smaller. Without a budget: the cheapest overall. ``max_memory_mb`` (the largest size
    this machine can give its full CPU share) only shapes the advice when nothing fits.
    """
    source = results[0].source if results else "emulated"
    excluded: dict[str, str] = {}
    usable: list[SizeResult] = []
    for r in results:
        latency = r.latency(percentile, metric)
        if r.status != "ok":
            excluded[r.key] = f"{r.status}: {r.message}" if r.message else r.status
        elif r.requests_ok < r.requests:
            excluded[r.key] = f"only {r.requests_ok} of {r.requests} warm requests succeeded"
        elif latency is None or r.cost_per_million_usd is None:
            excluded[r.key] = f"no {percentile} {metric} measured"
        elif r.canary == "failed":
            excluded[r.key] = f"its canary failed on {r.cpu or 'this CPU'}: its answers are not the model's"
        elif r.outgrows_its_memory:
            excluded[r.key] = (f"peak RSS {r.peak_rss_mb:.0f} MB above its {r.memory_mb} MB: shared libraries count on "
                               "Lambda (not in a cgroup here), so it would likely run out of memory there")
        else:
            usable.append(r)
    within = [r for r in usable if budget_ms is None or r.latency(percentile, metric) <= budget_ms]
    for r in usable:
        if r not in within:
            excluded[r.key] = f"{percentile} {r.latency(percentile, metric):.1f} ms over the {budget_ms:g} ms budget"
    order = sorted(within, key=lambda r: (round(r.cost_per_million_usd, 9), r.latency(percentile, metric), r.memory_mb))
    common = dict(source=source, percentile=percentile, metric=metric, budget_ms=budget_ms,
                  within_budget=tuple(r.key for r in order), excluded=excluded)
    if not order:
        return Recommendation(choice=None, memory_mb=None, precision=None,
                              text=_nothing_fits(results, usable, budget_ms, percentile, metric, max_memory_mb), **common)
    best = order[0]
    return Recommendation(choice=best.key, memory_mb=best.memory_mb, precision=best.precision,
                          text=_why(best, order, usable, budget_ms, percentile, metric), **common)


def _why(best: SizeResult, order: list[SizeResult], usable: list[SizeResult], budget_ms: float | None,
         percentile: str, metric: str) -> str:
    latency = best.latency(percentile, metric)
    lines = []
    if budget_ms is None:
        lines.append(f"**{best.memory_mb} MB, {best.precision}**: ${best.cost_per_million_usd:.2f} per million requests, "
                     f"{percentile} {latency:.1f} ms, the cheapest of {len(order)} working configurations "
                     "(no latency budget was given).")
    else:
        lines.append(f"**{best.memory_mb} MB, {best.precision}**: {percentile} {latency:.1f} ms within the {budget_ms:g} ms "
                     f"budget at ${best.cost_per_million_usd:.2f} per million requests, the cheapest of {len(order)} "
                     f"configuration(s) within budget.")
    if len(order) > 1:
        runner = order[1]
        dearer = (runner.cost_per_million_usd / best.cost_per_million_usd - 1) * 100 if best.cost_per_million_usd else 0.0
        lines.append(f"Next cheapest: {runner.key} at ${runner.cost_per_million_usd:.2f}, {dearer:.0f}% more ({percentile} "
                     f"{runner.latency(percentile, metric):.1f} ms).")
    fastest = min(usable, key=lambda r: r.latency(percentile, metric))
    if fastest is not best:
        lines.append(f"Fastest: {fastest.key} at {percentile} {fastest.latency(percentile, metric):.1f} ms for "
                     f"${fastest.cost_per_million_usd:.2f} per million.")
    if best.cpu_capped:
        lines.append(f"Caution: this machine gave {best.key} only {best.cpus:.2f} of Lambda's {best.lambda_cpus:.2f} vCPU, "
                     "so Lambda would be faster at this size.")
    if best.precision == "int8":
        lines.append("INT8 changes the numbers the model computes: check its agreement with fp32 (its sidecar's parity "
                     "report, `python -m local bench`) before deploying it.")
    n = best.warm.get(metric, {}).get("n", 0)
    if percentile == "p99" and n < 100:
        lines.append(f"p99 from {n} requests is close to their maximum: use more requests for a stable p99.")
    return " ".join(lines)


def _nothing_fits(results: Sequence[SizeResult], usable: list[SizeResult], budget_ms: float | None, percentile: str,
                  metric: str, max_memory_mb: int | None) -> str:
    if not usable:
        return ("No configuration completed its requests, so none can be recommended: see each one's status "
                "(a size below the model's need ends out of memory; give it more memory).")
    fastest = min(usable, key=lambda r: r.latency(percentile, metric))
    latency = fastest.latency(percentile, metric)
    advice = [f"No configuration's {percentile} is within {budget_ms:g} ms. The fastest is {fastest.key} at "
              f"{latency:.1f} ms (${fastest.cost_per_million_usd:.2f} per million). What to do:",
              f"relax the budget to at least {math.ceil(latency)} ms;"]
    largest = max(r.memory_mb for r in results)
    if fastest.memory_mb == largest and largest < LAMBDA_MAX_MB:
        more = "sweep larger sizes (Lambda gives up to 6 vCPUs at 10,240 MB)"
        if max_memory_mb is not None and largest >= max_memory_mb:
            more += (f", but this machine cannot give more CPU than at {max_memory_mb} MB: measure larger sizes on AWS "
                     "(--function)")
        advice.append(more + ";")
    if "int8" not in {r.precision for r in results}:
        advice.append("try the INT8 model (`python -m export --int8`);")
    advice.append("or use a smaller model (e.g. `python -m export --arch efficientnet_lite0`).")
    return " ".join(advice)


# --- the models --------------------------------------------------------------------------------------


def resolve_models(config: TuneConfig) -> tuple[dict[str, Path], list[str]]:
    """{precision: model path} to sweep, and notes on what was skipped and why.

    Raises :class:`ModelLoadError` when a model that was asked for by path is missing or broken.
    """
    models: dict[str, Path] = {}
    notes: list[str] = []
    if "fp32" in config.precisions:
        load_verified(config.model, verify_sha256=False)
        models["fp32"] = Path(config.model)
    if "int8" in config.precisions:
        candidate = Path(config.int8_model) if config.int8_model else int8_path(Path(config.model))
        if config.int8_model is not None or candidate.is_file():
            int8 = load_verified(candidate, verify_sha256=False)
            models["int8"] = candidate
            source = int8.extra.get("quantization", {}).get("source", {}).get("sha256")
            try:
                fp32_sha = Sidecar.load(sidecar_path(Path(config.model))).sha256
            except (OSError, ValueError, ClassifierError):
                fp32_sha = None
            if source and fp32_sha and source != fp32_sha:
                notes.append(f"{candidate} was quantised from another fp32 model than {config.model} "
                             "(the sha256 in its sidecar differs): its figures are not comparable one to one")
        else:
            notes.append(f"INT8 skipped: no {candidate} (create it with `python -m export --int8`, or pass --int8-model)")
    if not models:
        raise ModelLoadError("nothing to sweep: no model for the precisions asked for")
    return models, notes


# --- the emulated sweep -----------------------------------------------------------------------------


class _Ticker:
    def __init__(self, total: int, on_progress: Progress | None) -> None:
        self.done, self.total, self.on_progress = 0, total, on_progress

    def __call__(self, message: str = "", steps: int = 1) -> None:
        self.done += steps
        if self.on_progress is not None:
            self.on_progress(TuneProgress(min(self.done, self.total), self.total, message))


def run_tune(config: TuneConfig, on_progress: Progress | None = None) -> TuneReport:
    """Sweep every size × precision on the emulator (and on AWS when ``config.function`` is set).

    Raises :class:`~local.cgroups.CgroupUnavailableError` before measuring anything if no cgroup
    can be made, and :class:`ModelLoadError` for a missing model. A configuration that fails (out
    of memory, timeout) is a result with that status, not an error.
    """
    from local import photos
    from local.bench import machine

    image_path = Path(config.image) if config.image else photos.by_name(DEFAULT_PHOTO).path
    image = image_path.read_bytes()
    models, notes = resolve_models(config)
    probe = LambdaCgroup(config.sizes[0], root=config.cgroup_root, proc_cgroup=config.proc_cgroup)
    with probe:  # fails here, with the reason, if no cgroup can be made
        notes.extend(probe.notes)
    info = machine()
    info["cgroups"] = probe.hierarchy.describe() if probe.hierarchy else "?"
    machine_cpus = probe.limits.machine_cpus
    info["max_full_share_mb"] = math.floor(machine_cpus * LAMBDA_MB_PER_VCPU)  # above it, the CPU share is capped here
    per_config = 1 + config.requests
    total = len(models) * len(config.sizes) * per_config + (len(config.sizes) * per_config if config.function else 0)
    tick = _Ticker(total, on_progress)
    report = TuneReport(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        emulation_note=EMULATION_NOTE.format(cpu=info.get("cpu", "unknown")), machine=info,
        config=_config_dict(config, image_path), models={p: str(m) for p, m in models.items()}, notes=notes)
    for precision, model in models.items():
        for size in config.sizes:
            report.results.append(measure_emulated(model, precision, size, image, config, tick))
    if config.function:
        function = LambdaFunction(config.function, config.region, timeout_s=2 * config.timeout_s + 5)
        report.aws_results = sweep_aws(function, config.sizes, config.requests, image, config.prices, tick)
    report.recommendation = recommend(report.results, config.budget_ms, config.percentile, config.metric,
                                      max_memory_mb=info["max_full_share_mb"])
    if report.aws_results:
        report.aws_recommendation = recommend(report.aws_results, config.budget_ms, config.percentile, config.metric)
    return report


def _config_dict(config: TuneConfig, image: Path) -> dict[str, Any]:
    prices = asdict(config.prices)
    for measured in ("memory_mb", "warm_duration_ms", "init_ms", "server_hourly_usd", "server_throughput_rps",
                     "server_utilisation"):
        prices.pop(measured)  # set per configuration, or not used here
    prices["gb_second_usd"] = cost.gb_second_price(config.prices)
    prices["prices_date"] = cost.PRICES_DATE
    return {"sizes": list(config.sizes), "requests": config.requests, "budget_ms": config.budget_ms,
            "percentile": config.percentile, "metric": config.metric, "metric_means": METRICS[config.metric],
            "image": str(image), "image_bytes": image.stat().st_size, "function_timeout_s": config.timeout_s,
            "function": config.function, "region": config.region, "prices": prices}


def measure_emulated(model: Path, precision: str, memory_mb: int, image: bytes, config: TuneConfig,
                     tick: Callable[..., None] | None = None) -> SizeResult:
    """One configuration: a fresh emulator in a fresh cgroup, one cold invoke, ``config.requests`` warm ones.

    ``tick(message="", steps=1)`` is told of every invoke done (and of messages, with ``steps=0``).
    """
    tick = tick or (lambda *a, **k: None)
    cgroup = LambdaCgroup(memory_mb, root=config.cgroup_root, proc_cgroup=config.proc_cgroup)
    limits = cgroup.limits
    result = SizeResult("emulated", precision, memory_mb, lambda_cpus=round(limits.lambda_cpus, 3), cpus=round(limits.cpus, 3),
                        cpu_capped=limits.capped, requests=config.requests)
    _say(tick, f"{precision} {limits.describe()}: cold start…")
    with cgroup:
        emulator = Emulator(model, memory_mb=memory_mb, timeout_s=config.timeout_s, wrapper=cgroup.wrapper(),
                            name=f"tune-{precision}-{memory_mb}mb")
        backend = EmulatorBackend(emulator, name=f"emulator {precision} {memory_mb} MB")
        try:
            emulator.start()
            phase, remaining = "the cold start", 1 + config.requests
            warm: list[BackendResult] = []
            try:
                cold = backend.classify(image)
                remaining -= 1
                _record_cold(result, cold)
                after_cold = cgroup.counters()
                tick(f"  cold: round trip {cold.round_trip_ms:.0f} ms, init phase {_ms(result.init_phase_ms)} "
                     f"(handler init {_ms(result.init_ms)}), {result.threads} thread(s)")
                cpu_before = _cpu_seconds(emulator)
                for i in range(config.requests):
                    phase = f"warm request {i + 1}"
                    warm.append(backend.classify(image))
                    remaining -= 1
                    tick()
                result.other_cpus = _other_cpus(cpu_before, _cpu_seconds(emulator))
            except BackendError as exc:
                result.requests_ok = len(warm)
                _record_failure(result, exc, phase, cgroup, emulator)
                tick(f"  {result.status.upper()}: {result.message}", steps=remaining)
                return result
            finally:
                end = cgroup.counters()
                result.oom_kills = end.oom_kills
                result.memory_peak_mb = _round(end.memory_peak_mb)
                result.throttling["total"] = _throttling(end)
            result.throttling["warm"] = _throttling(end.since(after_cold))
        finally:
            backend.close()
    _record_warm(result, warm, config.prices)
    tick(f"  warm: {config.metric} p50 {_ms(result.latency('p50', config.metric))}, p90 "
         f"{_ms(result.latency('p90', config.metric))}; peak {_mb(result.memory_peak_mb)} (cgroup) / "
         f"{_mb(result.peak_rss_mb)} RSS; throttled in {result.throttling['warm']['nr_throttled']:.0f} of "
         f"{result.throttling['warm']['nr_periods']:.0f} periods; ${result.cost_per_million_usd:.2f} per million", steps=0)
    return result


def _say(tick: Callable[..., None], message: str) -> None:
    tick(message, steps=0)


def _record_cold(result: SizeResult, cold: BackendResult) -> None:
    result.cold_round_trip_ms = round(cold.round_trip_ms, 2)
    result.cold_duration_ms = cold.extra.get("duration_ms")
    result.init_ms = _round(cold.metrics.get("init_ms"))
    result.init_phase_ms = cold.extra.get("emulator_init_ms", cold.extra.get("init_duration_ms"))
    result.threads = cold.model.get("threads")
    result.cpu = cpu_label(cold.body.get("host") or {})
    result.int8_kernel = cold.model.get("int8_kernel")
    result.canary = (cold.model.get("canary") or {}).get("status", "")
    if result.canary == "failed":
        result.warnings.append("its canary failed on this CPU (served only because ALLOW_CANARY_FAILURE is set): "
                               "its answers may be wrong")
    if not cold.cold_start:
        result.warnings.append("the first invoke was not a cold start (an environment was already warm)")


def _record_warm(result: SizeResult, warm: list[BackendResult], prices: cost.CostInputs) -> None:
    result.requests_ok = len(warm)
    values = {"duration": [r.extra["duration_ms"] for r in warm if "duration_ms" in r.extra],
              "handler": [r.server_ms for r in warm], "round_trip": [r.round_trip_ms for r in warm]}
    result.warm = {metric: duration_summary(v) for metric, v in values.items() if v}
    if len(values["duration"]) < len(warm):
        result.warnings.append(f"{len(warm) - len(values['duration'])} REPORT line(s) were not seen in time: the "
                               "duration percentiles use the others")
    peaks = [r.metrics.get("peak_rss_mb") for r in warm if r.metrics.get("peak_rss_mb") is not None]
    result.peak_rss_mb = _round(max(peaks)) if peaks else None
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


def _record_failure(result: SizeResult, exc: BackendError, phase: str, cgroup: LambdaCgroup, emulator: Emulator) -> None:
    """OOM when the cgroup counted an OOM kill (or, on kernels that do not count them, when the
    emulator saw the runtime killed by a signal); else the timeout or error it was."""
    counters = cgroup.counters()
    said = next((match["error"] for line in reversed(emulator.log_lines("stderr"))
                 if (match := _RUNTIME_EXIT.search(line)) is not None), "")
    killed = counters.oom_kills > 0 if counters.oom_kills is not None else said.endswith("signal: killed")
    if killed:
        result.status = "oom"
        result.message = (f"out of memory during {phase}: the kernel's OOM killer ended the function at its "
                          f"{result.memory_mb} MiB limit" + (f" ({counters.oom_kills} kill(s))" if counters.oom_kills else "")
                          + (f"; the emulator: {said}" if said else ""))
    elif isinstance(exc, BackendTimeoutError):
        result.status, result.message = "timeout", f"no answer during {phase}: {exc.message}"
    else:
        result.status, result.message = "error", f"{phase} failed: {exc.message}"


_RUNTIME_EXIT = re.compile(r"(?P<error>Runtime exited with error: [^\t]*?)(?: InvokeID=\S+)?\s*$")


def _throttling(counters: Any) -> dict[str, float]:
    return {"nr_periods": counters.nr_periods, "nr_throttled": counters.nr_throttled,
            "throttled_ms": round(counters.throttled_ms, 1)}


def _cpu_seconds(emulator: Emulator) -> tuple[float, float, float]:
    """(wall clock, CPU seconds the whole machine was busy, CPU seconds of this process, the
    emulator and the function) now: the difference is what other processes used."""
    times = psutil.cpu_times()
    # Linux counts guest time inside user and nice already; steal is the hypervisor's, not a process's.
    busy = times.user + times.system + sum(getattr(times, f, 0.0) for f in ("nice", "irq", "softirq"))
    ours = 0.0
    for pid in {psutil.Process().pid, *(session_members(emulator.pid) if emulator.pid else [])}:
        try:
            t = psutil.Process(pid).cpu_times()
            ours += t.user + t.system
        except psutil.Error:
            continue
    return time.monotonic(), busy, ours


def _other_cpus(before: tuple[float, float, float], after: tuple[float, float, float]) -> float | None:
    wall = after[0] - before[0]
    if wall <= 0:
        return None
    return round(max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / wall, 2)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


# --- the real function on AWS ------------------------------------------------------------------------

_AWS_REPORT = re.compile(r"^REPORT RequestId: \S+(?P<fields>.*)$", re.MULTILINE)
_AWS_FIELD = re.compile(r"(?P<key>[A-Za-z][A-Za-z ]*?): (?P<value>[\d.]+) (?P<unit>ms|MB)")
_AWS_FIELDS = {"Duration": "duration_ms", "Billed Duration": "billed_duration_ms", "Memory Size": "memory_size_mb",
               "Max Memory Used": "max_memory_used_mb", "Init Duration": "init_duration_ms"}


def parse_aws_report(log: str) -> dict[str, float]:
    """The last REPORT line of a Lambda log (an invoke's ``LogResult`` tail) as numbers.

    On AWS every field is real, ``Max Memory Used`` and ``Init Duration`` (cold starts only) too.
    https://docs.aws.amazon.com/lambda/latest/dg/python-logging.html#python-logging-output
    """
    matches = list(_AWS_REPORT.finditer(log))
    if not matches:
        return {}
    return {_AWS_FIELDS[m["key"].strip()]: float(m["value"]) for m in _AWS_FIELD.finditer(matches[-1]["fields"])
            if m["key"].strip() in _AWS_FIELDS}


class LambdaFunction:
    """A deployed function the sweep reconfigures: memory size through boto3, invokes with the log tail.

    Changing the memory of ``$LATEST`` affects everyone invoking it meanwhile: point the sweep at a
    function of your own, not at production.
    """

    def __init__(self, name: str, region: str | None = None, *, timeout_s: float = 65.0, session: Any = None) -> None:
        import boto3
        from botocore.config import Config

        self.name = name
        config = Config(read_timeout=timeout_s, connect_timeout=5, retries={"total_max_attempts": 1, "mode": "standard"})
        self._client = (session or boto3.session.Session()).client("lambda", region_name=region, config=config)

    def memory_mb(self) -> int:
        return int(self._call("get_function_configuration", FunctionName=self.name)["MemorySize"])

    def set_memory(self, memory_mb: int) -> None:
        """Set the memory size and wait until the update is live (new environments, so the next invoke is cold)."""
        from botocore.exceptions import WaiterError

        self._call("update_function_configuration", FunctionName=self.name, MemorySize=int(memory_mb))
        try:
            self._client.get_waiter("function_updated_v2").wait(FunctionName=self.name,
                                                               WaiterConfig={"Delay": 2, "MaxAttempts": 90})
        except WaiterError as exc:
            raise BackendError(f"lambda {self.name}: the update to {memory_mb} MB did not complete: {exc}",
                               code="update_failed") from None

    def invoke(self, image: bytes) -> BackendResult:
        """One RequestResponse invoke with ``LogType=Tail``: the REPORT facts land in ``extra``."""
        payload = json_request(image)
        start = time.perf_counter()
        response = self._call("invoke", FunctionName=self.name, InvocationType="RequestResponse", LogType="Tail",
                              Payload=payload)
        data = response["Payload"].read()
        elapsed = (time.perf_counter() - start) * 1e3
        report = parse_aws_report(base64.b64decode(response.get("LogResult") or b"").decode("utf-8", "replace"))
        name = f"lambda {self.name}"
        status, body = invoke_answer(data, response.get("FunctionError"), name)
        return BackendResult(name, "serverless", status, body, elapsed, len(payload), len(data), extra=report)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise BackendError(f"lambda {self.name}: {operation}: {error.get('Code')}: {error.get('Message')}",
                               status=int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0),
                               code=str(error.get("Code") or "aws_error")) from None
        except BotoCoreError as exc:
            raise BackendError(f"lambda {self.name}: {operation}: {exc}", code="aws_error") from None


def sweep_aws(function: LambdaFunction, sizes: Sequence[int], requests: int, image: bytes, prices: cost.CostInputs,
              tick: Callable[..., None] | None = None) -> list[SizeResult]:
    """The real sweep: each size set on the function, one cold and ``requests`` warm invokes; the
    function's original memory size is restored afterwards, whatever happens."""
    tick = tick or (lambda *a, **k: None)
    original = function.memory_mb()
    results = []
    try:
        for size in sizes:
            function.set_memory(size)
            _say(tick, f"AWS {function.name}: {size} MB configured; cold start…")
            result = SizeResult("aws", "?", size, lambda_cpus=round(lambda_vcpus(size), 3),
                                requests=requests)
            phase, remaining = "the cold start", 1 + requests
            warm: list[BackendResult] = []
            try:
                cold = function.invoke(image)
                remaining -= 1
                _record_cold(result, cold)
                result.precision = str(cold.model.get("precision", "?"))
                tick(f"  AWS cold: round trip {cold.round_trip_ms:.0f} ms, Init Duration {_ms(result.init_phase_ms)}")
                for i in range(requests):
                    phase = f"warm request {i + 1}"
                    warm.append(function.invoke(image))
                    remaining -= 1
                    tick()
            except BackendError as exc:
                oom = "OutOfMemory" in exc.message or "signal: killed" in exc.message
                result.status = "oom" if oom else "timeout" if isinstance(exc, BackendTimeoutError) else "error"
                result.message = f"{phase}: {exc.message}"
                tick(f"  AWS {result.status.upper()}: {result.message}", steps=remaining)
                results.append(result)
                continue
            memory = [r.extra["max_memory_used_mb"] for r in [cold, *warm] if "max_memory_used_mb" in r.extra]
            result.memory_peak_mb = max(memory) if memory else None
            _record_warm(result, warm, prices)
            tick(f"  AWS warm: duration p50 {_ms(result.latency('p50'))}, p90 {_ms(result.latency('p90'))}; "
                 f"${result.cost_per_million_usd:.2f} per million", steps=0)
            results.append(result)
    finally:
        function.set_memory(original)
    return results


# --- outputs ---------------------------------------------------------------------------------------------


def markdown(report: TuneReport) -> str:
    """The report as Markdown: the EMULATED label, the machine, one table, the recommendation."""
    config, machine = report.config, report.machine
    p, metric = config["percentile"], config["metric"]
    prices = config["prices"]
    aws = {(r.precision, r.memory_mb): r for r in report.aws_results}
    lines = [
        "# Lambda power tuning (EMULATED)", "",
        f"> **{report.emulation_note}**", "",
        f"- machine: {machine.get('cpu', '?')} ({', '.join(machine.get('isa', []))}"
        f"{'' if machine.get('vnni') is None else '; VNNI' if machine.get('vnni') else '; no VNNI'}), "
        f"{machine.get('cpus')} CPUs ({machine.get('available_cpus')} usable), "
        f"{machine.get('memory_gb', '?')} GB, {machine.get('platform')}; {machine.get('cgroups')}; sizes above "
        f"{machine.get('max_full_share_mb')} MB get this machine's {machine.get('available_cpus')} CPUs, not Lambda's share",
        "- models: " + ", ".join(f"{k} `{v}`" for k, v in report.models.items()),
        f"- image: `{config['image']}` ({config['image_bytes'] / 1e3:,.0f} kB); 1 cold + {config['requests']} warm "
        f"invokes per configuration; latency = {config['metric_means']}",
        f"- prices: {prices['architecture']}, ${prices['gb_second_usd']:.10f}".rstrip("0") + f" per GB-s, ${prices['request_usd'] * 1e6:.2f} per "
        f"million requests" + (f", API Gateway ${prices['api_request_usd'] * 1e6:.2f} per million" if prices["api_gateway"] else "")
        + f"; {prices['cold_start_fraction']:.1%} of requests cold (billed init phase); {prices['prices_date']}",
        f"- run {report.created}", "",
    ]
    head = ["precision", "memory MB", "vCPU (Lambda → here)", "threads", "cold round trip ms", "init phase ms",
            "p50 ms", "p90 ms", "p99 ms", "peak MB (cgroup / RSS)", "throttled periods (warm)", "INT8 kernel, canary",
            "$ per 1M", "status"]
    if aws:
        head[-1:-1] = ["AWS p50 / p90 ms", "AWS $ per 1M"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.results:
        w = r.warm.get(metric, {})
        throttled = r.throttling.get("warm") or r.throttling.get("total") or {}
        cpu = f"{r.lambda_cpus:.2f} → {r.cpus:.2f}" + (" (capped)" if r.cpu_capped else "")
        status = r.status if r.status == "ok" else f"**{r.status.upper()}**: {r.message}"
        if r.warnings:
            status += " ⚠ " + "; ".join(r.warnings)
        row = [r.precision, str(r.memory_mb), cpu, _cell(r.threads), _cell(r.cold_round_trip_ms), _cell(r.init_phase_ms),
               _cell(w.get("p50")), _cell(w.get("p90")), _cell(w.get("p99")),
               f"{_cell(r.memory_peak_mb)} / {_cell(r.peak_rss_mb)}",
               f"{throttled.get('nr_throttled', 0):.0f} / {throttled.get('nr_periods', 0):.0f}" if throttled else "–",
               f"{r.int8_kernel or '–'}, {r.canary or '–'}", _cell(r.cost_per_million_usd, money=True), status]
        if aws:
            real = aws.get((r.precision, r.memory_mb))
            row[-1:-1] = [f"{_cell(real.latency('p50'))} / {_cell(real.latency('p90'))}" if real else "–",
                          _cell(real.cost_per_million_usd, money=True) if real else "–"]
        if report.recommendation and report.recommendation.choice == r.key:
            row[0] = f"**{row[0]}** ⭐"
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Latency columns: warm {METRICS[metric]}. Throttled periods: CFS periods in which the function used up "
              "its CPU quota and waited (the cgroup's cpu.stat).", ""]
    rec = report.recommendation
    if rec is not None:
        budget = f"{p} ≤ {rec.budget_ms:g} ms" if rec.budget_ms is not None else "no latency budget"
        lines += [f"## Recommendation (emulated, {budget})", "", rec.text, ""]
    if report.aws_results:
        lines += [f"## Real AWS Lambda: `{config['function']}` ({config.get('region') or 'default region'})", "",
                  "| precision | memory MB | cold round trip ms | Init Duration ms | p50 ms | p90 ms | p99 ms | Max Memory Used MB "
                  "| $ per 1M | status |", "|" + "---|" * 10]
        for r in report.aws_results:
            w = r.warm.get("duration", {})
            lines.append(f"| {r.precision} | {r.memory_mb} | {_cell(r.cold_round_trip_ms)} | {_cell(r.init_phase_ms)} | "
                         f"{_cell(w.get('p50'))} | {_cell(w.get('p90'))} | {_cell(w.get('p99'))} | {_cell(r.memory_peak_mb)} | "
                         f"{_cell(r.cost_per_million_usd, money=True)} | {r.status if r.status == 'ok' else r.message} |")
        if report.aws_recommendation is not None:
            lines += ["", f"**On AWS:** {report.aws_recommendation.text}"]
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    lines += ["Chart: `tune.png` (latency and cost per million requests against memory size)", ""]
    return "\n".join(lines)


def _cell(value: float | int | None, money: bool = False) -> str:
    if value is None:
        return "–"
    if money:
        return f"${value:.2f}"
    return f"{value:.0f}" if isinstance(value, int) or abs(value) >= 100 else f"{value:.1f}"


def chart_rows(report: TuneReport) -> list[dict[str, Any]]:
    """One row per configuration (emulated and AWS) for :func:`local.charts.power_tuning`."""
    p, metric = report.config["percentile"], report.config["metric"]
    rows = []
    for r in [*report.results, *report.aws_results]:
        m = metric if r.source == "emulated" else "duration"
        rows.append({"source": r.source, "precision": r.precision, "memory_mb": r.memory_mb, "ok": r.ok, "status": r.status,
                     "p50": r.latency("p50", m), "percentile": r.latency(p, m), "cost": r.cost_per_million_usd,
                     "capped": r.cpu_capped})
    return rows


def write_outputs(report: TuneReport, out: Path, chart: Any = None) -> dict[str, Path]:
    """``tune.json``, ``tune.md`` and ``tune.png`` in ``out`` (``chart``: the report's
    :func:`figure` if the caller already drew it)."""
    from local import charts

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "tune.json", "markdown": out / "tune.md", "png": out / "tune.png"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    paths["png"].write_bytes(charts.to_png(chart if chart is not None else figure(report)))
    return paths


def figure(report: TuneReport) -> Any:
    """The report's chart (a matplotlib Figure): latency and cost against memory size."""
    from local import charts

    rec = report.recommendation
    return charts.power_tuning(chart_rows(report), percentile=report.config["percentile"], budget_ms=report.config["budget_ms"],
                               recommended=(rec.precision, rec.memory_mb) if rec and rec.choice else None,
                               title=f"EMULATED power tuning — {', '.join(Path(m).name for m in report.models.values())}")


def summary_lines(report: TuneReport) -> list[str]:
    """What the CLI prints at the end: the label, one line per configuration, the recommendation."""
    p, metric = report.config["percentile"], report.config["metric"]
    lines = [report.emulation_note, ""]
    for r in report.results:
        if r.ok:
            lines.append(f"  {r.key:>16}: p50 {_ms(r.latency('p50', metric))}, {p} {_ms(r.latency(p, metric))}, "
                         f"cold {_ms(r.cold_round_trip_ms)}, {r.threads} thread(s), ${r.cost_per_million_usd:.2f}/M"
                         + (f", {r.int8_kernel}" if r.int8_kernel else "") + f", canary {r.canary or '–'}"
                         + (" (CPU capped)" if r.cpu_capped else "") + (" ⚠" if r.warnings else ""))
        else:
            lines.append(f"  {r.key:>16}: {r.status.upper()} — {r.message}")
    for r in report.aws_results:
        lines.append(f"  AWS {r.key:>12}: " + (f"p50 {_ms(r.latency('p50'))}, {p} {_ms(r.latency(p))}, "
                                               f"${r.cost_per_million_usd:.2f}/M" if r.ok else f"{r.status.upper()} — {r.message}"))
    if report.recommendation:
        lines += ["", "Recommendation (emulated): " + report.recommendation.text.replace("**", "")]
    if report.aws_recommendation:
        lines += ["Recommendation (AWS): " + report.aws_recommendation.text.replace("**", "")]
    return lines
