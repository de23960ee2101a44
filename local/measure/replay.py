"""Replay: a scenario's arrivals sent for real, open loop, and the simulation checked against them.

:func:`validate` sends a scenario's arrivals open loop (:mod:`local.measure.core.open_loop`: every
request at its scheduled time, never waiting for earlier answers) to the elastic emulated Lambda
(:class:`local.lambda_env.ElasticPool`, idle timeout scaled down to seconds, a concurrency that 2
CPUs bear) and to the server side: ``local serve`` (:class:`local.serve.process.ServeProcess`), or
(``fleet=FleetTarget(...)``) ``local fleet`` (:class:`local.fleet.Fleet`: K instances of one CPU
each behind HAProxy, fixed or autoscaled). It simulates them with figures calibrated on this machine
just before (for the fleet: measured through the fleet itself, one instance's time as the fleet runs
it), and compares cold starts, throttles, 503s, p50 and p99 against the goals below; an autoscaled
fleet's instance count over time is kept, measured and simulated. Library code: progress goes to a
callback, nothing is printed; the validation is rendered by :mod:`local.report.replay`.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from local.measure.core.images import default_image
from local.measure.core.machine import OtherLoad
from local.measure.core.open_loop import LEAD_S, OpenLoopRun, open_loop
from local.measure.core.requests import timed_request
from local.measure.scenario.params import Distribution, FleetParams, LambdaParams
from local.measure.scenario.results import OK, REJECTED, THROTTLED, TIMED_OUT, SideResult, SideRun, summarise

if TYPE_CHECKING:
    from local.fleet import AutoscalePolicy
    from local.measure.scenario.calibrate import ServerFigures

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
# The fleet on this machine: K instances of one CPU each (2 CPUs: K = 2), and, autoscaled (from one up
# to K), target tracking's one-minute evaluation period and 300 s scale-in cooldown scaled down to
# seconds, as the idle timeout is above. The boot delay is not a setting: the fleet measures its own.
DEFAULT_FLEET_INSTANCES = 2
DEFAULT_EVALUATION_S = 5.0
DEFAULT_COOLDOWN_S = 15.0
DEFAULT_TARGET = 0.5


@dataclass(frozen=True)
class FleetTarget:
    """The server side as ``local fleet``: ``instances`` behind HAProxy; with ``autoscale``, from one
    instance up to ``instances``, by the target-tracking rule the simulation shares."""

    instances: int = DEFAULT_FLEET_INSTANCES
    autoscale: bool = False
    target: float = DEFAULT_TARGET
    evaluation_s: float = DEFAULT_EVALUATION_S
    cooldown_s: float = DEFAULT_COOLDOWN_S

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ValueError(f"a fleet needs at least one instance, got {self.instances}")
        self.policy()  # the autoscaler's settings are checked now

    @property
    def start(self) -> int:
        """Instances at the start: one when autoscaled (its minimum), else all."""
        return 1 if self.autoscale else self.instances

    def policy(self) -> AutoscalePolicy | None:
        from local.fleet import AutoscalePolicy

        if not self.autoscale:
            return None
        return AutoscalePolicy(target=self.target, minimum=1, maximum=self.instances, evaluation_s=self.evaluation_s,
                               cooldown_s=self.cooldown_s)

    def describe(self) -> str:
        if not self.autoscale:
            return f"`local fleet`, {self.instances} instances behind HAProxy"
        return (f"`local fleet` autoscaled 1..{self.instances} at {self.target:.0%} CPU (evaluation every "
                f"{self.evaluation_s:g} s, scale-in cooldown {self.cooldown_s:g} s), behind HAProxy")


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


Say = Callable[[str, float | None], None]  # (message, fraction or None)
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
    # An autoscaled fleet's instances over the replay, as steps [(seconds, count from then on)]:
    # "measured" (the fleet's history), "simulated" (one list per seed); "boot_s" the boot simulated.
    instances: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def stem(self) -> str:
        """The files' name: ``replay``, ``replay-fleet`` or ``replay-fleet-autoscaled``."""
        server = self.settings.get("server", "serve")
        if server != "fleet":
            return "replay"
        return "replay-fleet-autoscaled" if self.settings.get("fleet", {}).get("autoscale") else "replay-fleet"

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "settings": self.settings, "calibration": self.calibration,
                "measured": {k: v.to_dict() for k, v in self.measured.items()},
                "simulated": {k: v.to_dict() for k, v in self.simulated.items()},
                "checks": [asdict(c) for c in self.checks], "ok": self.ok, "lateness_ms": self.lateness_ms,
                "created": self.created, "notes": self.notes, "instances": self.instances}


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


