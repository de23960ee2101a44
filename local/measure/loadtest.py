"""``python -m local loadtest``: ``local serve`` at a capacity load and at 4x overload against what this
machine can do at most, and (``peers=True``) BentoML and Ray Serve on the same load.

- **The ceiling** is ``cpus / CPU-seconds per request`` in process at one thread: the whole request
  path (:meth:`~lambda_onnx.contract.Service.respond`: decode, preprocess, inference, postprocess,
  the response body) with nothing else in the way. It is measured before and after each model's runs
  in every round, and the ratios use the mean of the two (:func:`bracket_ceiling`), because this shared
  machine's speed drifts; ratios are taken within a round.
- **A run** starts one server (``local serve``, or a peer from ``local/measure/peers``), checks that
  its top-1 answer is the in-process one, warms it up, then loads it twice with closed-loop clients
  (:mod:`local.measure.core.http_load`: ``wrk`` where installed, else a Python fallback that says so):
  ``connections`` (capacity, default 8) and ``overload`` times as many (default 4x: 32), each for
  ``seconds``, measuring the server's processes' CPU meanwhile; then stops it. One server runs at a
  time, so an idle one costs the others nothing, and the servers alternate within every round.

The report gives answers/s, goodput (200s per second), accepted requests' p50/p99, answers by
status, the server's CPU utilisation, the ratio of goodput to the ceiling, the overload goodput as a
share of the capacity goodput, and each peer's goodput and p99 against ``local serve``'s in the same
round; :mod:`local.report.loadtest` renders it as Markdown, JSON and a PNG chart.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import psutil

from lambda_onnx.resources import available_cpus, server_split
from local.defaults import ARTIFACTS
from local.measure.core.http_load import LoadGenerator, LoadResult, PythonLoad, load_generator, wrk_version
from local.measure.core.images import web_size_image
from local.measure.core.machine import busy_cpu_s, busy_share, machine, process_cpu_s
from local.measure.core.stats import duration_summary, percent

OUT = ARTIFACTS / "loadtest"
CAPACITY_CONNECTIONS = 8
OVERLOAD_FACTOR = 4
DEFAULT_SECONDS = 20.0
DEFAULT_ROUNDS = 3
WARMUP_S = 3.0
CEILING_MIN_REQUESTS = 12
CEILING_MIN_CPU_S = 3.0
DEFAULT_MODELS = (Path("models/resnet50.onnx"), Path("models/resnet50.int8.onnx"), Path("models/efficientnet_lite0.onnx"))
CONTENT_TYPE = "image/jpeg"
LOCAL = "local serve"
# The goals of the issue this measures (issue 14), stated once for the report.
GOAL_CEILING = 0.90  # goodput at capacity load, x the in-process ceiling
GOAL_OVERLOAD = 0.90  # goodput at overload, x the goodput at capacity

# Between phases, a server counts as idle below this share of one CPU (Ray's own processes poll a little).
IDLE_CORES = 0.2
IDLE_SAMPLE_S = 0.5
IDLE_TIMEOUT_S = 120.0
# A shared machine: how long to wait for quiet, how long each look at it lasts, how often a disturbed phase is repeated.
QUIET_TIMEOUT_S = 900.0
QUIET_SAMPLE_S = 3.0
QUIET_RETRIES = 2

# The short mode CI runs: one round, a few seconds, 2 connections and 8 (a queue of 2 makes 8 an overload).
SHORT = {"rounds": 1, "seconds": 3.0, "connections": 2, "warmup_s": 1.0, "serve_args": ("--max-queue", "2")}

Progress = Callable[[str], None]


# --- the ceiling ----------------------------------------------------------------------------------------


def ceiling_rps(cpus: float, cpu_ms_per_request: float) -> float:
    """Requests per second a machine with ``cpus`` CPUs completes at most when each takes
    ``cpu_ms_per_request`` of CPU and nothing else runs: ``cpus / CPU-seconds per request``."""
    if cpus <= 0 or cpu_ms_per_request <= 0:
        raise ValueError(f"need positive CPUs and CPU time per request, got {cpus} and {cpu_ms_per_request}")
    return cpus * 1000.0 / cpu_ms_per_request


@dataclass(frozen=True)
class Ceiling:
    """One measurement of the in-process ceiling for a model on an image."""

    cpus: float
    cpu_ms: float  # CPU per request, in process at one thread
    requests: int  # how many were timed
    answer: dict[str, Any]  # the in-process answer (its predictions are what every server must give)

    @property
    def rps(self) -> float:
        return ceiling_rps(self.cpus, self.cpu_ms)


def measure_ceiling(model: str | Path, image: bytes, *, content_type: str = CONTENT_TYPE, cpus: float | None = None,
                    min_requests: int = CEILING_MIN_REQUESTS, min_cpu_s: float = CEILING_MIN_CPU_S) -> Ceiling:
    """CPU per request of :meth:`Service.respond` in this process at one inference thread (after a
    warm-up), over at least ``min_requests`` requests and ``min_cpu_s`` of CPU."""
    from lambda_onnx.classifier import Classifier
    from lambda_onnx.contract import Service

    service = Service(Classifier(model, threads=1))
    for _ in range(2):
        status, answer = service.respond(body=image, content_type=content_type)
        if status != 200:
            raise ValueError(f"the in-process answer is {status}: {answer.get('message')}")
    count, start = 0, time.process_time()
    while count < min_requests or time.process_time() - start < min_cpu_s:
        service.respond(body=image, content_type=content_type)
        count += 1
    cpu_ms = (time.process_time() - start) * 1e3 / count
    return Ceiling(cpus=available_cpus() if cpus is None else cpus, cpu_ms=cpu_ms, requests=count, answer=dict(answer))


BATCH_SIZES = (1, 2, 4, 8)


def measure_batches(model: str | Path, image: bytes, sizes: Sequence[int] = BATCH_SIZES,
                    min_cpu_s: float = 2.0) -> dict[int, float]:
    """CPU milliseconds per image of inference alone at one thread, for each batch size: whether
    dynamic batching could raise goodput on this CPU (only if a bigger batch costs less per image)."""
    import numpy as np

    from lambda_onnx.classifier import Classifier
    from lambda_onnx.preprocess import prepare

    classifier = Classifier(model, threads=1)
    prepared, _ = prepare(image, classifier.sidecar.preprocessing, fast=classifier.fast_preprocess)
    out = {}
    for size in sizes:
        batch = np.repeat(prepared.tensor, size, axis=0)
        classifier.infer(batch)
        count, start = 0, time.process_time()
        while count < 2 or time.process_time() - start < min_cpu_s:
            classifier.infer(batch)
            count += 1
        out[size] = (time.process_time() - start) * 1e3 / (count * size)
    return out


# --- servers under test ---------------------------------------------------------------------------------


class Target(Protocol):
    """A server under test: started and stopped by the load test, one at a time."""

    label: str

    @property
    def url(self) -> str: ...

    def start(self, probe: bytes, content_type: str) -> Any: ...

    def processes(self) -> list[psutil.Process]: ...

    def close(self) -> None: ...


class ServeTarget:
    """``python -m local serve`` in a child process (:class:`~local.serve.process.ServeProcess`)."""

    label = LOCAL

    def __init__(self, model: str | Path, *args: str) -> None:
        from local.serve.process import ServeProcess

        self.server = ServeProcess(model, "--runtime", "onnxruntime", *args)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, probe: bytes, content_type: str) -> ServeTarget:
        self.server.start()
        return self

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.server.pid)
            return [root, *root.children(recursive=True)]
        except (psutil.Error, TypeError, ValueError):
            return []

    def close(self) -> None:
        self.server.close()


def wait_for_quiet(share: float, *, timeout_s: float = QUIET_TIMEOUT_S, say: Progress | None = None) -> bool:
    """Wait until the machine's CPUs are busy less than ``share`` of the time (measured over a few
    seconds while this process waits); False if that did not happen within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    told = 0.0
    while True:
        busy = busy_share(QUIET_SAMPLE_S)
        if busy <= share:
            return True
        if time.monotonic() > deadline:
            if say:
                say(f"    the machine is still {busy:.0%} busy after {timeout_s:.0f} s; measuring anyway")
            return False
        if say and time.monotonic() - told > 60:
            say(f"    waiting for a quiet machine: other processes use {busy:.0%} of the CPUs")
            told = time.monotonic()


