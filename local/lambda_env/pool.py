"""A fixed pool of emulated execution environments: N concurrent requests get N environments."""

from __future__ import annotations

import queue
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from lambda_onnx.errors import ThrottledError
from local.lambda_env.rie import Emulator, Invocation


class EmulatorPool:
    """N emulators: N concurrent requests get N execution environments, each with its own cold start.

    A free environment is taken most-recently-used first, so sequential requests reuse one warm
    environment as on Lambda. When all are busy a request waits up to ``wait_s`` and is then
    throttled, as a function at its reserved concurrency is (``wait_s=0``: throttle at once).
    """

    def __init__(self, model: str | Path | None = None, size: int = 1, *, wait_s: float = 60.0, **emulator_args: Any) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one emulator, got {size}")
        base = emulator_args.pop("name", "env")
        self.emulators = [Emulator(model, name=f"{base}-{i}", **emulator_args) for i in range(size)]
        self.wait_s = wait_s
        self._free: queue.LifoQueue[Emulator] = queue.LifoQueue()
        for emulator in reversed(self.emulators):  # env-0 on top: used first
            self._free.put(emulator)

    @property
    def size(self) -> int:
        return len(self.emulators)

    @property
    def concurrency(self) -> int:
        """Invokes that can run at once: one per environment."""
        return len(self.emulators)

    @property
    def function_name(self) -> str:
        return self.emulators[0].function_name

    @property
    def region(self) -> str:
        return self.emulators[0].region

    def start(self) -> EmulatorPool:
        started: list[Emulator] = []
        try:
            for emulator in self.emulators:
                started.append(emulator.start())
        except BaseException:
            for emulator in started:
                emulator.stop()
            raise
        return self

    def stop(self) -> None:
        for emulator in self.emulators:
            emulator.stop()

    def restart(self) -> EmulatorPool:
        """Every environment cold again (and any dead one back)."""
        for emulator in self.emulators:
            emulator.restart()
        return self

    def alive(self) -> bool:
        return all(emulator.alive() for emulator in self.emulators)

    def invoke(self, payload: bytes | str | Mapping[str, Any], **kwargs: Any) -> Invocation:
        """Invoke on a free environment (see the class docstring for when all are busy)."""
        start = time.perf_counter()
        try:
            emulator = self._free.get(timeout=self.wait_s) if self.wait_s > 0 else self._free.get_nowait()
        except queue.Empty:
            raise ThrottledError(f"all {self.size} emulated environments were busy for {self.wait_s:g} s", status=429) from None
        queued = (time.perf_counter() - start) * 1e3
        try:
            invocation = emulator.invoke(payload, **kwargs)
        finally:
            self._free.put(emulator)
        return replace(invocation, queue_ms=queued)

    def __enter__(self) -> EmulatorPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