def simulate_sides(arrivals: np.ndarray, lam: LambdaParams | None, fleet: FleetParams, seeds: int, end_s: float
                   ) -> tuple[dict[str, SideResult], dict[str, list[SideResult]], list[SideRun]]:
    """The same arrivals simulated ``seeds`` times per side (no Lambda side without ``lam``): the
    pooled latencies' summary, each run's summary, and the server side's runs (their instances over time)."""
    from local.measure.scenario.fleet_sim import simulate_fleet
    from local.measure.scenario.lambda_sim import simulate_lambda

    sides = ("lambda", "server") if lam is not None else ("server",)
    per_seed: dict[str, list[SideResult]] = {side: [] for side in sides}
    pooled: dict[str, list[SideRun]] = {side: [] for side in sides}
    for seed in range(seeds):
        if lam is not None:
            pooled["lambda"].append(simulate_lambda(arrivals, lam, seed=seed, end_s=end_s))
        pooled["server"].append(simulate_fleet(arrivals, fleet, seed=seed, end_s=end_s))
        for side in sides:
            per_seed[side].append(summarise(pooled[side][-1], side))
    merged = {side: summarise(_concatenate(runs), side) for side, runs in pooled.items()}
    for side in merged:  # counts: the median over seeds, not the pooled sum
        for key in ("requests", "served", "cold_starts", "throttled", "rejected", "timeouts", "peak_concurrency",
                    "peak_instances"):
            setattr(merged[side], key, int(np.median([getattr(r, key) for r in per_seed[side]])))
    return merged, per_seed, pooled["server"]


def _concatenate(runs: list[SideRun]) -> SideRun:
    first = runs[0]
    join = np.concatenate
    return SideRun(first.side, join([r.arrivals for r in runs]), join([r.latency_ms for r in runs]),
                   join([r.status for r in runs]), join([r.cold for r in runs]), join([r.busy_ms for r in runs]),
                   join([r.wait_ms for r in runs]), first.instances, end_s=first.end_s)


def checks_for(simulated: dict[str, SideResult], per_seed: dict[str, list[SideResult]],
               measured: dict[str, SideResult]) -> list[Check]:
    """Every goal of the sides replayed (Lambda's only when it was)."""
    checks = []
    if "lambda" in measured:
        lam_sim, lam_real = per_seed["lambda"], measured["lambda"]
        checks.append(compare_counts("lambda", "cold_starts", [r.cold_starts for r in lam_sim], lam_real.cold_starts))
        checks.append(compare_counts("lambda", "throttled", [r.throttled for r in lam_sim], lam_real.throttled))
    checks.append(compare_counts("server", "rejected", [r.rejected for r in per_seed["server"]], measured["server"].rejected))
    for side in [side for side in ("lambda", "server") if side in measured]:
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


def steps(times: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray, end_s: float) -> list[tuple[float, int]]:
    """A step function (a count from each time on) over [0, ``end_s``]: the count at 0 first, then every
    change up to ``end_s``, repeats dropped."""
    out: list[tuple[float, int]] = []
    for t, n in zip(times, counts):
        t, n = max(0.0, float(t)), int(n)
        if t > end_s:
            break
        if out and out[-1][0] == t:
            out[-1] = (t, n)
        elif not out or out[-1][1] != n:
            out.append((round(t, 3), n))
    return out or [(0.0, 0)]


def instance_seconds(series: list[tuple[float, int]], end_s: float) -> float:
    """The area under a step function of instances over [0, ``end_s``]."""
    bounds = [t for t, _ in series[1:]] + [end_s]
    return float(sum(n * max(0.0, b - t) for (t, n), b in zip(series, bounds)))


