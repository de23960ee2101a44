"""One request through a backend, timed as its client waits for it, and its one outcome type: what the
open loop (replay, calibration) and the closed loop of the soaks record for every request."""

from __future__ import annotations

import time
from dataclasses import dataclass

from lambda_onnx.errors import ClassifierError
from local.clients.base import Backend


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it."""

    status: int  # 200, or the error's status (429, 503, ...; 0 when no answer came)
    latency_ms: float  # the client's wall clock around the call (starting an environment included)
    cold_start: bool | None = None
    environment: str | None = None
    duration_ms: float | None = None  # the function's REPORT duration (emulator)
    init_ms: float | None = None  # the init phase of a cold start (emulator)
    error: str = ""  # why it was not answered (the error's message); "" for an answer
    handler_ms: float | None = None  # the answer's own handler time (decode to answer body), where it says
    code: str = ""  # the error's code (overloaded, throttled, backend_unavailable, ...); "" for an answer
    label: str | None = None  # the answer's top-1
    worker: int = 0  # the client that sent it
    sent_s: float = 0.0  # when it went out, in seconds since the run began (``started``)


def timed_request(backend: Backend, image: bytes, *, worker: int = 0, started: float | None = None) -> Outcome:
    """Classify once and time it as the client waits for it: the one measurement calibration, replay
    and the soaks share, so the simulation is fed exactly what the replay measures. ``started``: the
    run's start on the monotonic clock, for ``sent_s``."""
    sent = time.monotonic()
    sent_s = round(sent - started, 3) if started is not None else 0.0
    began = time.perf_counter()
    try:
        result = backend.classify(image)
    except ClassifierError as exc:
        return Outcome(int(getattr(exc, "status", 0) or 0), (time.perf_counter() - began) * 1e3,
                       error=exc.message, code=exc.code, worker=worker, sent_s=sent_s)
    elapsed = (time.perf_counter() - began) * 1e3
    init = result.extra.get("emulator_init_ms", result.metrics.get("init_ms") if result.cold_start else None)
    top = result.predictions[0].label if result.predictions else None
    return Outcome(result.status, elapsed, result.cold_start, result.extra.get("environment"),
                   result.extra.get("duration_ms"), init, handler_ms=result.metrics.get("handler_ms"), label=top,
                   worker=worker, sent_s=sent_s)
