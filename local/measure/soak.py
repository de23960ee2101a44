"""Load and soak runs: concurrent clients for a bounded time, and the figures they leave.

- ``local serve`` (started here in a child process, or an existing one by URL): N clients, each
  with its own connection, through :class:`~local.clients.http.HttpBackend`; then an overload phase
  with more clients than the server admits, which must be answered 503 with a reason rather than
  queued without bound.
- The Lambda emulator: N clients sharing one execution environment (what the GUI does: calls are
  serialised, the emulator must never crash), then N clients on a pool (what the monitor does).

Every phase reports requests, errors by status and code, answers that named the wrong class,
latency percentiles as each client saw them (queueing included), throughput, and the server
processes' resident memory sampled over the run. ``python -m local soak`` prints them;
``tests/test_soak.py`` runs short versions and asserts on errors and correctness, never on time.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil

from lambda_onnx.errors import ClassifierError
from local.clients.base import Backend
from local.clients.http import HttpBackend
from local.measure.core.closed_loop import start_workers
from local.measure.core.requests import Outcome, timed_request
from local.measure.core.stats import duration_summary
from local.serve.process import ServeProcess
from local.wire import Send

ROOT = Path(__file__).resolve().parents[2]
CLIENT_TIMEOUT_S = 30.0  # per request: a phase always ends, whatever the server does
BUSY_BACKOFF_S = 0.1  # a client told 503/429 waits this long before asking again
NO_ANSWER_BACKOFF_S = 1.0  # and this long after no answer at all (a refused connection, a dead server)
RSS_INTERVAL_S = 0.25


def listening_pid(url: str) -> int | None:
    """The process listening on a loopback URL's port (for its memory), or None if it cannot be seen."""
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    try:
        for connection in psutil.net_connections(kind="tcp"):
            if (connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == parsed.port
                    and connection.pid):
                return connection.pid
    except (psutil.Error, OSError):
        return None
    return None


# --- memory ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryTrace:
    """Resident memory (MB) of the server processes (children included), sampled over a phase."""

    samples: list[tuple[float, float]]  # (seconds since the phase began, MB)

    @property
    def start_mb(self) -> float:
        return self.samples[0][1]

    @property
    def max_mb(self) -> float:
        return max(mb for _, mb in self.samples)

    @property
    def end_mb(self) -> float:
        return self.samples[-1][1]

    @property
    def growth_mb(self) -> float:
        return self.end_mb - self.start_mb


def rss_mb(pids: Sequence[int]) -> float | None:
    """Resident memory of these processes and all their descendants, in MB (None if all are gone)."""
    total, seen = 0, False
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for member in [process, *process.children(recursive=True)]:
                try:
                    total += member.memory_info().rss
                    seen = True
                except psutil.Error:
                    continue
        except psutil.Error:
            continue
    return total / 2**20 if seen else None


