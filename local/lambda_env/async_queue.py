"""Lambda's asynchronous invocation queue, emulated: what ``InvocationType=Event`` hands its events to.

What Lambda does (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html,
https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html): the Invoke API
answers 202 once the event is queued; the function runs it later on the same execution environments
(async and sync invokes share the function's concurrency) and its result goes nowhere. A throttle or
a system error puts the event back, retried after a delay that grows from 1 s to at most 5 min, for
up to the event's maximum age (6 h by default); a function error is retried twice, 1 min and then
2 min later.

Here, on the emulated environments:

- the queue is bounded: at most ``capacity`` events wait (each at most 1 MB, Lambda's asynchronous
  payload limit). Lambda's queue has no bound a caller can reach; this one is memory in one process,
  so past it :meth:`AsyncQueue.submit` refuses the event with a throttle (429,
  :data:`QUEUE_FULL_REASON`) and the caller, as a Lambda caller does for a throttled Invoke, retries;
- throttles and dead environments: retried as Lambda does, the delay doubling from 1 s up to
  ``max_retry_delay_s``, until the event is ``max_event_age_s`` old; then it is dropped and logged;
- function errors (the handler raised, timed out, or its runtime crashed): logged, not retried
  (Lambda's two retries would hold a local event for three minutes);
- at shutdown, events still queued are dropped (counted, logged, and returned by :meth:`AsyncQueue.stop`:
  the emulator keeps no state between runs) and invokes in flight get ``drain_s`` to finish before
  their environments are stopped.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lambda_onnx.errors import BackendError, BackendUnavailableError, ThrottledError

DEFAULT_ASYNC_QUEUE = 100  # events waiting; with 1 MB each at most, about 100 MB held at worst
DEFAULT_MAX_EVENT_AGE_S = 6 * 3600.0  # Lambda's default MaximumEventAgeInSeconds
FIRST_RETRY_DELAY_S = 1.0
MAX_RETRY_DELAY_S = 300.0  # Lambda's throttle retries back off up to 5 minutes
DEFAULT_DRAIN_S = 5.0
# The Invoke API's throttle reason for an event the full queue cannot take: events arrive faster
# than the function's environments run them (Lambda's ThrottleReason values: botocore's service model).
QUEUE_FULL_REASON = "FunctionInvocationRateLimitExceeded"

log = logging.getLogger(__name__)

# Runs one event: returns whether the function succeeded (False: a function error, already logged);
# raises ThrottledError or BackendUnavailableError to have the event retried.
RunEvent = Callable[[bytes, str], bool]


@dataclass
class _Event:
    payload: bytes
    request_id: str
    accepted: float  # time.monotonic() when the Invoke API took it


class AsyncQueue:
    """A bounded queue of asynchronous invocations, run by ``workers`` threads with ``run``.

    Counters, for tests and reports: ``accepted``, ``refused`` (queue full), ``succeeded``,
    ``function_errors``, ``failed`` (could not be run and not retried), ``retried`` (attempts put
    back after a throttle or a dead environment), ``expired`` (older than ``max_event_age_s``) and
    ``dropped`` (still queued, or cut short, at shutdown).
    """

    def __init__(self, run: RunEvent, *, workers: int, capacity: int = DEFAULT_ASYNC_QUEUE,
                 max_event_age_s: float = DEFAULT_MAX_EVENT_AGE_S, max_retry_delay_s: float = MAX_RETRY_DELAY_S,
                 name: str = "async") -> None:
        if workers < 1 or capacity < 1:
            raise ValueError(f"an async queue needs at least one worker and room for one event, got {workers} and {capacity}")
        self.run, self.workers, self.capacity, self.name = run, int(workers), int(capacity), name
        self.max_event_age_s, self.max_retry_delay_s = float(max_event_age_s), float(max_retry_delay_s)
        self.accepted = self.refused = self.succeeded = self.function_errors = 0
        self.failed = self.retried = self.expired = self.dropped = 0
        self._events: collections.deque[_Event] = collections.deque()
        self._changed = threading.Condition()
        self._running = 0  # events a worker holds (running, or waiting to retry)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def queued(self) -> int:
        with self._changed:
            return len(self._events)

    def start(self) -> AsyncQueue:
        with self._changed:
            if self._threads:
                return self
            self._stopping.clear()
            self._threads = [threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True) for i in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def submit(self, payload: bytes, request_id: str) -> None:
        """Queue one event, or refuse it: :class:`ThrottledError` (429) when ``capacity`` events wait,
        :class:`BackendUnavailableError` when the queue is not running."""
        with self._changed:
            if not self._threads or self._stopping.is_set():
                raise BackendUnavailableError(f"{self.name}: the asynchronous invocation queue is not running")
            if len(self._events) >= self.capacity:
                self.refused += 1
                raise ThrottledError(f"Rate Exceeded: {self.capacity} asynchronous invocations are already queued for the "
                                     f"function's environments; retry later", status=429, code=QUEUE_FULL_REASON)
            self._events.append(_Event(payload, request_id, time.monotonic()))
            self.accepted += 1
            self._changed.notify()

    def wait_idle(self, timeout_s: float) -> bool:
        """Until no event is queued or running (True), or ``timeout_s`` has passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._events and not self._running, timeout=timeout_s)

    def stop(self, drain_s: float = DEFAULT_DRAIN_S) -> int:
        """Stop taking events, drop the queued ones, give those in flight ``drain_s`` to finish.
        Returns how many queued events were dropped."""
        with self._changed:
            self._stopping.set()
            dropped = len(self._events)
            self._events.clear()
            self.dropped += dropped
            self._changed.notify_all()
            threads, self._threads = self._threads, []
        if dropped:
            log.warning("%s: %d queued asynchronous invocation(s) dropped at shutdown", self.name, dropped)
        deadline = time.monotonic() + drain_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return dropped

    # --- the workers -------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._events or self._stopping.is_set())
                if self._stopping.is_set():
                    return
                event = self._events.popleft()
                self._running += 1
            try:
                self._deliver(event)
            finally:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()

    def _deliver(self, event: _Event) -> None:
        """Run one event until it succeeds, fails, expires or the queue stops."""
        delay = FIRST_RETRY_DELAY_S
        while True:
            try:
                ok = self.run(event.payload, event.request_id)
            except (ThrottledError, BackendUnavailableError) as exc:
                age = time.monotonic() - event.accepted
                if self._stopping.is_set():
                    self._count("dropped")
                    log.warning("%s: event %s cut short by the shutdown: %s", self.name, event.request_id, exc.message)
                    return
                if age + delay > self.max_event_age_s:
                    self._count("expired")
                    log.warning("%s: event %s dropped after %.0f s of retries (maximum event age %.0f s): %s", self.name,
                                event.request_id, age, self.max_event_age_s, exc.message)
                    return
                self._count("retried")
                log.info("%s: event %s retried in %.0f s: %s", self.name, event.request_id, delay, exc.message)
                if self._stopping.wait(delay):
                    self._count("dropped")
                    return
                delay = min(delay * 2, self.max_retry_delay_s)
                continue
            except BackendError as exc:  # e.g. no answer in time (its environment was replaced): not retried
                self._count("failed")
                log.warning("%s: event %s failed: %s", self.name, event.request_id, exc.message)
                return
            except Exception:  # a worker never dies of one event
                self._count("failed")
                log.exception("%s: event %s failed", self.name, event.request_id)
                return
            self._count("succeeded" if ok else "function_errors")
            return

    def _count(self, counter: str) -> None:
        with self._changed:
            setattr(self, counter, getattr(self, counter) + 1)
