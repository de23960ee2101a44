"""An elastic emulated Lambda: execution environments started on demand, reused, reclaimed, throttled.

What Lambda does with a function's environments (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html,
https://docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html), done with real emulators
(:class:`local.lambda_env.rie.Emulator`, one RIE and one runtime each):

- a request that finds no idle environment gets a new one: its first invoke runs the init phase
  (a cold start), and starting the environment is part of what that client waits for;
- idle environments are reused most recently used first, so a trickle of requests keeps one warm;
- an environment idle for ``idle_timeout_s`` is stopped by a reaper thread (Lambda's timeout is
  not documented: see :data:`DEFAULT_IDLE_TIMEOUT_S`);
- with ``max_concurrency`` environments busy (a function's reserved concurrency), a request is
  throttled at once with 429 and Lambda's reason, not queued.

It offers the surface :class:`local.lambda_env.pool.EmulatorPool` offers (``invoke``, ``start``, ``stop``,
``restart``, ``alive``, ``size``, ``concurrency``, ``function_name``, ``region``, ``emulators``, a context
manager), so ``InvokeFront`` and
``EmulatorBackend`` work on it unchanged.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from lambda_onnx.errors import BackendError, BackendUnavailableError, ThrottledError
from local.lambda_env.rie import DEFAULT_FUNCTION_NAME, DEFAULT_REGION, Emulator, Invocation

# How long Lambda keeps an idle execution environment is not documented by AWS ("for some time").
# Published measurements: every idle instance reclaimed 10 minutes after its last request
# (Shilkov, https://mikhail.io/2019/08/aws-lambda-cold-starts-after-10-minutes/, 2019-08); 45-60 min
# in 2017 (Cui, https://theburningmonk.com/2017/06/finding-coldstarts-how-long-does-aws-lambda-keep-your-idle-functions-around/).
# SimFaaS (Mahmoudi & Khazaei, ICPE 2021) defaults to 600 s as well. 600 s is the default here.
DEFAULT_IDLE_TIMEOUT_S = 600.0
DEFAULT_MAX_CONCURRENCY = 4  # what 2 CPUs bear; Lambda's account default is 1,000
# Lambda's reason for a function at its reserved concurrency (the Invoke API's TooManyRequestsException).
THROTTLE_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"

log = logging.getLogger(__name__)


class ElasticPool:
    """Environments on demand, at most ``max_concurrency`` at once, each stopped after
    ``idle_timeout_s`` idle. ``emulator_args`` go to every :class:`Emulator` (memory, timeout, ...).

    Counters for tests and reports: ``started`` (environments ever started, i.e. cold starts),
    ``reclaimed`` (stopped by the idle timeout) and ``throttled`` (requests refused with 429).
    """

    def __init__(self, model: str | Path | None = None, *, max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, name: str = "env", **emulator_args: Any) -> None:
        if max_concurrency < 1:
            raise ValueError(f"the concurrency limit must be at least 1, got {max_concurrency}")
        if idle_timeout_s <= 0:
            raise ValueError(f"the idle timeout must be positive, got {idle_timeout_s} s")
        self.model, self.max_concurrency, self.idle_timeout_s = model, int(max_concurrency), float(idle_timeout_s)
        self.name, self.emulator_args = name, emulator_args
        self.started = self.reclaimed = self.throttled = 0
        self._numbers = itertools.count()
        self._changed = threading.Condition()
        self._idle: list[tuple[Emulator, float]] = []  # (environment, idle since): oldest first, most recent last
        self._busy: set[Emulator] = set()
        self._starting = 0
        self._generation = 0  # restart() makes every environment of an older generation stale
        self._generations: dict[Emulator, int] = {}
        self._running = False
        self._reaper: threading.Thread | None = None

    # --- the pool's surface ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Environments that exist now (idle, busy or starting)."""
        with self._changed:
            return len(self._idle) + len(self._busy) + self._starting

    @property
    def concurrency(self) -> int:
        """Invokes that can run at once: the concurrency limit."""
        return self.max_concurrency

    @property
    def function_name(self) -> str:
        return str(self.emulator_args.get("function_name", DEFAULT_FUNCTION_NAME))

    @property
    def region(self) -> str:
        return str(self.emulator_args.get("region", DEFAULT_REGION))

    @property
    def emulators(self) -> list[Emulator]:
        with self._changed:
            return [emulator for emulator, _ in self._idle] + sorted(self._busy, key=lambda e: e.name)

    @property
    def idle(self) -> int:
        with self._changed:
            return len(self._idle)

    def start(self) -> ElasticPool:
        """Start the reaper; environments start with the requests that need them (from zero, as Lambda)."""
        with self._changed:
            if self._running:
                return self
            self._running = True
        self._reaper = threading.Thread(target=self._reap, name=f"{self.name}-reaper", daemon=True)
        self._reaper.start()
        return self

    def stop(self) -> None:
        """Stop the reaper and every environment (an invoke in flight fails as its environment stops)."""
        with self._changed:
            self._running = False
            victims = [emulator for emulator, _ in self._idle] + list(self._busy)
            self._idle.clear()
            self._changed.notify_all()
        if self._reaper is not None and self._reaper is not threading.current_thread():
            self._reaper.join()
        self._reaper = None
        for emulator in victims:
            emulator.stop()

    def restart(self) -> ElasticPool:
        """Every environment cold again: the idle ones stop now, the busy ones when they finish."""
        with self._changed:
            self._generation += 1
            victims = [emulator for emulator, _ in self._idle]
            self._idle.clear()
        for emulator in victims:
            emulator.stop()
        return self.start()

    def alive(self) -> bool:
        return self._running and self._reaper is not None and self._reaper.is_alive()

    def __enter__(self) -> ElasticPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- invoking --------------------------------------------------------------------------------

    def invoke(self, payload: bytes | str | Mapping[str, Any], **kwargs: Any) -> Invocation:
        """Invoke on the most recently used idle environment, or on a new one (a cold start whose
        start time is in ``report["environment_start_ms"]``); 429 :class:`ThrottledError` when
        ``max_concurrency`` are busy."""
        emulator, start_ms = self._acquire()
        try:
            invocation = emulator.invoke(payload, **kwargs)
        except BackendError:
            self._release(emulator, failed=True)
            raise
        self._release(emulator)
        if start_ms is not None:
            invocation = replace(invocation, report={**invocation.report, "environment_start_ms": round(start_ms, 2)})
        return invocation

    def _acquire(self) -> tuple[Emulator, float | None]:
        with self._changed:
            if not self._running:
                raise BackendUnavailableError(f"{self.name}: the elastic emulator is not running; call start()")
            while self._idle:
                emulator, _ = self._idle.pop()
                if emulator.alive():
                    self._busy.add(emulator)
                    return emulator, None
                self._generations.pop(emulator, None)  # died while idle: Lambda would start another
            if len(self._busy) + self._starting >= self.max_concurrency:
                self.throttled += 1
                raise ThrottledError(
                    f"Rate Exceeded: all {self.max_concurrency} execution environments of the function are busy (its "
                    f"concurrency limit); Lambda throttles the request (429 TooManyRequestsException, reason "
                    f"{THROTTLE_REASON}) rather than queueing it", status=429, code=THROTTLE_REASON)
            self._starting += 1
            number, generation = next(self._numbers), self._generation
        emulator = Emulator(self.model, name=f"{self.name}-{number}", **self.emulator_args)
        began = time.perf_counter()
        try:
            emulator.start()
        except BaseException:
            with self._changed:
                self._starting -= 1
            emulator.stop()
            raise
        with self._changed:
            self._starting -= 1
            self.started += 1
            self._busy.add(emulator)
            self._generations[emulator] = generation
        return emulator, (time.perf_counter() - began) * 1e3

    def _release(self, emulator: Emulator, failed: bool = False) -> None:
        with self._changed:
            self._busy.discard(emulator)
            keep = (self._running and emulator.alive() and not failed
                    and self._generations.get(emulator) == self._generation)
            if keep:
                self._idle.append((emulator, time.monotonic()))
                self._changed.notify_all()
            else:
                self._generations.pop(emulator, None)
        if not keep:
            emulator.stop()

    # --- reclaiming ------------------------------------------------------------------------------

    def _reap(self) -> None:
        """Stop each environment once it has been idle for the idle timeout (woken at that moment)."""
        while True:
            with self._changed:
                if not self._running:
                    return
                now = time.monotonic()
                expired = []
                while self._idle and now - self._idle[0][1] >= self.idle_timeout_s:
                    expired.append(self._idle.pop(0)[0])
                if not expired:
                    wait = self.idle_timeout_s - (now - self._idle[0][1]) if self._idle else None
                    self._changed.wait(wait)
                    continue
                self.reclaimed += len(expired)
                for emulator in expired:
                    self._generations.pop(emulator, None)
            for emulator in expired:  # outside the lock: stopping takes a moment, invokes go on
                log.debug("%s: idle for %.1f s: stopped", emulator.name, self.idle_timeout_s)
                emulator.stop()