class RssSampler:
    """Samples :func:`rss_mb` of ``pids`` in a background thread until :meth:`stop`."""

    def __init__(self, pids: Sequence[int], interval_s: float = RSS_INTERVAL_S) -> None:
        self.pids, self.interval_s = list(pids), interval_s
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._started = time.monotonic()

    def _run(self) -> None:
        while True:
            value = rss_mb(self.pids)
            if value is not None:
                self._samples.append((round(time.monotonic() - self._started, 3), round(value, 1)))
            if self._stop.wait(self.interval_s):
                break

    def start(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> MemoryTrace | None:
        self._stop.set()
        self._thread.join(5)
        value = rss_mb(self.pids)
        if value is not None:
            self._samples.append((round(time.monotonic() - self._started, 3), round(value, 1)))
        return MemoryTrace(list(self._samples)) if self._samples else None


# --- clients -----------------------------------------------------------------------------------------


@dataclass
class PhaseReport:
    """The figures of one phase."""

    name: str
    target: str
    clients: int
    seconds: float  # planned
    elapsed_s: float
    requests: int
    ok: int
    errors: dict[str, int]  # "503 overloaded" -> count
    reasons: dict[str, str]  # "503 overloaded" -> the first message seen
    wrong: int  # 200 answers whose top-1 was not an expected class
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    throughput_rps: float  # successful answers per second
    cold_starts: int
    environments: dict[str, int] = field(default_factory=dict)
    memory: MemoryTrace | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def judged(outcome: Outcome, expected: Sequence[str]) -> Outcome:
    """The outcome, with an answer whose top-1 is not one of ``expected`` counted as the error ``wrong_answer``."""
    if outcome.code or not expected or outcome.label in expected:
        return outcome
    return replace(outcome, code="wrong_answer", error=f"top-1 {outcome.label!r}, expected one of {list(expected)}")


def run_clients(backend_for: Callable[[int], Backend], image: bytes, *, clients: int, seconds: float,
                expected: Sequence[str] = (), busy_backoff_s: float = BUSY_BACKOFF_S) -> tuple[list[Outcome], float]:
    """``clients`` threads, each sending ``image`` through its own ``backend_for(i)`` (closed at the
    end: a shared one must not stop anything on close) one request after another until ``seconds``
    have passed; returns every outcome and the elapsed time.

    A client told 503 or 429 backs off ``busy_backoff_s`` (as a client honouring Retry-After would);
    one that gets no answer (status 0) backs off a second. Each request is bounded by its backend's
    own timeout, so the phase ends shortly after ``seconds``.
    """
    if clients < 1 or seconds <= 0:
        raise ValueError(f"need at least one client and a positive duration, got {clients} and {seconds}")
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    backends = [backend_for(i) for i in range(clients)]

    def send(index: int, seq: int, started: float) -> Outcome:
        return judged(timed_request(backends[index], image, worker=index, started=started), expected)

    def record(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)

    def backoff(outcome: Outcome) -> float:
        return busy_backoff_s if outcome.status in (429, 503) else NO_ANSWER_BACKOFF_S if outcome.status == 0 else 0.0

    try:
        run = start_workers(clients, send, duration_s=seconds, pause_after=backoff, on_result=record, name="soak-client")
        run.wait(seconds + 2 * CLIENT_TIMEOUT_S + 10)
    finally:
        for backend in backends:
            backend.close()
    with lock:
        return sorted(outcomes, key=lambda o: o.sent_s), time.monotonic() - run.started


def summarise(name: str, target: str, outcomes: Sequence[Outcome], *, clients: int, seconds: float, elapsed_s: float,
              memory: MemoryTrace | None = None) -> PhaseReport:
    """The figures of a phase from its outcomes."""
    ok = [o for o in outcomes if not o.code]
    errors: collections.Counter[str] = collections.Counter()
    reasons: dict[str, str] = {}
    for o in outcomes:
        if o.code:
            key = f"{o.status} {o.code}"
            errors[key] += 1
            reasons.setdefault(key, o.error)
    times = duration_summary([o.latency_ms for o in ok], digits=1)

    environments = collections.Counter(o.environment for o in outcomes if o.environment)
    return PhaseReport(
        name=name, target=target, clients=clients, seconds=seconds, elapsed_s=round(elapsed_s, 2), requests=len(outcomes),
        ok=len(ok), errors=dict(errors), reasons=reasons, wrong=errors.get("200 wrong_answer", 0), p50_ms=times.get("p50"),
        p90_ms=times.get("p90"), p99_ms=times.get("p99"), max_ms=times.get("max"),
        throughput_rps=round(len(ok) / elapsed_s, 2) if elapsed_s > 0 else 0.0,
        cold_starts=sum(bool(o.cold_start) for o in ok), environments=dict(sorted(environments.items())), memory=memory,
    )


def run_phase(name: str, target: str, backend_for: Callable[[int], Backend], image: bytes, *, clients: int, seconds: float,
              expected: Sequence[str] = (), pids: Sequence[int] = ()) -> PhaseReport:
    """:func:`run_clients` with the server processes' memory sampled, summarised."""
    sampler = RssSampler(pids).start() if pids else None
    outcomes, elapsed = run_clients(backend_for, image, clients=clients, seconds=seconds, expected=expected)
    memory = sampler.stop() if sampler else None
    return summarise(name, target, outcomes, clients=clients, seconds=seconds, elapsed_s=elapsed, memory=memory)


# --- the two soaks -----------------------------------------------------------------------------------


@dataclass
class SoakReport:
    """What a soak found: each phase's figures, and facts (capacity, pids, whether the servers survived)."""

    target: str
    model: str
    phases: list[PhaseReport]
    facts: dict[str, Any] = field(default_factory=dict)


def soak_serve(image: bytes, *, url: str | None = None, model: str | Path | None = None, clients: int = 8,
               seconds: float = 60.0, overload_clients: int | None = None, overload_seconds: float | None = None,
               expected: Sequence[str] = (), serve_args: Sequence[str] = (), send: Send = "binary",
               on_phase: Callable[[str], None] | None = None) -> SoakReport:
    """Soak ``local serve``: ``clients`` for ``seconds`` (after a short warm-up), then, unless
    ``overload_clients`` is 0, more clients than the server admits (default: its capacity plus
    ``clients``) for ``overload_seconds`` (default: a quarter of ``seconds``, at least 2 s).

    With ``url`` an existing server is used (its memory is sampled when it listens on this
    machine); otherwise ``model`` is served in a child process with ``serve_args``.
    """
    import httpx

    server: ServeProcess | None = None
    if url is None and model is not None:
        server = ServeProcess(model, *serve_args).start()
        url = server.url
    elif url is None or model is not None:  # neither, or both
        raise ValueError("give either url (an existing server) or model (to start one)")
    try:
        base = url.rstrip("/").removesuffix("/classify")
        health = httpx.get(base + "/health", timeout=10).json()
        described = httpx.get(base + "/model", timeout=10).json()
        capacity = int(health.get("capacity", 0)) or None
        pid = server.pid if server else listening_pid(base)
        pids = [pid] if pid else []

        def backend_for(_: int) -> Backend:
            return HttpBackend(base + "/classify", timeout=CLIENT_TIMEOUT_S, send=send, kind="server", connect_retries=0,
                               name=f"local serve {base}")

        report = SoakReport(target=f"local serve {base}", model=f"{described.get('arch')} {described.get('precision')} "
                            f"({described.get('weights')}, {described.get('runtime')})",
                            phases=[], facts={"capacity": capacity, "pid": pid, "max_receiving": health.get("max_receiving")})
        warm = backend_for(0)
        for _ in range(max(2, clients)):  # allocate the runtime's arenas before the memory baseline
            warm.classify(image)
        warm.close()
        if on_phase:
            on_phase(f"steady: {clients} clients for {seconds:g} s")
        steady = run_phase("steady", report.target, backend_for, image, clients=clients, seconds=seconds,
                           expected=expected, pids=pids)
        if capacity is not None and clients > capacity:
            steady.notes.append(f"{clients} clients exceed the server's capacity of {capacity}: 503s are expected")
        report.phases.append(steady)
        heavy = overload_clients if overload_clients is not None else ((capacity or clients) + clients)
        if heavy > 0:
            span = overload_seconds if overload_seconds is not None else max(2.0, seconds / 4)
            if on_phase:
                on_phase(f"overload: {heavy} clients for {span:g} s (capacity {capacity})")
            overload = run_phase("overload", report.target, backend_for, image, clients=heavy, seconds=span,
                                 expected=expected, pids=pids)
            if not any(key.startswith("503 ") for key in overload.errors):
                overload.notes.append(f"no 503: the server kept up with {heavy} clients (capacity {capacity})")
            report.phases.append(overload)
        after = backend_for(0)
        try:  # the server still answers once the load is gone
            report.facts["after"] = after.classify(image).predictions[0].label
        except ClassifierError as exc:
            report.facts["after"] = f"ERROR {exc.message}"
        finally:
            after.close()
        report.facts["alive"] = server.alive() if server else None
        return report
    finally:
        if server is not None:
            server.close()


def soak_emulator(image: bytes, model: str | Path, *, clients: int = 4, seconds: float = 30.0, pool: int | None = None,
                  memory_mb: int = 3008, expected: Sequence[str] = (), emulator: Any = None,
                  on_phase: Callable[[str], None] | None = None) -> SoakReport:
    """Soak the Lambda emulator: ``clients`` sharing one execution environment (every invoke
    serialised by :class:`~local.lambda_env.rie.Emulator`, as behind the GUI), then ``clients`` on a pool
    of ``pool`` environments (default ``clients``; 0 skips it), as the monitor runs them.

    ``emulator`` is an already running :class:`~local.lambda_env.rie.Emulator` to use for the first
    phase (it is left running); otherwise one is started and stopped here.
    """
    from local.clients.emulator import EmulatorBackend
    from local.lambda_env.pool import EmulatorPool
    from local.lambda_env.rie import Emulator

    own = emulator is None
    single = Emulator(model, memory_mb=memory_mb, name="soak-env").start() if own else emulator
    report = SoakReport(target="Lambda emulator (AWS RIE)", model=str(model), phases=[])
    try:
        backend = EmulatorBackend(single, stop_on_close=False, name="one environment")
        backend.classify(image)  # the cold start, outside the figures
        pid = single.pid
        if on_phase:
            on_phase(f"one environment: {clients} clients for {seconds:g} s")
        phase = run_phase("one environment", "emulator", lambda _: backend, image, clients=clients, seconds=seconds,
                          expected=expected, pids=[pid] if pid is not None else [])
        phase.notes.append(f"emulator pid {pid} before, {single.pid} after; alive: {single.alive()}")
        report.facts.update(single_pid_before=pid, single_pid_after=single.pid, single_alive=single.alive())
        report.phases.append(phase)
    finally:
        if own:
            single.stop()
    size = clients if pool is None else pool
    if size > 0:
        with EmulatorPool(model, size=size, memory_mb=memory_mb, name="soak-pool") as environments:
            for environment in environments.emulators:  # each cold start outside the figures and the memory baseline
                EmulatorBackend(environment, stop_on_close=False).classify(image)
            backend = EmulatorBackend(environments, stop_on_close=False, name=f"pool of {size}")
            if on_phase:
                on_phase(f"pool of {size}: {clients} clients for {seconds:g} s")
            pids = [e.pid for e in environments.emulators]
            phase = run_phase(f"pool of {size}", "emulator pool", lambda _: backend, image, clients=clients,
                              seconds=seconds, expected=expected, pids=[p for p in pids if p is not None])
            alive = environments.alive()
            phase.notes.append(f"{size} environments (each cold-started before the figures), all alive at the end: {alive}")
            report.facts.update(pool_alive=alive, pool_pids_unchanged=pids == [e.pid for e in environments.emulators])
            report.phases.append(phase)
    return report