def wait_until_idle(target: Target, *, timeout_s: float = IDLE_TIMEOUT_S) -> bool:
    """Wait until the server's processes use less than ``IDLE_CORES`` of a CPU: a server that keeps
    classifying requests whose clients have left (a load ends with requests queued) would otherwise
    carry them into the next phase. False if it did not go idle within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        processes = target.processes()
        before = process_cpu_s(processes)
        time.sleep(IDLE_SAMPLE_S)
        after = process_cpu_s(processes)
        if sum(after[pid] - before[pid] for pid in after if pid in before) < IDLE_CORES * IDLE_SAMPLE_S:
            return True
    return False


# --- results --------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One closed-loop phase against one server."""

    round: int
    model: str
    target: str
    phase: str  # "capacity" or "overload"
    connections: int
    elapsed_s: float
    answers: int
    ok: int
    statuses: dict[str, int]  # "200" -> count, "503" -> count, ...
    socket_errors: dict[str, int]
    retry_after: int  # 503s that carried Retry-After
    requests_per_s: float  # every answer, refusals included
    goodput_rps: float  # 200s per second
    p50_ms: float | None  # accepted requests only
    p99_ms: float | None
    refused_p50_ms: float | None
    server_cpu: float | None  # share of all the machine's CPUs the server's processes used
    client_cpu: float | None  # the same for the load generator
    others_cpu: float | None  # the same for everything else on the machine (a shared machine: how quiet it was)
    ceiling_rps: float
    ratio: float  # goodput / ceiling


