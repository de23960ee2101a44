"""The one client interface: ``classify(image) -> BackendResult`` and ``close()``, for every backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lambda_onnx.classifier import ModelBody, Prediction
from lambda_onnx.contract import HostBody, MetricsBody, ResponseBody

DEFAULT_TIMEOUT_S = 60.0  # above Lambda's 30 s API Gateway limit plus a cold start
CONNECT_TIMEOUT_S = 5.0


@dataclass
class BackendResult:
    """One classification as a client saw it: the server's JSON body plus client-side measurements."""

    backend: str  # human name, e.g. "in-process", "local serve http://127.0.0.1:8000", "emulator"
    kind: str  # "server" or "serverless"
    status: int
    body: ResponseBody  # the response body exactly as the server sent it (the wire contract)
    round_trip_ms: float  # measured by the client, network and invoke overhead included
    request_bytes: int  # what the client sent (body or invoke payload)
    response_bytes: int  # what came back
    extra: dict[str, Any] = field(default_factory=dict)  # transport details (e.g. emulator REPORT line)

    @property
    def predictions(self) -> list[Prediction]:
        return [Prediction.from_body(p) for p in self.body.get("predictions", [])]

    @property
    def metrics(self) -> MetricsBody:
        return self.body["metrics"]

    @property
    def model(self) -> ModelBody:
        return self.body["model"]

    @property
    def host(self) -> HostBody:
        return self.body["host"]

    @property
    def cold_start(self) -> bool:
        return self.metrics["cold_start"]

    @property
    def server_ms(self) -> float:
        """Time spent inside the handler (JSON parse to response body)."""
        return float(self.metrics["handler_ms"])

    @property
    def overhead_ms(self) -> float:
        """Round trip minus handler time: network, invoke, serialisation."""
        return max(0.0, self.round_trip_ms - self.server_ms)


class Backend(Protocol):
    name: str
    kind: str

    def classify(self, image: bytes) -> BackendResult: ...

    def close(self) -> None: ...
