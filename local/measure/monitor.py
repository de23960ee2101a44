"""Long-run monitoring: the one-hour CloudWatch run of the PyTorch-on-Lambda project, done here.

Each backend gets ``concurrency`` workers; every worker sends the same image once per
``interval_s`` until the duration or the request count is reached, or ``stop`` is set. Every
answer (or error) becomes a :class:`Sample`; :func:`summarise` gives the per-backend table.
The GUI's monitor view and ``python -m local monitor`` both run this, and both describe the run
with one :class:`MonitorSettings` (what its report shows people).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lambda_onnx.cpu import CpuInfo
from lambda_onnx.errors import ClassifierError
from lambda_onnx.sidecar import load_verified
from local.clients.base import Backend
from local.measure.core.closed_loop import LoadRun, split, start_workers
from local.measure.core.stats import duration_summary

NO_ANSWER_PAUSE_S = 0.5  # a worker's pause after a request that got no answer (status 0)


@dataclass(frozen=True)
class MonitorSettings:
    """What a run was asked to do, as the people reading its report need it.

    Built by the CLI and the GUI alike and rendered by :mod:`local.report.monitor`; typed rather than the
    parser's namespace, so a report shows the run's settings, not the command line's internals.
    """

    backends: tuple[str, ...]  # the backends' names, as the samples and the summary name them
    model: str  # the model's label (``efficientnet_lite0 fp32 (...)``), see :func:`model_facts`
    random_weights: bool  # predictions meaningless: the report says so at the top
    photo: str  # a sample photo's name, or the path of the image file sent
    interval_s: float  # between one worker's requests
    concurrency: int  # workers per backend (on the emulator, environments in its pool)
    requests: int | None = None  # per backend; the run stops after them
    duration_s: float | None = None  # the run stops after this long; with neither, when stopped


def model_facts(model: Path) -> tuple[str, bool]:
    """The label of the model at ``model`` and whether its weights are random, from its sidecar.

    Never raises: when both sides are remote the model file need not exist here, and the run
    still deserves a report; its label then says why the model is not known.
    """
    try:
        sidecar = load_verified(model, verify_sha256=False)
    except ClassifierError as exc:
        return f"not known here ({exc.message})", False
    return sidecar.label, sidecar.random_weights


@dataclass(frozen=True)
class Sample:
    backend: str
    kind: str
    worker: int
    seq: int  # this worker's request number, from 0
    t_s: float  # seconds since the run started, when the request was sent
    timestamp: str  # wall clock, UTC ISO 8601
    ok: bool
    status: int
    round_trip_ms: float | None
    server_ms: float | None
    inference_ms: float | None
    cold_start: bool | None
    init_ms: float | None
    peak_rss_mb: float | None
    error: str
    cpu: str = ""  # the CPU that answered (the answer's host section): Lambda hosts vary between cold starts
    int8_kernel: str = ""
    canary: str = ""


@dataclass(frozen=True)
class Stats:
    backend: str
    cpu: str  # "" when the backend answered from one CPU only (or none); else one row per CPU
    count: int
    errors: int
    cold_starts: int
    min_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None


class MonitorRun(LoadRun[Sample]):
    """Samples of one run, appended from worker threads; read them at any time."""

    def __init__(self, backends: Sequence[str], planned: int | None) -> None:
        super().__init__()
        self.backends = list(backends)
        self.planned = planned  # total requests planned, or None for a duration-bound run
        self._samples: list[Sample] = []
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)

    @property
    def samples(self) -> list[Sample]:
        with self._lock:
            return sorted(self._samples, key=lambda s: (s.t_s, s.backend, s.worker))

    def stats(self) -> list[Stats]:
        return summarise(self.samples, self.backends)

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(Sample)])
        writer.writeheader()
        for sample in self.samples:
            writer.writerow(asdict(sample))
        return buffer.getvalue()


def summarise(samples: Sequence[Sample], backends: Sequence[str] | None = None) -> list[Stats]:
    """Count, errors, cold starts and round-trip percentiles per backend (successes only), and per
    CPU within a backend when its answers came from more than one (Lambda's hosts vary between cold
    starts, and an older CPU can be both slower and, for INT8, differently exact)."""
    names = list(backends) if backends is not None else sorted({s.backend for s in samples})
    out = []
    for name in names:
        mine = [s for s in samples if s.backend == name]
        cpus = sorted({s.cpu for s in mine if s.cpu})
        groups = [("", mine)] if len(cpus) <= 1 else [(cpu, [s for s in mine if s.cpu == cpu]) for cpu in cpus]
        if len(cpus) > 1 and any(not s.cpu for s in mine):  # failed requests name no CPU
            groups.append(("(no answer)", [s for s in mine if not s.cpu]))
        for cpu, group in groups:
            times = duration_summary([s.round_trip_ms for s in group if s.ok and s.round_trip_ms is not None])
            out.append(Stats(
                backend=name, cpu=cpu, count=len(group), errors=sum(not s.ok for s in group),
                cold_starts=sum(bool(s.cold_start) for s in group), min_ms=times.get("min"), p50_ms=times.get("p50"),
                p90_ms=times.get("p90"), p99_ms=times.get("p99"), max_ms=times.get("max"), mean_ms=times.get("mean"),
            ))
    return out


def _sample(backend: Backend, worker: int, seq: int, started: float, image: bytes) -> Sample:
    sent = time.monotonic()
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    try:
        result = backend.classify(image)
    except ClassifierError as exc:
        return Sample(backend.name, backend.kind, worker, seq, round(sent - started, 3), stamp, False, exc.status,
                      None, None, None, None, None, None, f"{exc.code}: {exc.message}")
    m, model = result.metrics, result.model
    return Sample(backend.name, backend.kind, worker, seq, round(sent - started, 3), stamp, True, result.status,
                  round(result.round_trip_ms, 3), m["handler_ms"], m["inference_ms"], m["cold_start"],
                  m["init_ms"], m["peak_rss_mb"], "", cpu_label(result.host), model["int8_kernel"] or "",
                  (model.get("canary") or {}).get("status", ""))


def cpu_label(host: Mapping[str, Any]) -> str:
    """``AMD EPYC, x86_64 (avx2, fma; no VNNI)`` from an answer's host section ("" when it has none)."""
    return CpuInfo.from_section(host).describe() if host.get("cpu") else ""