def _server_calibration(model: Path, server: ServerFigures) -> dict[str, Any]:
    """The server's figures where no Lambda side was calibrated (:meth:`Calibration.to_dict`'s server part)."""
    service = server.service_ms
    return {"model": str(model), "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "sources": {"server_service_ms": service.describe(),
                        "server_overhead_ms": f"{server.overhead_ms:.1f} ms of a round trip outside the lane: the round "
                                              f"trip less the answer's handler_ms, median ({server.source})"},
            "server": {"service_ms": {"samples": list(service.samples), "median_ms": service.p50_ms, "p90_ms": service.p90_ms,
                                      "source": service.source},
                       "source": server.source, "overhead_ms": server.overhead_ms}}


def validate(arrivals: np.ndarray, *, model: Path, scenario: str, memory_mb: int = DEFAULT_MEMORY_MB,
             idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
             server_workers: int = 1, server_queue: int = 16, fleet: FleetTarget | None = None, lambda_side: bool = True,
             seeds: int = DEFAULT_SEEDS, image: bytes | None = None, calibration_requests: int = 60, cold_starts: int = 8,
             overlapping_pairs: int = 4, again_after: bool = True,
             on_progress: Callable[[str, float | None], None] | None = None,
             stop: threading.Event | None = None) -> Validation:
    """Calibrate on this machine, replay ``arrivals`` to the elastic emulator (unless not
    ``lambda_side``) and to ``local serve`` (or to ``local fleet``: ``fleet``), simulate them, and
    compare. Warm figures are measured before and (``again_after``) after each replay.
    ``on_progress(message, fraction or None)``."""
    from local.measure.scenario import calibrate

    say = on_progress or _quiet
    image = image or default_image()
    arrivals = np.asarray(arrivals, dtype=float)
    end_s = float(arrivals[-1]) if arrivals.size else 0.0
    # This machine is shared and its speed drifts: each side's warm figures are measured right before
    # and right after its replay, and pooled (the drift between the two is noted).
    runs: dict[str, OpenLoopRun] = {}
    drift: list[str] = []
    load: dict[str, OtherLoad] = {}
    lam_figures = None
    if lambda_side:
        load["lambda"] = OtherLoad()
        runs["lambda"], lam_figures = _replay_lambda(arrivals, model, image, memory_mb, idle_timeout_s, max_concurrency,
                                                     calibration_requests, cold_starts, overlapping_pairs, again_after,
                                                     load["lambda"], drift, say, stop)
    load["server"] = OtherLoad()
    instances: dict[str, Any] = {}
    if fleet is None:
        runs["server"], server = _replay_serve(arrivals, model, image, server_workers, server_queue, calibration_requests,
                                               again_after, load["server"], drift, say, stop)
        params = FleetParams(service_ms=server.service_ms, overhead_ms=server.overhead_ms, workers=server_workers,
                             queue=server_queue * server_workers, instances=1)
    else:
        runs["server"], server, params, instances = _replay_fleet(arrivals, model, image, fleet, server_queue,
                                                                  calibration_requests, again_after, load["server"],
                                                                  drift, say, stop)
    measured = {side: summarise(ReplayRun.of(run).to_side_run(), side) for side, run in runs.items()}
    lam = None
    if lam_figures is not None:
        calibration = calibrate.Calibration.of(model, memory_mb, lam_figures, server)
        lam = calibration.emulator_params(idle_timeout_s=idle_timeout_s, concurrency_limit=max_concurrency,
                                          api_timeout_s=None)
        calibrated = calibration.to_dict()
    else:
        calibrated = _server_calibration(model, server)
    say(f"simulating the same arrivals {seeds} times", None)
    simulated, per_seed, fleet_runs = simulate_sides(arrivals, lam, params, seeds, end_s)
    checks = checks_for(simulated, per_seed, measured)
    notes = [f"{side}: " + ", ".join(f"{n} × {k}" for k, n in sorted(statuses(run).items())) for side, run in runs.items()]
    notes += drift
    if fleet is not None and fleet.autoscale:
        instances["simulated"] = [steps(*run.instances, end_s) for run in fleet_runs]
        simulated_s = [instance_seconds(series, end_s) for series in instances["simulated"]]
        notes.append(f"instance-seconds over the replay: {instance_seconds(instances['measured'], end_s):.0f} measured, "
                     f"{np.median(simulated_s):.0f} simulated (median; {min(simulated_s):.0f}–{max(simulated_s):.0f} over "
                     "the seeds)")
    for side, phase in load.items():
        if phase.cpus is not None and phase.cpus > DISTURBED_CPUS:
            notes.append(f"DISTURBED: other processes used {phase.cpus:.1f} of this machine's CPUs while the {side} side was "
                         "replayed; its latencies are not this system's alone (re-run on a quiet machine)")
    settings = {"requests": int(arrivals.size), "duration_s": end_s, "memory_mb": memory_mb,
                "idle_timeout_s": idle_timeout_s, "max_concurrency": max_concurrency, "server_workers": server_workers,
                "server_queue": server_queue, "seeds": seeds, "model": str(model), "lambda": lambda_side,
                "server": "serve" if fleet is None else "fleet", "fleet": asdict(fleet) if fleet is not None else None,
                "lanes_per_instance": params.lanes, "other_cpus": {side: phase.cpus for side, phase in load.items()}}
    return Validation(scenario, settings, calibrated, measured, simulated, checks,
                      {side: run.lateness_ms for side, run in runs.items()},
                      created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), notes=notes, runs=runs,
                      instances=instances)