@dataclass
class Run:
    """One server started for one model in one round."""

    round: int
    model: str
    target: str
    version: str
    start_s: float
    top1: str | None
    top1_matches: bool
    lanes: int
    threads: int
    places: int | None = None  # requests the server admits at once (classifying + queued); None: unbounded or unknown


@dataclass
class LoadtestReport:
    machine: dict[str, Any]
    settings: dict[str, Any]
    generator: str
    ceilings: list[dict[str, Any]] = field(default_factory=list)  # round, model, cpu_ms (the mean), rps, before_ms, after_ms
    batches: list[dict[str, Any]] = field(default_factory=list)  # round, model, {batch size: CPU ms per image}
    runs: list[Run] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": summary(self), "goals": goals(self)}


def phase_result(load: LoadResult, *, round_: int, model: str, target: str, phase: str, ceiling: Ceiling,
                 server_cpu_s: float | None, cpus: float, machine_cpu_s: float | None = None) -> Phase:
    """The figures of one phase from what the client saw, the server's CPU time and (to tell how
    quiet the machine was) the CPU time every process on it used meanwhile."""
    elapsed = max(load.elapsed_s, 1e-9)
    goodput = load.ok / elapsed
    ceiling_rps, ratio = _versus(goodput, ceiling)
    accepted, refused = duration_summary(load.ok_ms, digits=1), duration_summary(load.refused_ms, digits=1)
    others = None
    if machine_cpu_s is not None and server_cpu_s is not None:
        others = max(0.0, machine_cpu_s - server_cpu_s - (load.client_cpu_s or 0.0)) / (elapsed * cpus)
    return Phase(
        round=round_, model=model, target=target, phase=phase, connections=load.connections, elapsed_s=round(elapsed, 2),
        answers=load.answers, ok=load.ok, statuses={str(k): v for k, v in sorted(load.statuses.items())},
        socket_errors=dict(load.socket_errors), retry_after=load.retry_after,
        requests_per_s=round(load.answers / elapsed, 2), goodput_rps=round(goodput, 2),
        p50_ms=accepted.get("p50"), p99_ms=accepted.get("p99"), refused_p50_ms=refused.get("p50"),
        server_cpu=round(server_cpu_s / (elapsed * cpus), 3) if server_cpu_s is not None else None,
        client_cpu=round(load.client_cpu_s / (elapsed * cpus), 3) if load.client_cpu_s is not None else None,
        others_cpu=round(others, 3) if others is not None else None,
        ceiling_rps=ceiling_rps, ratio=ratio,
    )


