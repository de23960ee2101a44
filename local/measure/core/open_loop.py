"""The open loop: requests started at scheduled times from a thread pool, never waiting for earlier
answers (a closed loop would slow down exactly when the system does, and hide the queueing a
simulation predicts). The replay sends a scenario's arrivals through it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from local.measure.core.requests import Outcome

DEFAULT_WORKERS = 64  # threads: far above what 2 CPUs serve at once, so sending never waits for a thread
LEAD_S = 0.5  # the schedule starts this long after the call, once the threads exist


@dataclass(frozen=True)
class ReplaySample:
    index: int
    scheduled_s: float
    sent_s: float  # when the request really went out (never before its schedule)
    outcome: Outcome


@dataclass
class OpenLoopRun:
    """Every scheduled request's outcome, in schedule order."""

    target: str
    samples: list[ReplaySample]
    wall_s: float
    stopped: bool = False

    @property
    def lateness_ms(self) -> dict[str, float]:
        """How late requests went out against their schedule (the open loop's own fidelity)."""
        late = np.array([(s.sent_s - s.scheduled_s) * 1e3 for s in self.samples]) if self.samples else np.zeros(1)
        return {"p50": round(float(np.percentile(late, 50)), 2), "p99": round(float(np.percentile(late, 99)), 2),
                "max": round(float(late.max()), 2)}


def open_loop(schedule: Sequence[float] | np.ndarray, send: Callable[[int], Outcome], *, workers: int = DEFAULT_WORKERS,
              stop: threading.Event | None = None, on_progress: Callable[[int, int], None] | None = None,
              target: str = "replay") -> OpenLoopRun:
    """Call ``send(i)`` at ``schedule[i]`` seconds (sorted, from 0) after a short lead, each on a
    thread of its own, without waiting for earlier calls to return. ``stop`` ends it early."""
    times = [float(t) for t in schedule]
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("the schedule must be sorted")
    stop = stop or threading.Event()
    samples: list[ReplaySample | None] = [None] * len(times)
    done = [0]
    lock = threading.Lock()
    origin = time.monotonic() + LEAD_S

    def one(i: int) -> None:
        sent = time.monotonic() - origin
        outcome = send(i)
        samples[i] = ReplaySample(i, times[i], sent, outcome)
        with lock:
            done[0] += 1
            finished = done[0]
        if on_progress is not None:
            on_progress(finished, len(times))

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"replay-{target}") as pool:
        for i, t in enumerate(times):
            if stop.wait(max(0.0, origin + t - time.monotonic())):
                break
            pool.submit(one, i)
    return OpenLoopRun(target, [s for s in samples if s is not None], time.monotonic() - began, stop.is_set())
