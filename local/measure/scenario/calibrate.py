"""Where the simulation's figures come from, and saying so for each one.

Lambda side (warm and cold latency, billed INIT, the invoke overhead not billed), first found of:

1. a real function's REPORT lines (``--report-log FILE``: a CloudWatch log export or a tail):
   ``Duration`` of warm invokes, ``Init Duration`` + ``Duration`` of cold ones. These are the
   function's own times; what API Gateway and the network add is not in them;
2. this machine's power-tuning sweep (``artifacts/tune/tune.json``) at the memory size and
   precision asked, if it was measured on this CPU: only percentiles are kept there, so latencies
   are lognormal fits to its p50 and p90;
3. this command's own earlier on-the-spot measurement (``artifacts/scenario/calibration.json``),
   same model, memory size and CPU;
4. measured now, briefly (a few cold starts and warm requests on the elastic emulator).

Server side (a request's service time on an instance with every lane busy, its capacity as the load
test measures it): the earlier on-the-spot measurement if it was taken under that load, else measured
now against ``local serve``: requests one at a time (the spread, and the part of a round trip outside
the lane), then closed-loop load from the load test's generator (:mod:`local.measure.core.http_load`) with
twice as many connections as lanes, whose answers per second give the lane time per request every lane
busy (lanes / goodput); the one-at-a-time distribution's lane part is scaled to it. With
``--calibrate never`` and nothing better, ``artifacts/bench/bench.json``'s one-request-at-a-time time
is used, and said to be that. :meth:`Calibration.fleet_params` carries the figures from this machine's
CPU layout (``threads_per_core``) to an instance type's (:func:`~.params.lane_time_factor`).

On-the-spot Lambda figures are not CPU-limited to the memory size (that needs the cgroups of
``python -m local tune``); only the handler's thread count follows it. Every figure's source is in
:attr:`Calibration.sources`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from local.defaults import BENCH_OUT, SCENARIO_OUT, TUNE_OUT
from local.measure import cost
from local.measure.scenario.params import DEFAULT_SMT_GAIN, Distribution, FleetParams, LambdaParams, lane_time_factor

DEFAULT_TUNE_JSON = TUNE_OUT / "tune.json"
DEFAULT_BENCH_JSON = BENCH_OUT / "bench.json"
DEFAULT_CACHE = SCENARIO_OUT / "calibration.json"
WARM_REQUESTS = 60  # enough to resample them as measured (params.MIN_EMPIRICAL_SAMPLES)
COLD_STARTS = 5
SERVER_REQUESTS = 60
LOADED_SECONDS = 10.0  # closed-loop load with every lane busy (after a second's warm-up)
LOADED_CONNECTIONS_PER_LANE = 2  # every lane busy, and one request waiting for each
MEASURE_CHOICES = ("auto", "always", "never")
WARM_PAUSE_S = (0.05, 0.5)  # random pause before each measured warm request
Say = Callable[..., None]  # (message, fraction or None)


def _quiet(message: str, fraction: float | None = None) -> None:
    pass


class CalibrationError(ValueError):
    """No figures could be found or measured for a side, and why."""


@dataclass(frozen=True)
class LambdaFigures:
    warm_ms: Distribution
    cold_ms: Distribution
    init_ms: float
    overhead_ms: float
    memory_mb: int
    source: str
    cold_overlap_ms: Distribution | None = None  # cold starts measured in overlapping pairs (this machine only)
    warm_during_cold_ms: Distribution | None = None  # warm requests while another environment starts (this machine)
    # A SnapStart function's REPORT lines (Restore Duration, Billed Restore Duration), medians; None: estimated
    # (local.measure.scenario.params.restore_estimate_ms).
    restore_ms: float | None = None
    billed_restore_ms: float | None = None


@dataclass(frozen=True)
class ServerFigures:
    service_ms: Distribution
    source: str
    overhead_ms: float = 0.0  # of a round trip, outside the lane (FleetParams.overhead_ms)
    lanes: int = 0  # lanes busy while measured (local serve's on this machine); 0: one request at a time
    threads_per_core: int = 1  # this machine's CPU layout when measured (lscpu's "Thread(s) per core")
    worker_ms: float | None = None  # a lane's time per request with every lane busy (lanes / goodput)

    @property
    def all_lanes_busy(self) -> bool:
        return self.lanes > 0 and self.worker_ms is not None


@dataclass
class Calibration:
    """The figures both sides are simulated with, and where each came from."""

    model: str
    memory_mb: int
    lambda_: LambdaFigures
    server: ServerFigures
    created: str = ""
    machine: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: Path | str, memory_mb: int, lam: LambdaFigures, server: ServerFigures) -> Calibration:
        return cls(str(model), memory_mb, lam, server, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                   _machine())

    @property
    def sources(self) -> dict[str, str]:
        lam = self.lambda_
        return {"lambda_warm_ms": lam.warm_ms.describe(), "lambda_cold_ms": lam.cold_ms.describe(),
                "lambda_init_ms": f"{lam.init_ms:.0f} ms billed per cold start ({lam.source})",
                "lambda_overhead_ms": f"{lam.overhead_ms:.1f} ms of a warm round trip not billed ({lam.source})",
                "server_service_ms": self.server.service_ms.describe() + (
                    f"; every one of {self.server.lanes} lanes busy: {self.server.worker_ms:.1f} ms a lane per request, "
                    f"{self.server.threads_per_core} thread(s) per core here" if self.server.all_lanes_busy else
                    "; ONE REQUEST AT A TIME, not with every lane busy: the fleet's capacity is overstated "
                    "(--calibrate always measures it)"),
                "server_overhead_ms": (f"{self.server.overhead_ms:.1f} ms of a round trip outside the lane: the round "
                                       f"trip less the answer's handler_ms, median ({self.server.source})")}

    def lambda_params(self, **overrides: Any) -> LambdaParams:
        lam = self.lambda_
        prices = overrides.pop("prices", cost.CostInputs())
        memory = overrides.pop("memory_mb", lam.memory_mb)
        return LambdaParams(warm_ms=lam.warm_ms, cold_ms=lam.cold_ms, init_ms=lam.init_ms, overhead_ms=lam.overhead_ms,
                            memory_mb=memory, prices=replace(prices, memory_mb=memory), **overrides)

    def emulator_params(self, **overrides: Any) -> LambdaParams:
        """Parameters of the emulator on this machine rather than of Lambda: overlapping cold starts
        share the CPUs (the replay's validation simulates what it replays)."""
        return self.lambda_params(cold_overlap_ms=self.lambda_.cold_overlap_ms,
                                  warm_during_cold_ms=self.lambda_.warm_during_cold_ms, **overrides)

    def fleet_params(self, instance: cost.InstanceType | None = None, smt_gain: float = DEFAULT_SMT_GAIN,
                     **overrides: Any) -> FleetParams:
        """The fleet with these figures: as measured on this machine (no ``instance``: the replay's
        validation), or on ``instance``, a lane's part of the service time carried from this machine's
        CPU layout to the type's (:func:`~.params.lane_time_factor`; the same per-core speed assumed)."""
        server = self.server
        if instance is None:
            return FleetParams(service_ms=server.service_ms, **{"overhead_ms": server.overhead_ms, **overrides})
        factor = lane_time_factor(server.threads_per_core, instance.threads_per_core, smt_gain)
        service = server.service_ms.scaled_above(
            server.overhead_ms, factor,
            f"{server.service_ms.source}; a lane's part x {factor:.3g} for {instance.name} ({instance.threads_per_core} "
            f"thread(s) per core there, {server.threads_per_core} here, SMT gain {smt_gain:g})")
        return FleetParams(service_ms=service, instance=instance, **{"overhead_ms": server.overhead_ms, **overrides})

    def summary(self) -> dict[str, Any]:
        """What a result carries: the figures' shape and sources, not every sample, and the model by its file name
        (results are shown to a shared app's visitors: no host path)."""
        lam = self.lambda_
        return {"model": Path(self.model).name, "memory_mb": self.memory_mb, "created": self.created, "sources": self.sources,
                "lambda_warm_ms": lam.warm_ms.to_dict(), "lambda_cold_ms": lam.cold_ms.to_dict(),
                "lambda_init_ms": round(lam.init_ms, 1), "lambda_overhead_ms": round(lam.overhead_ms, 2),
                "server_service_ms": self.server.service_ms.to_dict(), "server_overhead_ms": round(self.server.overhead_ms, 2)}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "memory_mb": self.memory_mb, "created": self.created, "machine": self.machine,
                "sources": self.sources,
                "lambda": {**asdict(self.lambda_), "warm_ms": _dist(self.lambda_.warm_ms),
                           "cold_ms": _dist(self.lambda_.cold_ms),
                           "cold_overlap_ms": _dist(self.lambda_.cold_overlap_ms) if self.lambda_.cold_overlap_ms else None,
                           "warm_during_cold_ms": (_dist(self.lambda_.warm_during_cold_ms)
                                                   if self.lambda_.warm_during_cold_ms else None)},
                "server": {"service_ms": _dist(self.server.service_ms), "source": self.server.source,
                           "overhead_ms": self.server.overhead_ms, "lanes": self.server.lanes,
                           "threads_per_core": self.server.threads_per_core, "worker_ms": self.server.worker_ms}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        lam = data["lambda"]
        overlap, contended = lam.get("cold_overlap_ms"), lam.get("warm_during_cold_ms")
        figures = LambdaFigures(Distribution(**_undist(lam["warm_ms"])), Distribution(**_undist(lam["cold_ms"])),
                                float(lam["init_ms"]), float(lam["overhead_ms"]), int(lam["memory_mb"]), lam["source"],
                                Distribution(**_undist(overlap)) if overlap else None,
                                Distribution(**_undist(contended)) if contended else None,
                                lam.get("restore_ms"), lam.get("billed_restore_ms"))
        saved = data["server"]
        server = ServerFigures(Distribution(**_undist(saved["service_ms"])), saved["source"],
                               float(saved.get("overhead_ms", 0.0)), int(saved.get("lanes", 0)),
                               int(saved.get("threads_per_core", 1)),
                               float(saved["worker_ms"]) if saved.get("worker_ms") is not None else None)
        return cls(data["model"], int(data["memory_mb"]), figures, server, data.get("created", ""), data.get("machine", {}))


def _dist(d: Distribution) -> dict[str, Any]:
    return {"samples": list(d.samples), "median_ms": d.median_ms, "p90_ms": d.p90_ms, "source": d.source}


def _undist(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "samples": tuple(d.get("samples") or ())}


def _machine() -> dict[str, Any]:
    from local.choice import cpu_identity

    return cpu_identity()


def threads_per_core() -> int:
    """This machine's hyperthreads per core, as lscpu counts them (from sysfs' sibling lists)."""
    from lambda_onnx.resources import available_cpus

    counts = []
    for cpu in sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(int(available_cpus())):
        try:
            siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            continue
        counts.append(sum(int(b) - int(a) + 1 for a, _, b in (part.partition("-") if "-" in part else (part, "", part)
                                                              for part in siblings.split(","))))
    return max(counts) if counts else 1


def _same_machine(info: dict[str, Any]) -> bool:
    here = _machine()
    return bool(info) and all(info.get(key) == value for key, value in here.items())


# --- a real function's REPORT lines ------------------------------------------------------------------


def from_report_log(path: Path) -> LambdaFigures:
    """Warm and cold latencies from a log's REPORT lines (each parsed by the project's one parser)."""
    from local.wire import parse_report

    warm, cold, init, restore, billed_restore = [], [], [], [], []
    memory = None
    for line in Path(path).read_text(errors="replace").splitlines():
        if "REPORT RequestId:" not in line:
            continue
        parsed = parse_report(line[line.index("REPORT RequestId:"):])
        report = parsed.facts() if parsed is not None else {}
        if "duration_ms" not in report:
            continue
        memory = int(report.get("memory_size_mb", memory or 0)) or memory
        if "init_duration_ms" in report:
            init.append(report["init_duration_ms"])
            cold.append(report["init_duration_ms"] + report["duration_ms"])
        elif "restore_duration_ms" in report:  # a SnapStart function's environment resumed from its snapshot
            restore.append(report["restore_duration_ms"])
            billed_restore.append(report.get("billed_restore_duration_ms", report["restore_duration_ms"]))
        else:
            warm.append(report["duration_ms"])
    if not warm:
        raise CalibrationError(f"{path}: no warm REPORT line (\"REPORT RequestId: ... Duration: ... ms\") found")
    source = (f"REPORT lines of a real function in {Path(path).name} ({len(warm)} warm, {len(cold)} cold"
              + (f", {len(restore)} SnapStart restores)" if restore else ")"))
    if not cold:
        raise CalibrationError(f"{path}: {len(warm)} warm REPORT lines but no cold one (with Init Duration): the cold "
                               "start cannot be taken from it")
    return LambdaFigures(Distribution.measured(warm, source + ": Duration"),
                         Distribution.measured(cold, source + ": Init Duration + Duration"),
                         float(np.median(init)), 0.0, memory or 0, source,
                         restore_ms=float(np.median(restore)) if restore else None,
                         billed_restore_ms=float(np.median(billed_restore)) if restore else None)


# --- tune.json, bench.json, the cache ----------------------------------------------------------------


def from_tune(path: Path, memory_mb: int, precision: str) -> LambdaFigures | None:
    """The emulated sweep's figures at this size and precision, if measured on this CPU."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not _same_machine({k: data.get("machine", {}).get(k) for k in ("cpus", "cpu", "isa")}):
        return None
    for row in data.get("results", []):
        if (row.get("precision"), row.get("memory_mb"), row.get("status")) != (precision, memory_mb, "ok"):
            continue
        trip, duration = row.get("warm", {}).get("round_trip"), row.get("warm", {}).get("duration")
        if not trip or row.get("cold_round_trip_ms") is None:
            return None
        source = f"{path} ({data.get('created', '?')}: emulated {memory_mb} MB {precision}, {trip.get('n')} warm invokes)"
        init = row.get("init_phase_ms") or row.get("init_ms") or 0.0
        overhead = trip["p50"] - duration["p50"] if duration else 0.0
        return LambdaFigures(Distribution.summary(trip["p50"], trip.get("p90"), source + ": warm round trip"),
                             Distribution.constant(row["cold_round_trip_ms"], source + ": its one cold round trip"),
                             float(init), max(0.0, float(overhead)), memory_mb, source)
    return None


def from_bench(path: Path, model: Path) -> ServerFigures | None:
    """The benchmark's in-process request time for this model, if measured on this CPU."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    emulator = data.get("emulator", {})
    if not emulator.get("measured") or Path(emulator.get("model", "")).resolve() != Path(model).resolve():
        return None
    if not _same_machine({k: data.get("machine", {}).get(k) for k in ("cpus", "cpu", "isa")}):
        return None
    median = emulator.get("in_process_median_ms")
    spread = next((row.get("p90_ms", 0) / row["median_ms"] for row in data.get("inference", [])
                   if row.get("runtime") == "onnxruntime" and row.get("precision") == "fp32" and row.get("median_ms")), 1.0)
    source = (f"{path} ({data.get('created', '?')}): in-process request median, spread of its inference samples "
              "(one request at a time)")
    return ServerFigures(Distribution.summary(median, median * max(1.0, spread), source), source,
                         threads_per_core=threads_per_core())


def load_cache(path: Path, model: Path, memory_mb: int) -> Calibration | None:
    try:
        data = json.loads(Path(path).read_text())
        calibration = Calibration.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if Path(calibration.model).resolve() != Path(model).resolve() or calibration.memory_mb != memory_mb:
        return None
    return calibration if _same_machine(calibration.machine) else None


def save_cache(calibration: Calibration, path: Path = DEFAULT_CACHE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_dict(), indent=1) + "\n", encoding="utf-8")
    return path