def _versus(goodput_rps: float, ceiling: Ceiling) -> tuple[float, float]:
    """A phase's ``ceiling_rps`` and ``ratio`` (its goodput to the ceiling), rounded as :class:`Phase` keeps them."""
    return round(ceiling.rps, 2), round(goodput_rps / ceiling.rps, 3)


# --- the run --------------------------------------------------------------------------------------------


def model_name(model: str | Path) -> str:
    """``resnet50 int8 (random weights)``: what a table row calls a model."""
    from lambda_onnx.sidecar import Sidecar, sidecar_path

    meta = Sidecar.load(sidecar_path(Path(model)))
    return f"{meta.arch} {meta.precision}" + (" (random weights)" if meta.random_weights else "")


def machine_facts() -> dict[str, Any]:
    """The machine (:func:`local.measure.core.machine.machine`), the server stack's versions, and when."""
    facts = machine()
    for package in ("uvicorn", "starlette", "httptools", "uvloop"):
        try:
            facts["versions"][package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            facts["versions"][package] = "not installed"
    facts["when"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return facts


def _top1(answer: dict[str, Any] | None) -> tuple[int | None, str | None]:
    predictions = (answer or {}).get("predictions") or [{}]
    return predictions[0].get("class_id"), predictions[0].get("label")


def run_loadtest(models: Sequence[str | Path] = DEFAULT_MODELS, *, image: bytes | None = None,
                 content_type: str = CONTENT_TYPE, rounds: int = DEFAULT_ROUNDS, seconds: float = DEFAULT_SECONDS,
                 connections: int = CAPACITY_CONNECTIONS, overload: int = OVERLOAD_FACTOR, peers: bool = False,
                 generator: str | LoadGenerator = "auto", serve_args: Sequence[str] = (), warmup_s: float = WARMUP_S,
                 batches: Sequence[int] = (), quiet: float | None = None, retries: int = QUIET_RETRIES,
                 on_progress: Progress | None = None) -> LoadtestReport:
    """Measure every model on ``local serve`` (and the peers) for ``rounds`` interleaved rounds.

    With ``quiet`` (a share of the machine's CPUs, e.g. 0.05), each server run waits until everything
    else on the machine uses less than that, and a phase during which the others used more is measured
    again (at most ``retries`` times; the report notes what it kept): on a shared machine, the figures
    then come from quiet moments.
    """
    from lambda_onnx.errors import BackendError
    from local.measure.peers import process as peer_services

    say = on_progress or (lambda message: None)
    if rounds < 1 or seconds <= 0 or connections < 1 or overload < 1:
        raise ValueError("rounds, seconds, connections and overload must be positive")
    image = image if image is not None else web_size_image()
    load = load_generator(generator) if isinstance(generator, str) else generator
    cpus = available_cpus()
    split = server_split()
    lanes = split.workers * split.lanes  # in all: each peer gets as many processes (or replicas) as local serve has lanes
    names = {str(m): model_name(m) for m in models}
    peer_names = [p for p in peer_services.PEERS] if peers else []
    versions = {LOCAL: f"uvicorn {importlib.metadata.version('uvicorn')}"}
    for peer in peer_names:
        if not peer_services.installed(peer):
            raise BackendError(f"{peer_services.LABELS[peer]} is not installed: run {peer_services.SETUP}")
        versions[peer_services.LABELS[peer]] = f"{peer} {peer_services.version(peer)}"
    report = LoadtestReport(
        machine=machine_facts(), generator=load.name,
        settings={"models": list(names.values()), "rounds": rounds, "seconds": seconds, "connections": connections,
                  "overload_connections": connections * overload, "overload_factor": overload, "peers": peer_names,
                  "image_bytes": len(image), "content_type": content_type, "serve_args": list(serve_args),
                  "warmup_s": warmup_s, "lanes": lanes, "threads_per_lane": split.threads, "versions": versions,
                  "batches": list(batches), "quiet": quiet},
    )
    if isinstance(load, PythonLoad):
        why = "wrk is not installed" if wrk_version() is None else "chosen with --load python"
        report.notes.append(f"load from the Python fallback ({why}): it costs more CPU per request than wrk, taken from "
                            "the same CPUs as the server's, so the figures understate the server")
    say(f"{len(models)} model(s) x {1 + len(peer_names)} server(s) x {rounds} round(s), {seconds:g} s at "
        f"{connections} and {connections * overload} connections; load from {load.name}")
    for round_ in range(1, rounds + 1):
        try:
            say(f"round {round_}/{rounds}: load average {os.getloadavg()[0]:.2f}")
        except OSError:
            pass
        for model in models:
            name = names[str(model)]
            say(f"  {name}: in-process ceiling (one thread)")
            ceiling = measure_ceiling(model, image, content_type=content_type, cpus=cpus)
            say(f"    {ceiling.cpu_ms:.1f} ms CPU per request -> ceiling {ceiling.rps:.1f}/s on {cpus:g} CPUs "
                "(measured again after the servers)")
            if batches:
                per_image = measure_batches(model, image, batches)
                report.batches.append({"round": round_, "model": name, "cpu_ms_per_image": {
                    str(size): round(ms, 2) for size, ms in per_image.items()}})
                say("    inference CPU per image by batch size: " + ", ".join(
                    f"{size}: {ms:.1f} ms" for size, ms in per_image.items()))
            expected_id, expected_label = _top1(ceiling.answer)
            targets: list[tuple[str, Callable[[], Target]]] = [(LOCAL, functools.partial(ServeTarget, model, *serve_args))]
            for peer in peer_names:
                targets.append((peer_services.LABELS[peer], functools.partial(
                    peer_services.PeerProcess, peer, model, lanes=lanes, threads=split.threads)))
            for label, make in targets:
                if quiet is not None:
                    wait_for_quiet(quiet, say=say)
                say(f"  {name} on {label}: starting")
                target = make()
                started = time.monotonic()
                try:
                    target.start(image, content_type)
                    start_s = time.monotonic() - started
                    first = _first_answer(target, image, content_type)
                    top_id, top_label = _top1(first)
                    report.runs.append(Run(round=round_, model=name, target=label, version=versions[label],
                                           start_s=round(start_s, 1), top1=top_label, top1_matches=top_id == expected_id,
                                           lanes=lanes, threads=split.threads, places=_places(target)))
                    if top_id != expected_id:
                        report.notes.append(f"round {round_}, {name} on {label}: top-1 {top_label!r}, in process "
                                            f"{expected_label!r}")
                    load.run(target.url + "/classify", image, content_type=content_type, connections=connections,
                             seconds=warmup_s)
                    for phase, count in (("capacity", connections), ("overload", connections * overload)):
                        for attempt in range(retries + 1 if quiet is not None else 1):
                            wait_until_idle(target)  # what the previous load left queued is not this phase's
                            processes = target.processes()
                            before, busy = process_cpu_s(processes), busy_cpu_s()
                            result = load.run(target.url + "/classify", image, content_type=content_type,
                                              connections=count, seconds=seconds)
                            after, busy = process_cpu_s(processes), busy_cpu_s() - busy
                            used = sum(after[pid] - before[pid] for pid in after if pid in before) if before else None
                            row = phase_result(result, round_=round_, model=name, target=label, phase=phase,
                                               ceiling=ceiling, server_cpu_s=used, cpus=cpus, machine_cpu_s=busy)
                            say(f"    {phase} ({count} connections): {row.goodput_rps:.1f} answers/s = {row.ratio:.2f} x "
                                f"the ceiling before, p50/p99 {row.p50_ms}/{row.p99_ms} ms, statuses {row.statuses}, server CPU "
                                f"{percent(row.server_cpu)}, others {percent(row.others_cpu)}")
                            if quiet is None or row.others_cpu is None or row.others_cpu <= quiet:
                                break
                            if attempt == retries:
                                report.notes.append(f"round {round_}, {name} on {label}, {phase}: other processes used "
                                                    f"{percent(row.others_cpu)} of the CPUs in every one of {retries + 1} "
                                                    "attempts; the last is kept")
                                break
                            say(f"    others used {percent(row.others_cpu)} of the CPUs meanwhile: measuring it again")
                            wait_for_quiet(quiet, say=say)
                        report.phases.append(row)
                finally:
                    target.close()
            again = measure_ceiling(model, image, content_type=content_type, cpus=cpus)
            bracket = bracket_ceiling(ceiling, again)
            report.ceilings.append({"round": round_, "model": name, "cpu_ms": round(bracket.cpu_ms, 2),
                                    "rps": round(bracket.rps, 2), "before_ms": round(ceiling.cpu_ms, 2),
                                    "after_ms": round(again.cpu_ms, 2), "requests": bracket.requests, "cpus": cpus})
            report.phases = [against(p, bracket) if (p.round, p.model) == (round_, name) else p for p in report.phases]
            say(f"    ceiling after the servers: {again.cpu_ms:.1f} ms CPU per request; the ratios use the mean of "
                f"before and after, {bracket.cpu_ms:.1f} ms -> {bracket.rps:.1f}/s")
    return report


def bracket_ceiling(before: Ceiling, after: Ceiling) -> Ceiling:
    """The ceiling for the runs between two measurements of it: the mean CPU time per request of the two.

    A shared machine drifts (a model's ceiling can move by several percent within minutes), and
    one reading taken before a model's servers run for minutes credits or charges them with the drift;
    measured on both sides, a drift that is steady over those minutes cancels out."""
    return Ceiling(cpus=before.cpus, cpu_ms=(before.cpu_ms + after.cpu_ms) / 2, requests=before.requests + after.requests,
                   answer=before.answer)


def against(phase: Phase, ceiling: Ceiling) -> Phase:
    """The phase with its ratio taken against ``ceiling``."""
    ceiling_rps, ratio = _versus(phase.ok / phase.elapsed_s, ceiling)
    return replace(phase, ceiling_rps=ceiling_rps, ratio=ratio)


def _places(target: Target) -> int | None:
    """``local serve``'s capacity (lanes and queue of every worker, from ``/health``); None for a server that
    queues without bound."""
    import httpx

    if not isinstance(target, ServeTarget):
        return None
    health = httpx.get(target.url + "/health", timeout=10).json()
    return int(health["capacity"]) * int(health.get("workers") or 1)


def _first_answer(target: Target, image: bytes, content_type: str) -> dict[str, Any] | None:
    import httpx

    response = httpx.post(target.url + "/classify", content=image, headers={"content-type": content_type}, timeout=60)
    return response.json() if response.status_code == 200 else None


# --- summaries ------------------------------------------------------------------------------------------


def median_of(values: Sequence[float | None]) -> float | None:
    """The median of the values present, to 3 decimals; None when there are none."""
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summary(report: LoadtestReport) -> list[dict[str, Any]]:
    """Per model x server x phase: medians over the rounds, overload against capacity, and the ratios of
    ``local serve`` to each peer (goodput, p99), each taken within a round."""
    rows = []
    keys = list(dict.fromkeys((p.model, p.target, p.phase) for p in report.phases))
    by_key = {(p.round, p.model, p.target, p.phase): p for p in report.phases}
    places_of = {(r.round, r.model, r.target): r.places + r.lanes if r.places else None for r in report.runs}
    for model, target, phase in keys:
        mine = [p for p in report.phases if (p.model, p.target, p.phase) == (model, target, phase)]
        row: dict[str, Any] = {
            "model": model, "target": target, "phase": phase, "connections": mine[0].connections, "rounds": len(mine),
            "requests_per_s": median_of([p.requests_per_s for p in mine]), "goodput_rps": median_of([p.goodput_rps for p in mine]),
            "ratio": median_of([p.ratio for p in mine]), "p50_ms": median_of([p.p50_ms for p in mine]),
            "p99_ms": median_of([p.p99_ms for p in mine]), "server_cpu": median_of([p.server_cpu for p in mine]),
            "client_cpu": median_of([p.client_cpu for p in mine]), "others_cpu": median_of([p.others_cpu for p in mine]),
            "ceiling_rps": median_of([p.ceiling_rps for p in mine]),
            "statuses": _sum_counts([p.statuses for p in mine]), "socket_errors": _sum_counts([p.socket_errors for p in mine]),
            "retry_after": sum(p.retry_after for p in mine),
        }
        if phase == "overload":
            capacity = [by_key.get((p.round, model, target, "capacity")) for p in mine]
            row["of_capacity"] = median_of([p.goodput_rps / c.goodput_rps if c and c.goodput_rps else None
                                          for p, c in zip(mine, capacity)])
            places = [places_of.get((p.round, model, target)) for p in mine]
            # With at most `places` requests admitted and one queue, an accepted request waits for those ahead of
            # it and its own service: places / goodput on average when every place is taken (Little's law). Service
            # times vary, so the bound allows one more service time per lane: (places + lanes) / goodput.
            row["queue_bound_ms"] = median_of([1e3 * n / p.goodput_rps if n and p.goodput_rps else None
                                             for p, n in zip(mine, places)])
        if target != LOCAL:
            local = [by_key.get((p.round, model, LOCAL, phase)) for p in mine]
            row["local_goodput_x"] = median_of([lo.goodput_rps / p.goodput_rps if lo and p.goodput_rps else None
                                               for p, lo in zip(mine, local)])
            row["local_p99_x"] = median_of([lo.p99_ms / p.p99_ms if lo and lo.p99_ms and p.p99_ms else None
                                          for p, lo in zip(mine, local)])
        rows.append(row)
    return rows


def _sum_counts(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))


def goals(report: LoadtestReport) -> list[dict[str, Any]]:
    """Each goal of the issue, per model: the measured value, the goal, and whether it was met."""
    out = []
    rows = summary(report)
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = {(r["target"], r["phase"]): r for r in rows if r["model"] == model}
        capacity, overload = mine.get((LOCAL, "capacity")), mine.get((LOCAL, "overload"))
        if capacity and capacity["ratio"] is not None:
            out.append({"model": model, "goal": f"goodput at {capacity['connections']} connections >= {GOAL_CEILING:.2f} x ceiling",
                        "value": capacity["ratio"], "met": capacity["ratio"] >= GOAL_CEILING})
        if overload and overload.get("of_capacity") is not None:
            out.append({"model": model, "goal": f"goodput at {overload['connections']} connections >= {GOAL_OVERLOAD:.2f} x "
                        "goodput at capacity", "value": overload["of_capacity"], "met": overload["of_capacity"] >= GOAL_OVERLOAD})
        if overload and overload.get("queue_bound_ms") and overload["p99_ms"] is not None:
            share = overload["p99_ms"] / overload["queue_bound_ms"]
            out.append({"model": model, "goal": f"accepted requests' p99 at {overload['connections']} connections within the "
                        f"queue's bound ((places + lanes) / goodput = {overload['queue_bound_ms']:.0f} ms)", "value": round(share, 3),
                        "met": share <= 1.0})
        for (target, phase), row in mine.items():
            if target == LOCAL or row.get("local_goodput_x") is None:
                continue
            p99 = row.get("local_p99_x")
            out.append({"model": model, "goal": f"{phase}: goodput >= {target}'s at equal or lower p99",
                        "value": row["local_goodput_x"], "p99_x": p99,
                        "met": row["local_goodput_x"] >= 1.0 and (p99 is None or p99 <= 1.0)})
    return out
