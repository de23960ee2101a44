"""One client interface for every way to reach a backend.

Each backend has ``classify(image) -> BackendResult`` and ``close()``; failures raise the typed
errors in :mod:`lambda_onnx.errors` (``BackendError`` and subclasses, carrying the server's status
and message). The GUI, the monitor, the benchmark and the tests see only this interface.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lambda_onnx.classifier import Classifier, Prediction
from lambda_onnx.contract import Service
from lambda_onnx.errors import BackendError


@dataclass
class BackendResult:
    """One classification as a client saw it: the server's JSON body plus client-side measurements."""

    backend: str  # human name, e.g. "in-process", "local serve http://127.0.0.1:8000", "emulator"
    kind: str  # "server" or "serverless"
    status: int
    body: dict[str, Any]  # the response body exactly as the server sent it (the wire contract)
    round_trip_ms: float  # measured by the client, network and invoke overhead included
    request_bytes: int  # what the client sent (body or invoke payload)
    response_bytes: int  # what came back
    extra: dict[str, Any] = field(default_factory=dict)  # transport details (e.g. emulator REPORT line)

    @property
    def predictions(self) -> list[Prediction]:
        return [Prediction(**p) for p in self.body.get("predictions", [])]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.body.get("metrics", {})

    @property
    def model(self) -> dict[str, Any]:
        return self.body.get("model", {})

    @property
    def cold_start(self) -> bool | None:
        return self.metrics.get("cold_start")

    @property
    def server_ms(self) -> float:
        """Time spent inside the handler (JSON parse to response body)."""
        return float(self.metrics.get("handler_ms", 0.0))

    @property
    def overhead_ms(self) -> float:
        """Round trip minus handler time: network, invoke, serialisation."""
        return max(0.0, self.round_trip_ms - self.server_ms)


class Backend(Protocol):
    name: str
    kind: str

    def classify(self, image: bytes) -> BackendResult: ...

    def close(self) -> None: ...


def raise_for_body(status: int, body: dict[str, Any], backend: str) -> None:
    """Turn a non-200 contract body into the typed error every client raises."""
    if status == 200:
        return
    message = body.get("message") or f"HTTP {status}"
    raise BackendError(f"{backend}: {message}", status=status, code=body.get("error"))


class InProcessBackend:
    """The local ONNX Runtime runner in this process, through the same contract as the servers."""

    kind = "server"

    def __init__(self, model: Classifier | str | Path, name: str = "in-process") -> None:
        classifier = model if isinstance(model, Classifier) else Classifier(model)
        self.service = Service(classifier)
        self.name = name

    def classify(self, image: bytes) -> BackendResult:
        start = time.perf_counter()
        status, body = self.service.respond(image)
        elapsed = (time.perf_counter() - start) * 1e3
        raise_for_body(status, body, self.name)
        return BackendResult(self.name, self.kind, status, body, elapsed, len(image), len(json.dumps(body)))

    def close(self) -> None:
        pass