def _send(arrivals: np.ndarray, backend: Any, image: bytes, target: str, stop: threading.Event | None,
          say: Say) -> OpenLoopRun:
    run = open_loop(arrivals, lambda i: timed_request(backend, image), stop=stop, target=target,
                    on_progress=lambda done, total: say(f"{target}: {done} of {total} answered", done / max(total, 1)))
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt
    return run


def _replay_lambda(arrivals: np.ndarray, model: Path, image: bytes, memory_mb: int, idle_timeout_s: float,
                   max_concurrency: int, calibration_requests: int, cold_starts: int, overlapping_pairs: int,
                   again_after: bool, load: OtherLoad, drift: list[str], say: Say,
                   stop: threading.Event | None) -> tuple[OpenLoopRun, Any]:
    """The Lambda side: calibrated on the emulator, then the arrivals to the elastic emulator."""
    from local.clients.emulator import EmulatorBackend
    from local.lambda_env import ElasticPool
    from local.measure.scenario import calibrate

    say("calibrating the Lambda side on this machine (cold starts and warm requests on the emulator)", None)
    figures = calibrate.measure_lambda(model, memory_mb, image, warm=calibration_requests, cold=cold_starts,
                                       overlapping_pairs=overlapping_pairs,
                                       on_progress=lambda m, f=None: say("  " + m, f))
    say(f"replaying {arrivals.size} arrivals to the elastic emulator ({arrivals[-1] if arrivals.size else 0:.0f} s)", 0.0)
    with ElasticPool(model, max_concurrency=max_concurrency, idle_timeout_s=idle_timeout_s, memory_mb=memory_mb) as pool:
        emulated = EmulatorBackend(pool, name="elastic emulator", stop_on_close=False)
        with load:
            run = _send(arrivals, emulated, image, "lambda", stop, say)
    if again_after:
        say("warm requests on the emulator again, after the replay", None)
        after = calibrate.measure_lambda(model, memory_mb, image, warm=calibration_requests, cold=0,
                                         on_progress=lambda m, f=None: say("  " + m, f))
        figures = replace(figures, warm_ms=_pooled(figures.warm_ms, after.warm_ms, "lambda warm", drift))
    return run, figures


def _replay_serve(arrivals: np.ndarray, model: Path, image: bytes, workers: int, queue: int, calibration_requests: int,
                  again_after: bool, load: OtherLoad, drift: list[str], say: Say,
                  stop: threading.Event | None) -> tuple[OpenLoopRun, ServerFigures]:
    """The server side as one ``local serve``: calibrated on a fresh one, then the arrivals to another."""
    from local.clients.http import HttpBackend
    from local.measure.scenario import calibrate
    from local.serve.process import ServeProcess

    serve_args = ("--runtime", "onnxruntime", "--workers", str(workers), "--max-concurrency", "1", "--max-queue", str(queue))
    say("calibrating the server side on this machine (`local serve`)", None)
    server = calibrate.measure_server(model, image, requests=calibration_requests, serve_args=serve_args,
                                      on_progress=lambda m, f=None: say("  " + m, f))
    say(f"replaying {arrivals.size} arrivals to `local serve` ({arrivals[-1] if arrivals.size else 0:.0f} s)", 0.0)
    with ServeProcess(model, *serve_args) as process:
        served = HttpBackend(process.url + "/classify", kind="server", name="local serve", connect_retries=0)
        try:
            with load:
                run = _send(arrivals, served, image, "server", stop, say)
        finally:
            served.close()
    if again_after:
        say("requests to `local serve` again, after the replay", None)
        after = calibrate.measure_server(model, image, requests=calibration_requests, serve_args=serve_args,
                                         on_progress=lambda m, f=None: say("  " + m, f))
        server = replace(server, service_ms=_pooled(server.service_ms, after.service_ms, "server", drift))
    return run, server


