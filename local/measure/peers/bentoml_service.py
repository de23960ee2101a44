"""The BentoML peer of ``local serve`` for ``python -m local loadtest --peers``: the same model, the
same preprocessing and the same answer (this repository's ``lambda_onnx``), as little BentoML code as
its documentation shows, run in its own virtualenv (``local/measure/peers/setup.sh``).

``bentoml serve local.measure.peers.bentoml_service:Classify`` from the repository root, with
``PEER_MODEL`` (the ``.onnx``), ``PEER_WORKERS`` (processes) and ``PEER_THREADS`` (ONNX Runtime
threads per process) in the environment. ``POST /classify`` takes the raw image as the body (a
root input: the API's one positional-only argument) and answers the contract's JSON body.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml

from lambda_onnx.classifier import Classifier
from lambda_onnx.contract import Service

WORKERS = int(os.environ.get("PEER_WORKERS", "1"))


@bentoml.service(workers=WORKERS, threads=1, traffic={"timeout": 60})
class Classify:
    def __init__(self) -> None:
        self.service = Service(Classifier(os.environ["PEER_MODEL"], threads=int(os.environ.get("PEER_THREADS", "1"))))

    @bentoml.api(route="/classify")
    def classify(self, image: bytes, /) -> dict[str, Any]:
        status, body = self.service.respond(body=image, content_type="image/jpeg")
        answer: dict[str, Any] = dict(body)
        if status != 200:
            raise bentoml.exceptions.InvalidArgument(answer["message"])
        return answer
