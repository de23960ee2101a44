"""The one request loop under the monitor, the soaks and the throughput measurement.

N workers in threads, each sending one request after another: paced (request ``seq`` of a worker is
due at ``start + seq x interval``, the monitor's schedule) or back to back (``interval_s=0``, a
closed-loop soak). A worker stops at its request limit, at the deadline, or when ``stop`` is set,
and may pause after an answer (backing off after a 429/503, or after no answer at all, instead of
piling up errors in a tight loop). The soaks record each request as the one
:class:`~local.measure.core.requests.Outcome`; the monitor as its :class:`~local.measure.monitor.Sample`,
the row of its CSV, which keeps every figure an answer carries. The open loop (arrivals at fixed times,
never waiting for earlier answers) is another shape of load: :mod:`local.measure.core.open_loop`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class LoadRun(Generic[T]):
    """A run in progress: its start on the monotonic clock, a stop switch, and the end signal."""

    started: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)


def split(total: int, parts: int) -> list[int]:
    """``total`` requests over ``parts`` workers, as evenly as whole numbers allow."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def start_workers(workers: int, send: Callable[[int, int, float], T], *, interval_s: float = 0.0,
                  duration_s: float | None = None, limits: Sequence[int] | None = None,
                  pause_after: Callable[[T], float] | None = None, on_result: Callable[[T], None] | None = None,
                  run: LoadRun[T] | None = None, name: str = "load") -> LoadRun[T]:
    """Start ``workers`` threads and return at once; ``run.finished`` is set when all have ended.

    ``send(worker, seq, started)`` makes one request and returns its outcome (never raises for what
    the server answers); ``limits[worker]`` caps a worker's requests; ``duration_s`` stops sending
    after that long (a request already sent is finished); ``pause_after(outcome)`` is how long the
    worker waits before its next request (0: none).
    """
    if workers < 1 or interval_s < 0:
        raise ValueError(f"need at least one worker and an interval >= 0, got {workers} and {interval_s}")
    run = run or LoadRun()

    def worker(index: int) -> None:
        limit = None if limits is None else limits[index]
        seq = 0
        while not run.stop.is_set() and (limit is None or seq < limit):
            due = run.started + seq * interval_s
            # The clock too, not only the schedule: with interval 0 every request is "due" at 0.
            if duration_s is not None and max(due, time.monotonic()) - run.started >= duration_s:
                break
            if run.stop.wait(max(0.0, due - time.monotonic())):
                break
            outcome = send(index, seq, run.started)
            if on_result is not None:
                on_result(outcome)
            seq += 1
            pause = pause_after(outcome) if pause_after is not None else 0.0
            if pause > 0 and run.stop.wait(pause):
                break

    run.threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"{name}-{i}") for i in range(workers)]

    def supervise() -> None:
        for thread in run.threads:
            thread.start()
        for thread in run.threads:
            thread.join()
        run.finished.set()

    threading.Thread(target=supervise, daemon=True, name=name).start()
    return run