def _replay_fleet(arrivals: np.ndarray, model: Path, image: bytes, target: FleetTarget, queue: int,
                  calibration_requests: int, again_after: bool, load: OtherLoad, drift: list[str], say: Say,
                  stop: threading.Event | None) -> tuple[OpenLoopRun, ServerFigures, FleetParams, dict[str, Any]]:
    """The server side as ``local fleet``: started, calibrated through HAProxy (one instance's time as
    the fleet runs it, the balancer's hop included), sent the arrivals, calibrated again; and the
    simulation's fleet of the same shape with those figures and the boot the fleet measured."""
    import time

    from lambda_onnx.resources import server_split
    from local.clients.http import HttpBackend
    from local.fleet import Fleet
    from local.measure.scenario import calibrate

    serve_args = ("--runtime", "onnxruntime", "--workers", "1", "--max-queue", str(queue))
    say(f"starting {target.describe()}", None)
    with Fleet(model, target.start, serve_args=serve_args, autoscale=target.policy(),
               on_event=lambda line: say("  fleet: " + line, None)) as fleet:
        split = server_split(fleet.cpus_per_instance)  # what each instance runs in its CPU quota
        lanes = split.workers * split.lanes
        boots = fleet.boot_times()
        say("calibrating the server side through the fleet (requests one at a time through HAProxy)", None)
        server = calibrate.measure_server(model, image, requests=calibration_requests, url=fleet.url, lanes=lanes,
                                          on_progress=lambda m, f=None: say("  " + m, f))
        say(f"replaying {arrivals.size} arrivals to the fleet ({arrivals[-1] if arrivals.size else 0:.0f} s)", 0.0)
        backend = HttpBackend(fleet.url + "/classify", kind="server", name="local fleet", connect_retries=0)
        try:
            with load:
                origin = time.monotonic() + LEAD_S  # the open loop's t = 0, as it sets it
                fleet.restart_autoscaler(at=origin)  # its evaluations on the simulation's clock: every period from t = 0
                run = _send(arrivals, backend, image, "server", stop, say)
            history, during = fleet.history(), fleet.boot_times()[len(boots):]
        finally:
            backend.close()
        if again_after:
            say("requests through the fleet again, after the replay", None)
            after = calibrate.measure_server(model, image, requests=calibration_requests, url=fleet.url, lanes=lanes,
                                             on_progress=lambda m, f=None: say("  " + m, f))
            server = replace(server, service_ms=_pooled(server.service_ms, after.service_ms, "server", drift))
        offset = fleet.started_at - origin
    end_s = float(arrivals[-1]) if arrivals.size else 0.0
    boot_s = float(np.median(boots))
    params = FleetParams(service_ms=server.service_ms, overhead_ms=server.overhead_ms, workers=lanes, queue=queue,
                         instances=target.start, autoscale=target.autoscale, target_utilisation=target.target,
                         min_instances=1, max_instances=target.instances, boot_s=boot_s,
                         evaluation_s=target.evaluation_s, scale_in_cooldown_s=target.cooldown_s, load_balancer=False)
    instances: dict[str, Any] = {}
    if target.autoscale:
        instances = {"measured": steps([t + offset for t, _ in history], [n for _, n in history], end_s),
                     "boot_s": boot_s, "boots_during_s": [round(b, 2) for b in during]}
        if during:
            drift.append(f"instances launched during the replay booted in {', '.join(f'{b:.1f}' for b in during)} s "
                         f"(the simulation's boot: {boot_s:.1f} s, measured as the fleet started)")
    return run, server, params, instances
