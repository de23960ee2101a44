"""Replay: a scenario's arrivals sent for real, open loop, and the simulation checked against them.

:func:`validate` sends a scenario's arrivals open loop (:mod:`local.measure.core.open_loop`: every
request at its scheduled time, never waiting for earlier answers) to the elastic emulated Lambda
(:class:`local.lambda_env.ElasticPool`, idle timeout scaled down to seconds, a concurrency that 2
CPUs bear) and to ``local serve`` (:class:`local.serve.process.ServeProcess`), simulates them with
figures calibrated on this machine just before, and compares cold starts, throttles, 503s, p50 and
p99 against the goals below. Library code: progress goes to a callback, nothing is printed; the
validation is rendered by :mod:`local.report.replay`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from local.measure.core.images import default_image
from local.measure.core.machine import OtherLoad
from local.measure.core.open_loop import OpenLoopRun, open_loop
from local.measure.core.requests import timed_request
from local.measure.scenario.params import Distribution, FleetParams, LambdaParams
from local.measure.scenario.results import OK, REJECTED, THROTTLED, TIMED_OUT, SideResult, SideRun, summarise

# The goals for the simulation against a real run of the same arrivals.
P50_TOLERANCE = 0.15
P99_TOLERANCE = 0.30
DEFAULT_SEEDS = 20  # simulations of the same arrivals (service times drawn afresh each time)
# Lambda scaled down to this machine: seconds instead of minutes of idle timeout, a few environments,
# and a memory size whose handler uses one thread (1,769 MB = one vCPU), so environments that
# overlap do not fight over the 2 CPUs more than they must.
DEFAULT_IDLE_TIMEOUT_S = 5.0
DEFAULT_MAX_CONCURRENCY = 3
DEFAULT_MEMORY_MB = 1769
# The default scenario, minutes long: a baseline whose gaps are often longer than the idle
# timeout (cold starts from reclaimed environments) and short bursts that need a second or third
# environment (cold starts from concurrency, and throttles at the limit).
DEFAULT_SHAPE = {"rate": 0.3, "spike_every": "40s", "spike_length": "4s", "spike_multiplier": 10.0}


@dataclass
class ReplayRun(OpenLoopRun):
    """An open-loop run of a scenario's arrivals, read in the simulation's terms."""

    @classmethod
    def of(cls, run: OpenLoopRun) -> ReplayRun:
        return cls(run.target, run.samples, run.wall_s, run.stopped)

    def to_side_run(self) -> SideRun:
        """The measured run in the simulation's terms, so one summary serves both."""
        n = len(self.samples)
        status = np.array([s.outcome.status for s in self.samples], dtype=np.int16)
        latency = np.array([s.outcome.latency_ms for s in self.samples])
        cold = np.array([bool(s.outcome.cold_start) for s in self.samples])
        arrivals = np.array([s.scheduled_s for s in self.samples])
        busy = np.where(status == OK, latency, 0.0)
        end = float(arrivals[-1]) if n else 0.0
        run = SideRun("lambda" if self.target == "lambda" else "server", arrivals, latency, status, cold, busy,
                      np.zeros(n), (np.zeros(0), np.zeros(0)), end_s=end)
        return run


DISTURBED_CPUS = 0.3  # other processes using more than this during a replay: its figures are disturbed


# --- validation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One figure, simulated against measured, and whether it meets its goal."""

    side: str
    metric: str
    simulated: float | None
    measured: float | None
    goal: str
    ok: bool
    simulated_range: tuple[float, float] | None = None  # over the seeds, for counts
    within_range: bool | None = None  # counts: the measured one is among those the seeds gave


@dataclass
class Validation:
    scenario: str
    settings: dict[str, Any]
    calibration: dict[str, Any]
    measured: dict[str, SideResult]
    simulated: dict[str, SideResult]
    checks: list[Check]
    lateness_ms: dict[str, dict[str, float]]
    created: str = ""
    notes: list[str] = field(default_factory=list)
    runs: dict[str, OpenLoopRun] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "settings": self.settings, "calibration": self.calibration,
                "measured": {k: v.to_dict() for k, v in self.measured.items()},
                "simulated": {k: v.to_dict() for k, v in self.simulated.items()},
                "checks": [asdict(c) for c in self.checks], "ok": self.ok, "lateness_ms": self.lateness_ms,
                "created": self.created, "notes": self.notes}


def compare_counts(side: str, metric: str, simulated: Sequence[int], measured: int) -> Check:
    """A count must be the same as the simulations' median. Which requests overlap, and so how many
    need a new environment, depends on service times drawn at random: the seeds' range says how
    much the count moves by chance alone, and a measured count inside it is marked as such."""
    median = float(np.median(simulated))
    low, high = float(min(simulated)), float(max(simulated))
    return Check(side, metric, median, float(measured), "same number", round(median) == measured, (low, high),
                 within_range=low <= measured <= high)


def compare_latency(side: str, metric: str, simulated: float | None, measured: float | None, tolerance: float) -> Check:
    ok = simulated is not None and measured is not None and abs(simulated - measured) <= tolerance * measured
    return Check(side, metric, simulated, measured, f"within {tolerance:.0%}", ok)


