"""The server approach over HTTP: ``POST /classify`` with the same contract as the Lambda function.

An ASGI app (Starlette on uvicorn) over the shared :class:`Service`. Inference runs in worker
threads limited to ``max_concurrency`` at a time; at most ``max_queue`` more may wait, and past
that the server answers 503 with a reason instead of queueing without bound. Bodies are read
first, with a size limit and a timeout, and only a complete request takes an inference slot: a
slow or half-open client holds only its own connection (at most ``max_receiving`` bodies are
read at once, which bounds the memory they hold). A connection whose request head (line and
headers) is not complete within ``header_timeout_s`` of connecting is closed: uvicorn alone keeps
such a connection open for ever, and enough of them use up the server's file descriptors.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import h11
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from lambda_onnx.classifier import Classifier
from lambda_onnx.contract import Service, check_request_size, error_body, host_section
from lambda_onnx.errors import ClassifierError, OverloadedError, PayloadTooLargeError
from lambda_onnx.limits import MAX_REQUEST_BYTES
from lambda_onnx.resources import available_cpus, default_threads
from lambda_onnx.sidecar import int8_path

log = logging.getLogger(__name__)

# Environment variables carry the configuration into each uvicorn worker process.
_ENV = "LOCAL_SERVE_CONFIG"


class RequestTimeoutError(ClassifierError):
    status = 408
    code = "request_timeout"


@dataclass
class ServeConfig:
    """Everything ``create_app`` needs; serialisable so uvicorn workers can rebuild it."""

    model: str = "models/resnet50.onnx"
    runtime: str = "onnxruntime"
    threads: int | None = None  # per worker; default: this worker's share of the CPUs
    fast_preprocess: bool = True
    max_concurrency: int = 1  # inferences at once per worker (each already uses all its threads)
    max_queue: int = 16  # requests allowed to wait for a slot before 503
    max_receiving: int = 64  # requests allowed to be sending their bodies at once before 503
    body_timeout_s: float = 30.0
    header_timeout_s: float = 10.0  # from connecting to the end of the request head
    cors_origins: list[str] = field(default_factory=list)  # empty: no cross-origin access
    workers: int = 1
    int8_kernel: str | None = None  # None: $INT8_KERNEL or auto (lambda_onnx.cpu)
    allow_canary_failure: bool | None = None  # None: $ALLOW_CANARY_FAILURE

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        return cls(**json.loads(os.environ[_ENV]))


class Gate:
    """Admission control in two stages, each refusing with 503 past its bound.

    Receiving: at most ``max_receiving`` requests sending their bodies (cheap, but each may hold up
    to the byte limit). Classifying, once the body is complete: ``max_concurrency`` running,
    ``max_queue`` waiting. A client that stalls mid-body holds a receiving place only, so it
    never takes an inference slot from complete requests.
    """

    def __init__(self, max_concurrency: int, max_queue: int, max_receiving: int = 64) -> None:
        self.limiter = anyio.CapacityLimiter(max_concurrency)
        self.max_queue = max_queue
        self.max_receiving = max_receiving
        self.in_flight = 0  # admitted to classify: running or waiting
        self.receiving = 0  # bodies being read

    @property
    def capacity(self) -> int:
        return int(self.limiter.total_tokens) + self.max_queue

    def start_receiving(self) -> None:
        if self.receiving >= self.max_receiving:
            raise OverloadedError(f"server at capacity: {self.max_receiving} requests are still sending their bodies; "
                                  "retry shortly")
        self.receiving += 1

    def done_receiving(self) -> None:
        self.receiving -= 1

    def admit(self) -> None:
        if self.in_flight >= self.capacity:
            raise OverloadedError(
                f"server at capacity: {int(self.limiter.total_tokens)} classifying and {self.max_queue} waiting; retry shortly"
            )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1


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


def resolve_auto(model: Path, runtime: str, model_given: bool, bench_json: Path | None = None) -> tuple[Path, str, str]:
    """``(model, runtime, why)``: ``runtime="auto"`` becomes the fastest parity-checked runtime x
    precision that ``python -m local bench`` measured on this machine (ONNX Runtime without one)."""
    if runtime != "auto":
        return model, runtime, ""
    from local.bench import DEFAULT_OUT, load_fastest

    choice = load_fastest(bench_json or DEFAULT_OUT / "bench.json")
    if choice is None:
        return model, "onnxruntime", "no benchmark of this machine yet (`python -m local bench` picks the fastest)"
    why = (f"the fastest whose parity holds on this CPU: {choice['runtime']} {choice['precision']}, {choice['median_ms']} ms "
           f"(bench of {choice['measured']})")
    if choice.get("skipped"):
        why += "; faster but skipped: " + "; ".join(f"{x['name']} ({x['median_ms']} ms): {x['why']}" for x in choice["skipped"])
    if choice["precision"] == "int8" and not model_given:
        int8 = int8_path(model)
        if int8.is_file():
            model = int8
        else:
            why += f"; {int8} is not exported (`python -m export --int8`), so serving {model}"
    return model, choice["runtime"], why


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


@functools.cache
def _header_timeout_s() -> float:
    return ServeConfig.from_env().header_timeout_s if _ENV in os.environ else ServeConfig.header_timeout_s


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head (see the module docstring).

    uvicorn's keep-alive timer only covers a connection that sends nothing after a response, and
    any byte disarms it; here every head, the first included, must be complete within
    ``header_timeout_s`` of the connection opening or of the previous response. Module-level, so
    that uvicorn's worker processes can import it."""

    _head_deadline: asyncio.TimerHandle | None = None

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(_header_timeout_s(), self._head_expired)

    def _head_expired(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no complete head yet
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)


def run(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
        app: Starlette | None = None) -> None:
    """Serve until interrupted. With several workers, each process loads its own copy of the model;
    with one, an ``app`` already built (model loaded) is served as it is."""
    import uvicorn

    os.environ[_ENV] = config.to_env()
    if config.workers > 1:
        uvicorn.run("local.serve:create_app", factory=True, host=host, port=port, workers=config.workers,
                    log_level=log_level, timeout_keep_alive=5, http=HeadTimeoutProtocol)
    else:
        uvicorn.run(app or create_app(config), host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                    http=HeadTimeoutProtocol)