# --- measured now --------------------------------------------------------------------------------


def measure_lambda(model: Path, memory_mb: int, image: bytes, *, warm: int = WARM_REQUESTS, cold: int = COLD_STARTS,
                   overlapping_pairs: int = 0, on_progress: Say | None = None) -> LambdaFigures:
    """Cold starts (a new environment each: its start, init and first invoke, as a client waits for
    them) and warm requests on the elastic emulator, timed as the replay times them. Warm requests
    are spaced by short random pauses, as traffic spaces them (back to back they run on caches the
    previous request left hot). ``overlapping_pairs``: also cold starts two at a time (this
    machine's CPUs shared, for :meth:`Calibration.emulator_params`)."""
    from concurrent.futures import ThreadPoolExecutor

    from local.clients.emulator import EmulatorBackend
    from local.lambda_env import ElasticPool
    from local.measure.core.machine import OtherLoad
    from local.measure.core.requests import timed_request

    say = on_progress or _quiet
    rng = np.random.default_rng(0)
    steps = cold + warm + 2 * overlapping_pairs
    colds: list[float] = []
    warms: list[float] = []
    inits: list[float] = []
    overheads: list[float] = []
    pairs: list[float] = []
    contended: list[float] = []
    with OtherLoad() as load, ElasticPool(model, max_concurrency=2, idle_timeout_s=3600, memory_mb=memory_mb, name="calibrate") as pool:
        backend = EmulatorBackend(pool, name="emulator", stop_on_close=False)
        for i in range(cold):
            pool.restart()
            outcome = _ok(timed_request(backend, image), "a cold start on the emulator")
            colds.append(outcome.latency_ms)
            if outcome.init_ms is not None:
                inits.append(outcome.init_ms)
            say(f"cold start {i + 1}/{cold}: {outcome.latency_ms:.0f} ms", (i + 1) / steps)
        _ok(timed_request(backend, image), "a warm request")  # the first warm request after a cold one is not typical
        for i in range(warm):
            time.sleep(float(rng.uniform(*WARM_PAUSE_S)))
            outcome = _ok(timed_request(backend, image), "a warm request on the emulator")
            warms.append(outcome.latency_ms)
            if outcome.duration_ms is not None:
                overheads.append(outcome.latency_ms - outcome.duration_ms)
            if (i + 1) % 10 == 0 or i + 1 == warm:
                say(f"warm {i + 1}/{warm}: p50 {np.median(warms):.1f} ms", (cold + i + 1) / steps)
        if overlapping_pairs:
            with ElasticPool(model, max_concurrency=1, idle_timeout_s=3600, memory_mb=memory_mb, name="other") as other, \
                    ThreadPoolExecutor(2) as threads:
                other_backend = EmulatorBackend(other, name="emulator", stop_on_close=False)
                for i in range(overlapping_pairs):
                    pool.restart()
                    both = list(threads.map(lambda _: timed_request(backend, image), range(2)))
                    pairs.extend(_ok(o, "two overlapping cold starts").latency_ms for o in both)
                    # warm requests on one environment while another one starts (the first makes it warm)
                    for _ in range(2 if i == 0 else 1):
                        _ok(timed_request(other_backend, image), "a request on a second environment")
                    pool.restart()
                    pool_cold = threads.submit(timed_request, backend, image)
                    while not pool_cold.done():
                        contended.append(_ok(timed_request(other_backend, image), "a warm request beside a cold start")
                                         .latency_ms)
                    _ok(pool_cold.result(), "a cold start beside warm requests")
                    say(f"overlapping cold starts {i + 1}/{overlapping_pairs}: {pairs[-2]:.0f} and {pairs[-1]:.0f} ms; "
                        f"warm requests beside a cold start: p50 {np.median(contended) if contended else 0:.0f} ms",
                        (cold + warm + 2 * (i + 1)) / steps)
    source = (f"measured now on the elastic emulator ({memory_mb} MB, {Path(model).name}; CPU not limited to the size; "
              f"other processes used {load.cpus:.1f} CPUs meanwhile)")
    return LambdaFigures(Distribution.measured(warms, source + f": {warm} warm round trips"),
                         Distribution.measured(colds, source + f": {cold} cold starts (environment start + init + invoke)")
                         if colds else Distribution.constant(0.0, "no cold start measured"),
                         float(np.median(inits)) if inits else 0.0, float(np.median(overheads)) if overheads else 0.0,
                         memory_mb, source,
                         Distribution.measured(pairs, source + f": {len(pairs)} cold starts two at a time") if pairs else None,
                         Distribution.measured(contended, source + f": {len(contended)} warm requests while another "
                                               "environment started") if contended else None)