def simulate_both(arrivals: np.ndarray, lam: LambdaParams, fleet: FleetParams, seeds: int,
                  end_s: float) -> tuple[dict[str, SideResult], dict[str, list[SideResult]]]:
    """The same arrivals simulated ``seeds`` times per side: the pooled latencies' summary and each run."""
    from local.measure.scenario.fleet_sim import simulate_fleet
    from local.measure.scenario.lambda_sim import simulate_lambda

    per_seed: dict[str, list[SideResult]] = {"lambda": [], "server": []}
    pooled: dict[str, list[SideRun]] = {"lambda": [], "server": []}
    for seed in range(seeds):
        for side, run in (("lambda", simulate_lambda(arrivals, lam, seed=seed, end_s=end_s)),
                          ("server", simulate_fleet(arrivals, fleet, seed=seed, end_s=end_s))):
            per_seed[side].append(summarise(run, side))
            pooled[side].append(run)
    merged = {side: summarise(_concatenate(runs), side) for side, runs in pooled.items()}
    for side in merged:  # counts: the median over seeds, not the pooled sum
        for key in ("requests", "served", "cold_starts", "throttled", "rejected", "timeouts", "peak_concurrency",
                    "peak_instances"):
            setattr(merged[side], key, int(np.median([getattr(r, key) for r in per_seed[side]])))
    return merged, per_seed


def _concatenate(runs: list[SideRun]) -> SideRun:
    first = runs[0]
    join = np.concatenate
    return SideRun(first.side, join([r.arrivals for r in runs]), join([r.latency_ms for r in runs]),
                   join([r.status for r in runs]), join([r.cold for r in runs]), join([r.busy_ms for r in runs]),
                   join([r.wait_ms for r in runs]), first.instances, end_s=first.end_s)


def checks_for(simulated: dict[str, SideResult], per_seed: dict[str, list[SideResult]],
               measured: dict[str, SideResult]) -> list[Check]:
    checks = []
    lam_sim, lam_real = per_seed["lambda"], measured["lambda"]
    checks.append(compare_counts("lambda", "cold_starts", [r.cold_starts for r in lam_sim], lam_real.cold_starts))
    checks.append(compare_counts("lambda", "throttled", [r.throttled for r in lam_sim], lam_real.throttled))
    checks.append(compare_counts("server", "rejected", [r.rejected for r in per_seed["server"]], measured["server"].rejected))
    for side in ("lambda", "server"):
        checks.append(compare_latency(side, "p50_ms", simulated[side].p50_ms, measured[side].p50_ms, P50_TOLERANCE))
        checks.append(compare_latency(side, "p99_ms", simulated[side].p99_ms, measured[side].p99_ms, P99_TOLERANCE))
    return checks


def statuses(run: OpenLoopRun) -> dict[str, int]:
    """Outcomes by kind, for notes."""
    counts: dict[str, int] = {}
    for s in run.samples:
        kind = {OK: "200", THROTTLED: "429", REJECTED: "503", TIMED_OUT: "504"}.get(s.outcome.status, f"other {s.outcome.status}")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _pooled(before: Distribution, after: Distribution, what: str, drift: list[str]) -> Distribution:
    """Before and after a replay, as one distribution; the drift between them goes into ``drift``."""
    drift.append(f"{what}: p50 {before.p50_ms:.1f} ms measured before the replay, {after.p50_ms:.1f} ms after")
    if before.samples and after.samples:
        return Distribution.measured(before.samples + after.samples, f"{before.source}; pooled with as many after the replay")
    return before


def _quiet(message: str, fraction: float | None = None) -> None:
    pass


def arrivals_for(traffic: Any, duration_s: float, speedup: float = 1.0, seed: int = 0) -> tuple[np.ndarray, str]:
    """The schedule to replay: a shape over ``duration_s``, or a file's arrivals sped up ``speedup``
    times and cut at ``duration_s`` (replay time)."""
    from local.measure.scenario.traffic import Shape, format_duration

    if speedup <= 0:
        raise ValueError(f"the speed-up must be positive, got {speedup}")
    if isinstance(traffic, Shape):
        return traffic.arrivals(duration_s, seed), f"{traffic.describe()}, {format_duration(duration_s)}"
    times = traffic.times / speedup
    times = times[times <= duration_s]
    faster = f", {speedup:g}x faster" if speedup != 1 else ""
    return times, f"{Path(traffic.source).name} ({traffic.format}){faster}, first {format_duration(duration_s)}"


