"""The local Lambda emulator as a client sees it: each request an API Gateway HTTP API 2.0 event."""

from __future__ import annotations

import json
from typing import Protocol

from local.clients.base import BackendResult
from local.lambda_env.rie import Invocation
from local.wire import SENDS, Send, http_api_event, lambda_response, raise_for_body


class InvokeTarget(Protocol):
    """What answers an invoke: one emulator, a fixed pool or an elastic pool (:mod:`local.lambda_env`)."""

    def invoke(self, payload: bytes) -> Invocation: ...

    def stop(self) -> None: ...


class EmulatorBackend:
    """The local Lambda emulator: each request becomes an HTTP API 2.0 event (the emulator speaks
    only the Invoke API), answered by one environment or by a (fixed or elastic) pool of them.

    ``close()`` stops the emulators unless ``stop_on_close=False`` (when they are shared).
    """

    kind = "serverless"

    def __init__(self, target: InvokeTarget, *, send: Send = "json", name: str = "emulator",
                 stop_on_close: bool = True) -> None:
        if send not in SENDS:
            raise ValueError(f"send must be one of {SENDS}, got {send!r}")
        self.target, self.send, self.name, self.stop_on_close = target, send, name, stop_on_close

    def classify(self, image: bytes) -> BackendResult:
        event = http_api_event(image, self.send)
        payload = json.dumps(event).encode()
        invocation = self.target.invoke(payload)
        status, answer = lambda_response(invocation.payload, self.name)
        body = raise_for_body(status, answer, self.name)
        extra = {"environment": invocation.environment, "queue_ms": invocation.queue_ms,
                 "http_body_bytes": len(event["body"]), **invocation.report}
        return BackendResult(self.name, self.kind, status, body, invocation.round_trip_ms, len(payload),
                             len(invocation.payload), extra=extra)

    def close(self) -> None:
        if self.stop_on_close:
            self.target.stop()
