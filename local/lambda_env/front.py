"""One Invoke API URL in front of the emulated environments, safe for any number of concurrent clients."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
from typing import Any, Protocol

from lambda_onnx.errors import BackendError, BackendTimeoutError
from lambda_onnx.limits import LAMBDA_PAYLOAD_BYTES
from local.lambda_env.rie import INVOKE_PATH, Invocation

log = logging.getLogger(__name__)


class Environments(Protocol):
    """What the front hands requests to: a fixed pool (:mod:`~local.lambda_env.pool`) or an elastic one
    (:mod:`~local.lambda_env.elastic`)."""

    def invoke(self, payload: bytes) -> Invocation: ...


# Lambda's error types for what the front refuses (boto3 reads them from x-amzn-ErrorType).
_FRONT_ERRORS = {413: "RequestTooLargeException", 429: "TooManyRequestsException", 502: "ServiceException",
                 504: "ServiceException"}
FRONT_DRAIN_BYTES = 4 * LAMBDA_PAYLOAD_BYTES
_FRONT_PATH = re.compile(r"^/2015-03-31/functions/function/invocations/?(\?.*)?$")  # the RIE's one function


class InvokeFront:
    """One Invoke API URL in front of a pool, safe for any number of concurrent clients.

    The RIE crashes on overlapping invokes, so its own URL must never be handed to a client that
    may send two at once (curl in two terminals, a load tool, boto3 in threads). The front takes
    every request, lets the pool pick a free environment (each serialised, as Lambda runs one
    request per environment at a time) and answers as Lambda's Invoke API does: the function's
    payload, or a status with a JSON reason (413 oversized, 429 every environment busy, 502 an
    environment died, 504 no answer in time). Only loopback; a silent client is dropped after
    ``client_timeout_s`` rather than holding a thread.
    """

    def __init__(self, pool: Environments, port: int = 0, host: str = "127.0.0.1", client_timeout_s: float = 30.0) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the emulator front only listens on loopback addresses, not {host}")
        front = self

        class Handler(BaseHTTPRequestHandler):
            timeout = client_timeout_s
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
                log.debug("front: " + format, *args)

            def do_POST(self) -> None:
                if not _FRONT_PATH.match(self.path):
                    return self._answer(404, {"Type": "User", "message": f"no function at {self.path}; the emulator's "
                                                                         f"one function is invoked at {INVOKE_PATH}"},
                                        "ResourceNotFoundException")
                try:
                    length = declared = int(self.headers.get("content-length") or "")
                except ValueError:
                    length = declared = -1
                if length < 0:
                    self.close_connection = True
                    return self._answer(411, {"Type": "User", "message": "a valid Content-Length header is required"},
                                        "InvalidRequestContentException")
                if length > LAMBDA_PAYLOAD_BYTES:
                    # Drain a moderately oversized body so the client, still sending, reads the 413
                    # rather than a broken pipe; past FRONT_DRAIN_BYTES just hang up.
                    self.close_connection = True
                    if length <= FRONT_DRAIN_BYTES:
                        try:
                            while length > 0:
                                chunk = self.rfile.read(min(length, 1 << 16))
                                if not chunk:
                                    break
                                length -= len(chunk)
                        except OSError:
                            return None
                    return self._answer(413, {"Type": "User", "message": f"the invoke payload is {declared:,} bytes; "
                                              f"Lambda's limit is {LAMBDA_PAYLOAD_BYTES:,} bytes"})
                try:
                    body = self.rfile.read(length)
                except OSError:
                    self.close_connection = True
                    return None
                try:
                    invocation = front.pool.invoke(body)
                except BackendError as exc:
                    status = 504 if isinstance(exc, BackendTimeoutError) else exc.status if exc.status in _FRONT_ERRORS else 502
                    return self._answer(status, {"Type": "Service" if status >= 500 else "User", "message": exc.message})
                return self._answer(invocation.status, invocation.payload, environment=invocation.environment)

            def _refuse_method(self) -> None:
                self.close_connection = True
                self._answer(405, {"Type": "User", "message": f"{self.command} is not allowed: POST the invoke payload to "
                                                              f"{INVOKE_PATH}"}, "MethodNotAllowedException")

            do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _refuse_method

            def _answer(self, status: int, body: bytes | dict[str, Any], error_type: str | None = None,
                        environment: str | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if status >= 400:
                    self.send_header("x-amzn-ErrorType", error_type or _FRONT_ERRORS.get(status, "ServiceException"))
                if environment:
                    self.send_header("x-emulator-environment", environment)
                self.end_headers()
                self.wfile.write(data)

        self.pool = pool
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def invoke_url(self) -> str:
        return self.url + INVOKE_PATH

    def start(self) -> InvokeFront:
        threading.Thread(target=self._server.serve_forever, name="emulator-front", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> InvokeFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