def validate(arrivals: np.ndarray, *, model: Path, scenario: str, memory_mb: int = DEFAULT_MEMORY_MB,
             idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
             server_workers: int = 1, server_queue: int = 16, seeds: int = DEFAULT_SEEDS, image: bytes | None = None,
             calibration_requests: int = 60, cold_starts: int = 8, overlapping_pairs: int = 4, again_after: bool = True,
             on_progress: Callable[[str, float | None], None] | None = None,
             stop: threading.Event | None = None) -> Validation:
    """Calibrate on this machine, replay ``arrivals`` to the elastic emulator and to ``local serve``,
    simulate them, and compare. Warm figures are measured before and (``again_after``) after each
    replay. ``on_progress(message, fraction or None)``."""
    import datetime as dt

    from local.clients.emulator import EmulatorBackend
    from local.clients.http import HttpBackend
    from local.lambda_env import ElasticPool
    from local.measure.scenario import calibrate
    from local.serve.process import ServeProcess

    say = on_progress or _quiet
    image = image or default_image()
    arrivals = np.asarray(arrivals, dtype=float)
    end_s = float(arrivals[-1]) if arrivals.size else 0.0
    serve_args = ("--runtime", "onnxruntime", "--workers", str(server_workers), "--max-concurrency", "1",
                  "--max-queue", str(server_queue))

    # This machine is shared and its speed drifts: each side's warm figures are measured right before
    # and right after its replay, and pooled (the drift between the two is noted).
    runs: dict[str, OpenLoopRun] = {}
    drift: list[str] = []
    load = {"lambda": OtherLoad(), "server": OtherLoad()}
    say("calibrating the Lambda side on this machine (cold starts and warm requests on the emulator)", None)
    figures = calibrate.measure_lambda(model, memory_mb, image, warm=calibration_requests, cold=cold_starts,
                                       overlapping_pairs=overlapping_pairs,
                                       on_progress=lambda m, f=None: say("  " + m, f))
    say(f"replaying {arrivals.size} arrivals to the elastic emulator ({end_s:.0f} s)", 0.0)
    with ElasticPool(model, max_concurrency=max_concurrency, idle_timeout_s=idle_timeout_s, memory_mb=memory_mb) as pool:
        emulated = EmulatorBackend(pool, name="elastic emulator", stop_on_close=False)
        with load["lambda"]:
            runs["lambda"] = open_loop(arrivals, lambda i: timed_request(emulated, image), stop=stop, target="lambda",
                                       on_progress=lambda done, total: say(f"lambda: {done} of {total} answered",
                                                                           done / max(total, 1)))
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt
    if again_after:
        say("warm requests on the emulator again, after the replay", None)
        after = calibrate.measure_lambda(model, memory_mb, image, warm=calibration_requests, cold=0,
                                         on_progress=lambda m, f=None: say("  " + m, f))
        figures = replace(figures, warm_ms=_pooled(figures.warm_ms, after.warm_ms, "lambda warm", drift))
    say("calibrating the server side on this machine (`local serve`)", None)
    server = calibrate.measure_server(model, image, requests=calibration_requests, serve_args=serve_args,
                                      on_progress=lambda m, f=None: say("  " + m, f))
    say(f"replaying {arrivals.size} arrivals to `local serve` ({end_s:.0f} s)", 0.0)
    with ServeProcess(model, *serve_args) as process:
        served = HttpBackend(process.url + "/classify", kind="server", name="local serve", connect_retries=0)
        try:
            with load["server"]:
                runs["server"] = open_loop(arrivals, lambda i: timed_request(served, image), stop=stop, target="server",
                                           on_progress=lambda done, total: say(f"server: {done} of {total} answered",
                                                                               done / max(total, 1)))
        finally:
            served.close()
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt
    if again_after:
        say("requests to `local serve` again, after the replay", None)
        server_after = calibrate.measure_server(model, image, requests=calibration_requests, serve_args=serve_args,
                                                on_progress=lambda m, f=None: say("  " + m, f))
        server = replace(server, service_ms=_pooled(server.service_ms, server_after.service_ms, "server", drift))
    calibration = calibrate.Calibration.of(model, memory_mb, figures, server)

    measured = {side: summarise(ReplayRun.of(run).to_side_run(), side) for side, run in runs.items()}
    lam = calibration.emulator_params(idle_timeout_s=idle_timeout_s, concurrency_limit=max_concurrency, api_timeout_s=None)
    fleet = calibration.fleet_params(workers=server_workers, queue=server_queue * server_workers, instances=1)
    say(f"simulating the same arrivals {seeds} times", None)
    simulated, per_seed = simulate_both(arrivals, lam, fleet, seeds, end_s)
    checks = checks_for(simulated, per_seed, measured)
    notes = [f"{side}: " + ", ".join(f"{n} × {k}" for k, n in sorted(statuses(run).items())) for side, run in runs.items()]
    notes += drift
    for side, phase in load.items():
        if phase.cpus is not None and phase.cpus > DISTURBED_CPUS:
            notes.append(f"DISTURBED: other processes used {phase.cpus:.1f} of this machine's CPUs while the {side} side was "
                         "replayed; its latencies are not this system's alone (re-run on a quiet machine)")
    settings = {"requests": int(arrivals.size), "duration_s": end_s, "memory_mb": memory_mb,
                "idle_timeout_s": idle_timeout_s, "max_concurrency": max_concurrency, "server_workers": server_workers,
                "server_queue": server_queue, "seeds": seeds, "model": str(model),
                "other_cpus": {side: phase.cpus for side, phase in load.items()}}
    return Validation(scenario, settings, calibration.to_dict(), measured, simulated, checks,
                      {side: run.lateness_ms for side, run in runs.items()},
                      created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), notes=notes, runs=runs)
