"""The server approach over HTTP: ``POST /classify`` with the same contract as the Lambda function.

An ASGI app (Starlette on uvicorn) in front of :mod:`local.serve.lanes`: this process parses HTTP,
admits or refuses, and answers; ``lanes`` processes (the core's
:func:`~lambda_onnx.resources.server_split`: one per CPU, one intra-op thread each, ONNX Runtime's
threads never spinning) decode, preprocess and infer, each one request at a time, taking the next
from one first-in-first-out queue. So one request's decoding overlaps another's inference, every
CPU works while requests wait, and an accepted request waits only for those ahead of it. At most
``max_queue`` requests wait; past that the server answers 503.

``POST /classify`` is a plain ASGI endpoint (:class:`ClassifyEndpoint`), the one path every
request takes, and it decides from the request head, before reading a byte of the body:

- 413 for a declared ``Content-Length`` over the limit;
- 503 with ``Retry-After`` when every lane and queue place is taken, or too many bodies are being
  read: paced and counted as :mod:`local.serve.refusal` says. The unread body is left to uvicorn,
  which discards it as it arrives and keeps the connection: measured, that costs less than closing
  the connection, after which every client reconnects and sends again;
- otherwise the body is read (a size limit, a timeout), and only a complete request takes a lane
  or queue place: a slow or half-open client holds only its own connection (at most
  ``max_receiving`` bodies are read at once, which bounds the memory they hold). A request whose
  client disconnects while it waits for a lane is dropped: no lane classifies for nobody.

A connection whose request head is not complete within ``header_timeout_s`` of connecting is
closed (:mod:`local.serve.protocol`): uvicorn alone keeps such a connection open for ever, and
enough of them use up the server's file descriptors. With several workers (HTTP fronts, each with
lanes of its own), each has a listening socket of its own (:mod:`local.serve.workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lambda_onnx.contract import check_request_size, error_body
from lambda_onnx.errors import ClassifierError, PayloadTooLargeError
from lambda_onnx.limits import MAX_REQUEST_BYTES
from lambda_onnx.resources import available_cpus
from local.serve.config import HOST, PORT, ServeConfig
from local.serve.gate import Gate
from local.serve.lanes import LanePool, json_bytes
from local.serve.protocol import uvicorn_options
from local.serve.refusal import SUMMARY_INTERVAL_S, DropRefusalLines, Refusals

log = logging.getLogger("uvicorn.error")  # the server's own log, formatted and levelled as uvicorn's

_HEADERS_READ = (b"content-length", b"content-type", b"x-request-id")


class RequestTimeoutError(ClassifierError):
    status = 408
    code = "request_timeout"


class _ClientGone(Exception):
    """The client disconnected before its body was complete: nobody is left to answer."""


async def read_body(receive: Any, timeout_s: float) -> bytes:
    """The request body through ASGI ``receive``: 413 past the limit, 408 after ``timeout_s``."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_REQUEST_BYTES:
                    raise PayloadTooLargeError(f"request body exceeds the limit of {MAX_REQUEST_BYTES:,} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestTimeoutError(f"the request body did not arrive within {timeout_s:.0f} s") from None
    return b"".join(chunks)


async def _disconnected(receive: Any) -> None:
    """Returns when the client has gone (its body was read whole: ASGI ``receive`` now only reports that)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class ClassifyEndpoint:
    """``POST /classify`` as a plain ASGI app: refusals from the head, then the body, then a lane."""

    def __init__(self, pool: LanePool, gate: Gate, refusals: Refusals, body_timeout_s: float,
                 close_refused: bool = False) -> None:
        self.pool, self.gate, self.refusals = pool, gate, refusals
        self.body_timeout_s = body_timeout_s
        self.close_refused = close_refused
        self.abandoned = 0  # requests dropped because their client left before the answer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        head: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:  # the first of each, as Starlette's Request.headers.get
            if name in _HEADERS_READ and name not in head:
                head[name] = value
        request_id = head.get(b"x-request-id", b"").decode("latin-1") or str(uuid.uuid4())
        content_type = head[b"content-type"].decode("latin-1") if b"content-type" in head else None
        declared = head.get(b"content-length", b"")
        client = (scope.get("client") or (None,))[0]
        try:
            if declared.isdigit():
                check_request_size(int(declared))
            refusal = self.gate.refusal(client)
        except ClassifierError as exc:
            await self.answer_error(send, exc, request_id)
            return
        if refusal is not None:
            await self.refuse(scope, send, refusal, request_id)
            return
        self.gate.start_receiving(client)
        try:
            body = await read_body(receive, self.body_timeout_s)
        except _ClientGone:
            return
        except ClassifierError as exc:
            await self.answer_error(send, exc, request_id)
            return
        finally:
            self.gate.done_receiving(client)
        try:
            self.gate.admit()
        except ClassifierError as exc:  # the places filled while the body arrived
            await self.refuse(scope, send, exc, request_id)
            return
        job = self.pool.submit(body, content_type, request_id)
        gone = asyncio.ensure_future(_disconnected(receive))
        await asyncio.wait((job.future, gone), return_when=asyncio.FIRST_COMPLETED)
        if not job.future.done():  # the client left while its request waited or ran: nobody to answer
            self.abandoned += 1
            if job.cancel():  # still waiting for a lane: it never runs, and its place is free now
                self.gate.release()
            else:  # running: its place is free when it ends
                job.future.add_done_callback(self._release_unanswered)
            return
        gone.cancel()
        self.gate.release()
        try:
            status, payload = job.future.result()
        except ClassifierError as exc:  # its lane stopped (local.serve.lanes)
            await self.answer_error(send, exc, request_id)
            return
        await answer(send, status, payload, request_id)

    def _release_unanswered(self, future: asyncio.Future[tuple[int, bytes]]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: nobody is left to be told that its lane failed
        self.gate.release()

    async def refuse(self, scope: dict[str, Any], send: Any, error: ClassifierError, request_id: str) -> None:
        """503 with Retry-After, held to the end of the client's refusal window (:mod:`local.serve.refusal`)."""
        self.refusals.count(error.status, error.code)
        client = scope.get("client")
        hold = self.refusals.hold(client[0] if client else None, time.monotonic())
        if hold > 0:
            await asyncio.sleep(hold)
        await answer(send, error.status, json_bytes(error_body(error, request_id)), request_id,
                     retry_after=self.refusals.retry_after_s, close=self.close_refused)

    async def answer_error(self, send: Any, error: ClassifierError, request_id: str) -> None:
        await answer(send, error.status, json_bytes(error_body(error, request_id)), request_id)


async def answer(send: Any, status: int, body: bytes, request_id: str, retry_after: int | None = None,
                 close: bool = False) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json"),
               (b"x-request-id", request_id.encode("latin-1"))]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if close:  # uvicorn closes the connection once this answer is sent
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(config: ServeConfig | None = None) -> Starlette:
    """The ASGI app. Starts the lanes and waits until each has loaded the model, so a bad model fails
    here, not on a request; the lanes stop with the app's lifespan (or :func:`close_app`)."""
    config = config or ServeConfig()
    split = config.split()
    pool = LanePool(config.to_json(), split.lanes, config.lane_timeout_s)
    info = pool.start()
    gate = Gate(split.lanes, config.queue(), config.max_receiving)
    refusals = Refusals(config.retry_after_s, pace=config.pace_refusals)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "in_flight": gate.in_flight, "capacity": gate.capacity,
                             "waiting": pool.waiting, "receiving": gate.receiving, "max_receiving": gate.max_receiving,
                             "workers": split.workers, "lanes": split.lanes, "threads_per_lane": split.threads,
                             "refused": dict(refusals.total), "abandoned": endpoint.abandoned,
                             "lane_restarts": pool.restarts, "lane_failures": pool.failed, "pid": os.getpid(),
                             "lane_pids": [lane.process.pid for lane in pool.lanes]})

    async def model(_: Request) -> JSONResponse:
        return JSONResponse({
            **info["model"], "opset": info["opset"], "num_classes": info["num_classes"],
            "preprocessing": info["preprocessing"], "init_ms": info["init_ms"], "cpus": available_cpus(),
            "workers": split.workers, "lanes": split.lanes, "host": info["host"], "warnings": info["warnings"],
        })

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        error = ClassifierError(exc.detail if isinstance(exc.detail, str) else "error")
        error.status, error.code = exc.status_code, {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(error), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        access = logging.getLogger("uvicorn.access")
        drop = DropRefusalLines()
        access.addFilter(drop)

        async def summarise() -> None:
            while True:
                await asyncio.sleep(SUMMARY_INTERVAL_S)
                line = refusals.summary(SUMMARY_INTERVAL_S)
                if line:
                    log.warning(line)

        task = asyncio.create_task(summarise())
        await pool.open()
        try:
            yield
        finally:
            task.cancel()
            access.removeFilter(drop)
            await pool.aclose()

    middleware = []
    if config.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["POST", "GET"],
                                     allow_headers=["content-type", "authorization", "x-request-id"]))
    endpoint = ClassifyEndpoint(pool, gate, refusals, config.body_timeout_s, close_refused=config.refused_body == "close")
    app = Starlette(
        routes=[Route("/classify", endpoint, methods=["POST"]), Route("/health", health, methods=["GET"]),
                Route("/model", model, methods=["GET"])],
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.pool, app.state.info, app.state.gate, app.state.refusals, app.state.split = pool, info, gate, refusals, split
    return app


def close_app(app: Starlette) -> None:
    """Stop the lanes of an app that was created but will not be served (its lifespan stops them otherwise)."""
    app.state.pool.close()


def run(config: ServeConfig, host: str = HOST, port: int = PORT, log_level: str = "info",
        app: Starlette | None = None) -> None:
    """Serve until interrupted or stopped (SIGTERM: the drain, :mod:`local.serve.drain`). With several
    workers, each HTTP front starts lanes of its own and listens on a socket of its own
    (:mod:`local.serve.workers`); with one, an ``app`` already built (lanes loaded) is served as it is."""
    from local.serve.drain import serve

    if config.split().workers > 1:
        from local.serve.workers import serve_workers

        serve_workers(config, create_app, host=host, port=port, log_level=log_level)
    else:
        serve(app or create_app(config), uvicorn_options(config, log_level), config.drain_timeout_s, host=host, port=port)