def measure_server(model: Path, image: bytes, *, requests: int = SERVER_REQUESTS, serve_args: Sequence[str] = (),
                   loaded_seconds: float = 0.0, url: str | None = None, lanes: int | None = None,
                   on_progress: Say | None = None) -> ServerFigures:
    """Sequential requests to a fresh ``local serve``, spaced like warm Lambda requests: one
    request's time on an idle instance. With ``loaded_seconds``, then closed-loop load with every lane
    busy (the module docstring), and the lane part of that distribution scaled to the lane time per
    request measured under it. With ``url``, the server already running there is measured instead
    (a fleet behind its load balancer: one instance's time as the fleet runs it, the balancer's hop
    included), ``lanes`` being the lanes behind it (default: this machine's ``local serve``'s)."""
    from lambda_onnx.resources import server_split
    from local.clients.http import HttpBackend
    from local.measure.core.http_load import load_generator
    from local.measure.core.machine import OtherLoad
    from local.measure.core.requests import timed_request
    from local.measure.loadtest import CONTENT_TYPE
    from local.serve.process import ServeProcess

    say = on_progress or _quiet
    rng = np.random.default_rng(1)
    args = tuple(serve_args) or ("--runtime", "onnxruntime")
    if url is None:
        say("starting local serve", None)
    times, outside = [], []
    with OtherLoad() as load, (ServeProcess(model, *args) if url is None else nullcontext()) as process:
        base = process.url if process is not None else str(url)
        backend = HttpBackend(base + "/classify", kind="server", name="local serve", connect_retries=0)
        try:
            for _ in range(5):  # the first requests warm the connection and the session
                _ok(timed_request(backend, image), "a request to local serve")
            for i in range(requests):
                time.sleep(float(rng.uniform(*WARM_PAUSE_S)))
                outcome = _ok(timed_request(backend, image), "a request to local serve")
                times.append(outcome.latency_ms)
                if outcome.handler_ms is not None:
                    outside.append(outcome.latency_ms - outcome.handler_ms)
                if (i + 1) % 20 == 0 or i + 1 == requests:
                    say(f"server {i + 1}/{requests}: p50 {np.median(times):.1f} ms", (i + 1) / requests)
        finally:
            backend.close()
        loaded, busy = None, 0
        if loaded_seconds > 0:
            split = server_split()
            busy = lanes or split.workers * split.lanes
            generator = load_generator("auto")
            connections = LOADED_CONNECTIONS_PER_LANE * busy
            say(f"server: {connections} connections from {generator.name} for {loaded_seconds:g} s, every one of "
                f"{busy} lanes busy", None)
            generator.run(base + "/classify", image, content_type=CONTENT_TYPE, connections=connections, seconds=1.0)
            loaded = generator.run(base + "/classify", image, content_type=CONTENT_TYPE, connections=connections,
                                   seconds=loaded_seconds)
            if loaded.ok == 0:
                raise CalibrationError(f"no request answered under load: statuses {loaded.statuses}")
    against = f"local serve ({Path(model).name}, {' '.join(args)})" if url is None else f"the server at {url} ({Path(model).name})"
    source = (f"measured now against {against}: {requests} requests one at a time; "
              f"other processes used {load.cpus:.1f} CPUs meanwhile")
    overhead = min(max(0.0, float(np.median(outside))) if outside else 0.0, 0.9 * float(np.mean(times)))
    idle = Distribution.measured(times, source)
    if loaded is None:
        return ServerFigures(idle, source, overhead, threads_per_core=threads_per_core())
    worker_ms = busy * loaded.elapsed_s * 1000.0 / loaded.ok
    factor = worker_ms / max(idle.mean_ms - overhead, 1e-6)
    source += (f"; under {connections} connections ({loaded.generator}, {loaded.elapsed_s:.0f} s): {loaded.ok} answers, "
               f"{worker_ms:.1f} ms a lane per request with all {busy} busy")
    say(f"server, every lane busy: {loaded.ok / loaded.elapsed_s:.1f} answers/s, {worker_ms:.1f} ms a lane per request "
        f"({factor:.2f} x one at a time)", 1.0)
    return ServerFigures(idle.scaled_above(overhead, factor, source + f": the one-at-a-time lane part x {factor:.3g}"),
                         source, overhead, busy, threads_per_core(), worker_ms)