def start_monitor(backends: Sequence[Backend], image: bytes, *, interval_s: float = 30.0, duration_s: float | None = None,
                  requests: int | None = None, concurrency: int = 1,
                  on_sample: Callable[[Sample], None] | None = None) -> MonitorRun:
    """Start a run in background threads and return at once; ``run.finished`` is set at the end.

    ``requests`` is per backend (split across its ``concurrency`` workers); with neither
    ``requests`` nor ``duration_s`` the run goes on until ``run.stop`` is set.
    """
    if interval_s < 0 or concurrency < 1:
        raise ValueError("interval must be >= 0 and concurrency >= 1")
    workers = [(backend, w) for backend in backends for w in range(concurrency)]
    per_worker = None if requests is None else split(requests, concurrency)
    run = MonitorRun([b.name for b in backends], None if requests is None else requests * len(backends))

    def send(index: int, seq: int, started: float) -> Sample:
        backend, worker = workers[index]
        return _sample(backend, worker, seq, started, image)

    def record(sample: Sample) -> None:
        run.add(sample)
        if on_sample:
            on_sample(sample)

    # No answer at all (a killed emulator, a refused connection) comes back at once: asking again in a
    # tight loop would only pile up error samples until the run ends.
    start_workers(len(workers), send, interval_s=interval_s, duration_s=duration_s,
                  limits=None if per_worker is None else [per_worker[w] for _, w in workers],
                  pause_after=lambda sample: NO_ANSWER_PAUSE_S if sample.status == 0 else 0.0, on_result=record, run=run,
                  name="monitor")
    return run


def run_monitor(backends: Sequence[Backend], image: bytes, **kwargs) -> MonitorRun:
    """Like :func:`start_monitor`, but waits for the run to end."""
    run = start_monitor(backends, image, **kwargs)
    run.finished.wait()
    return run
