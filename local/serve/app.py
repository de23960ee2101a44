"""The server approach over HTTP: ``POST /classify`` with the same contract as the Lambda function.

An ASGI app (Starlette on uvicorn) over the shared :class:`Service`. Inference runs in worker
threads limited to ``max_concurrency`` at a time; at most ``max_queue`` more may wait, and past
that the server answers 503 with a reason instead of queueing without bound. Bodies are read
first, with a size limit and a timeout, and only a complete request takes an inference slot: a
slow or half-open client holds only its own connection (at most ``max_receiving`` bodies are
read at once, which bounds the memory they hold). A connection whose request head (line and
headers) is not complete within ``header_timeout_s`` of connecting is closed
(:mod:`local.serve.protocol`): uvicorn alone keeps such a connection open for ever, and enough of
them use up the server's file descriptors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import asdict
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lambda_onnx.classifier import Classifier
from lambda_onnx.contract import Service, check_request_size, error_body, host_section
from lambda_onnx.errors import ClassifierError, PayloadTooLargeError
from lambda_onnx.limits import MAX_REQUEST_BYTES
from lambda_onnx.resources import available_cpus, default_threads
from local.serve.config import _ENV, ServeConfig
from local.serve.gate import Gate
from local.serve.protocol import HeadTimeoutProtocol

log = logging.getLogger(__name__)


class RequestTimeoutError(ClassifierError):
    status = 408
    code = "request_timeout"


async def _read_body(request: Request, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        check_request_size(int(declared))
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_REQUEST_BYTES:
                raise PayloadTooLargeError(f"request body exceeds the limit of {MAX_REQUEST_BYTES:,} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout_s)
    except asyncio.TimeoutError:
        raise RequestTimeoutError(f"the request body did not arrive within {timeout_s:.0f} s") from None
    return b"".join(chunks)


def create_app(config: ServeConfig | None = None) -> Starlette:
    """The ASGI app. Loads the model now, so a bad model fails at start-up, not on a request."""
    config = config or ServeConfig.from_env()
    threads = config.threads or max(1, default_threads() // max(1, config.workers))
    classifier = Classifier(config.model, threads=threads, runtime=config.runtime, fast_preprocess=config.fast_preprocess,
                            int8_kernel=config.int8_kernel, allow_canary_failure=config.allow_canary_failure)
    service = Service(classifier)
    gate = Gate(config.max_concurrency, config.max_queue, config.max_receiving)
    meta = service.classifier.sidecar

    def answer(status: int, body: dict[str, Any], request_id: str) -> JSONResponse:
        headers = {"x-request-id": request_id}
        if status == 503:
            headers["retry-after"] = "1"
        return JSONResponse(body, status_code=status, headers=headers)

    async def classify(request: Request) -> JSONResponse:
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        try:
            gate.start_receiving()
            try:
                body = await _read_body(request, config.body_timeout_s)
            finally:
                gate.done_receiving()
            gate.admit()
        except ClassifierError as exc:
            return answer(exc.status, error_body(exc, request_id), request_id)
        try:
            status, payload = await anyio.to_thread.run_sync(
                lambda: service.respond(body=body, content_type=request.headers.get("content-type"),
                                        request_id=request_id),
                limiter=gate.limiter,
            )
        except ClassifierError as exc:
            status, payload = exc.status, error_body(exc, request_id)
        finally:
            gate.release()
        return answer(status, payload, request_id)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "in_flight": gate.in_flight, "capacity": gate.capacity,
                             "receiving": gate.receiving, "max_receiving": gate.max_receiving})

    async def model(_: Request) -> JSONResponse:
        return JSONResponse({
            **asdict(service.classifier.model), "opset": meta.opset, "num_classes": meta.num_classes,
            "preprocessing": asdict(meta.preprocessing), "init_ms": round(service.init_ms, 1),
            "cpus": available_cpus(), "host": host_section(), "warnings": service.classifier.warnings,
        })

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        error = ClassifierError(exc.detail if isinstance(exc.detail, str) else "error")
        error.status, error.code = exc.status_code, {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(error), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    middleware = []
    if config.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["POST", "GET"],
                                     allow_headers=["content-type", "authorization", "x-request-id"]))
    app = Starlette(
        routes=[Route("/classify", classify, methods=["POST"]), Route("/health", health, methods=["GET"]),
                Route("/model", model, methods=["GET"])],
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
    )
    app.state.service, app.state.gate = service, gate
    return app


def run(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
        app: Starlette | None = None) -> None:
    """Serve until interrupted. With several workers, each process loads its own copy of the model;
    with one, an ``app`` already built (model loaded) is served as it is."""
    import uvicorn

    os.environ[_ENV] = config.to_env()
    if config.workers > 1:
        uvicorn.run("local.serve.app:create_app", factory=True, host=host, port=port, workers=config.workers,
                    log_level=log_level, timeout_keep_alive=5, http=HeadTimeoutProtocol)
    else:
        uvicorn.run(app or create_app(config), host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                    http=HeadTimeoutProtocol)