def _ok(outcome: Any, what: str) -> Any:
    if outcome.status != 200:
        why = f"{outcome.code}: {outcome.error}" if outcome.code else outcome.status
        raise CalibrationError(f"{what} failed while calibrating: {why}")
    return outcome


# --- the whole choice ----------------------------------------------------------------------------


def calibrate(model: Path, memory_mb: int, precision: str, *, report_log: Path | None = None,
              tune_json: Path = DEFAULT_TUNE_JSON, bench_json: Path = DEFAULT_BENCH_JSON, cache: Path = DEFAULT_CACHE,
              measure: str = "auto", image: bytes | None = None, on_progress: Say | None = None) -> Calibration:
    """The figures for ``model`` (the file of ``precision``) at ``memory_mb``, each from the first
    source that has it (module docstring); ``measure="always"`` measures both sides now,
    ``"never"`` refuses to (a :class:`CalibrationError` then says what is missing)."""
    if measure not in MEASURE_CHOICES:
        raise ValueError(f"measure must be one of {', '.join(MEASURE_CHOICES)}, got {measure!r}")
    say = on_progress or _quiet
    cached = load_cache(cache, model, memory_mb) if measure != "always" else None
    lam: LambdaFigures | None = None
    if report_log is not None:
        lam = from_report_log(report_log)
        lam = replace(lam, memory_mb=lam.memory_mb or memory_mb)
    elif measure != "always":
        lam = from_tune(tune_json, memory_mb, precision) or (cached.lambda_ if cached else None)
    server = cached.server if cached and (cached.server.all_lanes_busy or measure == "never") else None
    if server is None and measure == "never":  # one request at a time: better than nothing, and said so
        server = from_bench(bench_json, model)
    if (lam is None or server is None) and measure == "never":
        missing = " and ".join(side for side, figures in (("Lambda", lam), ("server", server)) if figures is None)
        raise CalibrationError(f"no {missing} figures for {model} at {memory_mb} MB on this machine and measuring is off: "
                               "run `python -m local tune`/`bench`, or let the scenario measure them (--calibrate auto)")
    measured_now = False
    if image is None and (lam is None or server is None):
        from local.measure.core.images import default_image

        image = default_image()
    photo = image or b""
    if lam is None:
        say(f"no Lambda figures for {Path(model).name} at {memory_mb} MB on this machine: measuring them now "
            f"({COLD_STARTS} cold starts, {WARM_REQUESTS} warm requests on the emulator)", None)
        lam = measure_lambda(model, memory_mb, photo, on_progress=say)
        measured_now = True
    if server is None:
        say(f"no server figures for {Path(model).name} with every lane busy on this machine: measuring them now against "
            "local serve", None)
        server = measure_server(model, photo, loaded_seconds=LOADED_SECONDS, on_progress=say)
        measured_now = True
    calibration = Calibration.of(model, memory_mb, lam, server)
    if measured_now:
        save_cache(calibration, cache)
    return calibration
