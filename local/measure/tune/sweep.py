"""The emulated sweep: every memory size x precision on the real Lambda emulator, inside a cgroup
sized the way Lambda sizes a function."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil

from lambda_onnx import photos
from lambda_onnx.errors import BackendError, BackendTimeoutError, ClassifierError, ModelLoadError
from lambda_onnx.resources import LAMBDA_MB_PER_VCPU
from lambda_onnx.sidecar import Sidecar, int8_path, load_verified, sidecar_path
from local.clients.base import BackendResult
from local.clients.emulator import EmulatorBackend
from local.lambda_env.cgroups import LambdaCgroup
from local.lambda_env.rie import Emulator, session_members
from local.measure import cost
from local.measure.core.images import DEFAULT_PHOTO
from local.measure.core.machine import OtherLoad, machine
from local.measure.tune.aws import sweep_aws
from local.measure.tune.config import EMULATION_NOTE, METRICS, Progress, TuneConfig, TuneProgress
from local.measure.tune.recommend import recommend
from local.measure.tune.results import SizeResult, TuneReport, cold_then_warm, format_mb, format_ms, record_cold, record_warm, rounded


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
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        emulation_note=EMULATION_NOTE.format(cpu=info.get("cpu", "unknown")), machine=info,
        config=_config_dict(config, image_path), models={p: str(m) for p, m in models.items()}, notes=notes)
    for precision, model in models.items():
        for size in config.sizes:
            report.results.append(measure_emulated(model, precision, size, image, config, tick))
    if config.function:
        report.aws_results = sweep_aws(config.function, config.region, config.sizes, config.requests, image, config.prices,
                                       tick, timeout_s=2 * config.timeout_s + 5)
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
        marks: dict[str, Any] = {}

        def after_cold(cold: BackendResult) -> None:
            record_cold(result, cold)
            marks["counters"] = cgroup.counters()
            tick(f"  cold: round trip {cold.round_trip_ms:.0f} ms, init phase {format_ms(result.init_phase_ms)} "
                 f"(handler init {format_ms(result.init_ms)}), {result.threads} thread(s)")
            marks["cpu"] = OtherLoad(lambda: _ours(emulator)).start()

        try:
            emulator.start()
            series = cold_then_warm(lambda: backend.classify(image), config.requests, tick, on_cold=after_cold)
            end = cgroup.counters()
            result.oom_kills = end.oom_kills
            result.memory_peak_mb = rounded(end.memory_peak_mb)
            result.throttling["total"] = _throttling(end)
            if series.error is not None:
                result.requests_ok = len(series.warm)
                _record_failure(result, series.error, series.phase, cgroup, emulator)
                tick(f"  {result.status.upper()}: {result.message}", steps=series.remaining)
                return result
            result.other_cpus = marks["cpu"].stop()
            result.throttling["warm"] = _throttling(end.since(marks["counters"]))
        finally:
            backend.close()
    record_warm(result, series.warm, config.prices)
    tick(f"  warm: {config.metric} p50 {format_ms(result.latency('p50', config.metric))}, p90 "
         f"{format_ms(result.latency('p90', config.metric))}; peak {format_mb(result.memory_peak_mb)} (cgroup) / "
         f"{format_mb(result.peak_rss_mb)} RSS; throttled in {result.throttling['warm']['nr_throttled']:.0f} of "
         f"{result.throttling['warm']['nr_periods']:.0f} periods; ${result.cost_per_million_usd:.2f} per million", steps=0)
    return result



def _say(tick: Callable[..., None], message: str) -> None:
    tick(message, steps=0)



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



def _ours(emulator: Emulator) -> list[psutil.Process]:
    """This process, the emulator and the function: what a sweep's own work runs in."""
    out = []
    for pid in {psutil.Process().pid, *(session_members(emulator.pid) if emulator.pid else [])}:
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return out


