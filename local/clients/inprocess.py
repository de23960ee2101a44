"""The local runner in this process, through the same contract as the servers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lambda_onnx.classifier import Classifier
from lambda_onnx.contract import Service
from local.clients.base import BackendResult
from local.wire import raise_for_body


class InProcessBackend:
    """The local ONNX Runtime runner in this process, through the same contract as the servers."""

    kind = "server"

    def __init__(self, model: Classifier | str | Path, name: str = "in-process") -> None:
        classifier = model if isinstance(model, Classifier) else Classifier(model)
        self.service = Service(classifier)
        self.name = name

    def classify(self, image: bytes) -> BackendResult:
        start = time.perf_counter()
        status, answer = self.service.respond(image)
        elapsed = (time.perf_counter() - start) * 1e3
        body = raise_for_body(status, answer, self.name)
        return BackendResult(self.name, self.kind, status, body, elapsed, len(image), len(json.dumps(body)))

    def close(self) -> None:
        pass
