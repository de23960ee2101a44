"""One Invoke API URL in front of the emulated environments, answering as Lambda's Invoke API does.

The contract is AWS's Invoke API reference (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html;
botocore's service model ``lambda/2015-03-31`` holds the same shapes, and boto3 and the AWS CLI read
the answers through it):

- ``X-Amz-Invocation-Type``: ``RequestResponse`` (default) answers 200 with the function's payload;
  ``Event`` answers 202 with an empty body once the event is queued (:mod:`~local.lambda_env.async_queue`)
  and the function runs later; ``DryRun`` answers 204 and runs nothing ("For the ``Event`` invocation
  type, this status code is 202. For the ``DryRun`` invocation type, the status code is 204.");
- ``X-Amz-Log-Type: Tail`` adds ``X-Amz-Log-Result``, "the last 4 KB of the execution log, which is
  base64-encoded", for synchronous invokes only ("Applies to synchronously invoked functions only.");
- ``X-Amz-Client-Context`` reaches the function (``context.client_context``) on synchronous invokes
  ("Lambda passes the ClientContext object to your function for synchronous invocations only.");
- a function error is an HTTP 200 whose payload is the error object, flagged by
  ``X-Amz-Function-Error: Unhandled`` ("The status code in the API response doesn't reflect function
  errors."). The RIE answers a handler's exception as a plain 200, a crashed runtime as a 502 and a
  timeout as the text ``Task timed out after ...``: :func:`lambda_payload` turns each into Lambda's answer;
- ``FunctionName`` may be the name, ``name:$LATEST``, the ARN or a partial ARN ("You can append a
  version number or alias to any of the formats"), with ``?Qualifier=``; anything else is Lambda's
  404 ``ResourceNotFoundException`` ``{"Type": "User", "Message": "Function not found: <ARN>"}``;
- refusals carry Lambda's error type in ``x-amzn-ErrorType`` and its body shape: 400
  ``InvalidRequestContentException`` ("The request body could not be parsed as JSON"), 413
  ``RequestTooLargeException`` (6 MB synchronous, 1 MB asynchronous: "For asynchronous invocations,
  the maximum payload size is 1 MB."), 429 ``TooManyRequestsException`` with its ``Reason``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

from lambda_onnx.errors import BackendError, BackendTimeoutError, ThrottledError
from lambda_onnx.limits import LAMBDA_PAYLOAD_BYTES
from local.lambda_env.async_queue import DEFAULT_ASYNC_QUEUE, AsyncQueue
from local.lambda_env.elastic import THROTTLE_REASON
from local.lambda_env.rie import INVOKE_PATH, Invocation

log = logging.getLogger(__name__)


class Environments(Protocol):
    """What the front hands requests to: a fixed pool (:mod:`~local.lambda_env.pool`), an elastic one
    (:mod:`~local.lambda_env.elastic`) or one emulator."""

    @property
    def concurrency(self) -> int: ...

    @property
    def function_name(self) -> str: ...

    @property
    def region(self) -> str: ...

    def invoke(self, payload: bytes, *, headers: Mapping[str, str] | None = None) -> Invocation: ...


ASYNC_PAYLOAD_BYTES = 1024 * 1024  # Lambda's asynchronous invoke payload limit (API_Invoke, above)
FRONT_DRAIN_BYTES = 4 * LAMBDA_PAYLOAD_BYTES
LOG_TAIL_BYTES = 4 * 1024
LATEST = "$LATEST"
RIE_FUNCTION_NAME = "function"  # the one name the RIE itself answers to
# The RIE's account id: a handler under it sees arn:aws:lambda:<region>:012345678912:function:<name>
# as context.invoked_function_arn, so the front answers to that ARN.
EMULATOR_ACCOUNT_ID = "012345678912"
INVOCATION_TYPES = ("Event", "RequestResponse", "DryRun")
LOG_TYPES = ("None", "Tail")
THROTTLE_REASONS = frozenset({"ConcurrentInvocationLimitExceeded", "FunctionInvocationRateLimitExceeded",
                              "ReservedFunctionConcurrentInvocationLimitExceeded", "ReservedFunctionInvocationRateLimitExceeded",
                              "CallerRateLimitExceeded", "ConcurrentSnapshotCreateLimitExceeded"})
REQUEST_ID_HEADER = "X-Amzn-RequestId"  # the RIE takes the invocation's request id from it
CLIENT_CONTEXT_HEADER = "X-Amz-Client-Context"  # and the client context (context.client_context) from this one
# botocore's NamespacedFunctionName pattern (lambda/2015-03-31), and the same with its parts named.
FUNCTION_NAME_PATTERN = (r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?"
                         r"(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?")
_FUNCTION_NAME = re.compile(
    r"(?:arn:(?P<partition>aws[a-zA-Z-]*)?:lambda:)?(?:(?P<region>(?:eusc-)?[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d):)?"
    r"(?:(?P<account>\d{12}):)?(?:function:)?(?P<name>[a-zA-Z0-9\-_.]+)(?::(?P<qualifier>\$LATEST(?:\.PUBLISHED)?|[a-zA-Z0-9\-_]+))?")
_MAX_FUNCTION_NAME = 256
_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
_TIMED_OUT = b"Task timed out after"  # the RIE's plain-text answer for a function timeout


@dataclass(eq=False)
class ApiError(Exception):
    """An Invoke API refusal: its HTTP status, Lambda's error type (``x-amzn-ErrorType``) and body."""

    status: int
    error_type: str
    message: str
    message_key: str = "message"  # ResourceNotFoundException and ServiceException say "Message"
    reason: str | None = None  # TooManyRequestsException's Reason

    def __str__(self) -> str:
        return f"{self.status} {self.error_type}: {self.message}"

    def body(self) -> dict[str, str]:
        body = {"Type": "User" if self.status < 500 else "Service", self.message_key: self.message}
        if self.reason:
            body["Reason"] = self.reason
        return body


@dataclass(frozen=True)
class FunctionIdentity:
    """The one function the front serves: what its name, ARN and partial ARN are."""

    name: str
    region: str
    account: str = EMULATOR_ACCOUNT_ID

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.name}"

    def resolve(self, function_name: str, qualifier: str | None = None) -> None:
        """Accept ``function_name`` (and a ``?Qualifier=``) if it names this function's ``$LATEST``;
        raise Lambda's :class:`ApiError` otherwise."""
        match = _FUNCTION_NAME.fullmatch(function_name) if len(function_name) <= _MAX_FUNCTION_NAME else None
        if match is None:
            raise ApiError(400, "ValidationException", f"1 validation error detected: Value '{function_name}' at "
                           f"'functionName' failed to satisfy constraint: Member must satisfy regular expression "
                           f"pattern: {FUNCTION_NAME_PATTERN}")
        derived = match["qualifier"]
        if derived and qualifier and derived != qualifier:
            raise ApiError(400, "InvalidParameterValueException",
                           "The derived qualifier from the function name does not match the specified qualifier.")
        version = derived or qualifier
        region, account = match["region"] or self.region, match["account"] or self.account
        ours = (match["name"] in (self.name, RIE_FUNCTION_NAME) and match["partition"] in (None, "aws")
                and region == self.region and account == self.account and version in (None, LATEST))
        if not ours:
            arn = f"arn:aws:lambda:{region}:{account}:function:{match['name']}" + (f":{version}" if version else "")
            raise ApiError(404, "ResourceNotFoundException", f"Function not found: {arn}", message_key="Message")


def lambda_payload(invocation: Invocation) -> tuple[bytes, str | None]:
    """The Invoke API's payload and ``X-Amz-Function-Error`` for what the RIE answered.

    The RIE flags no function error: a handler's exception and the runtime's ``Runtime.UnmarshalError``
    come back as 200 with the runtime's error object (its ``requestId`` is the invocation's), a
    crashed runtime as 502 with ``Runtime.ExitError``, a timeout as 200 with plain text. Lambda
    answers each as 200, the error object as the payload, ``Unhandled``. Raises :class:`BackendError`
    (502) for an RIE failure that is not the function's.
    """
    if invocation.status == 200 and invocation.payload.startswith(_TIMED_OUT):
        text = invocation.payload.decode("utf-8", "replace").strip()
        error = {"errorType": "Sandbox.Timedout", "errorMessage": f"RequestId: {invocation.request_id} Error: {text}"}
        return json.dumps(error).encode(), "Unhandled"
    try:
        parsed = json.loads(invocation.payload)
    except ValueError:
        parsed = None
    is_error_object = (isinstance(parsed, dict) and isinstance(parsed.get("errorType"), str) and "errorMessage" in parsed
                       and "statusCode" not in parsed)
    if is_error_object and isinstance(parsed, dict):
        raised_here = parsed.get("requestId") == invocation.request_id and invocation.request_id is not None
        if invocation.status != 200 or raised_here or parsed["errorType"].startswith(("Runtime.", "Sandbox.")):
            return invocation.payload, "Unhandled"
    if invocation.status != 200:
        raise BackendError(f"{invocation.environment}: the emulator answered HTTP {invocation.status}: "
                           f"{invocation.payload[:200].decode('utf-8', 'replace')}", status=502)
    return invocation.payload, None


def log_result(lines: Sequence[str]) -> str:
    """``X-Amz-Log-Result``: the last 4 KB of an invocation's log, base64-encoded (cut at a UTF-8 character)."""
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")[-LOG_TAIL_BYTES:]
    start = 0
    while start < len(data) and data[start] & 0xC0 == 0x80:  # a continuation byte: the cut split a character
        start += 1
    return base64.b64encode(data[start:]).decode("ascii")


def throttle_error(exc: ThrottledError) -> ApiError:
    """Lambda's 429 for a throttle: each pool is the function's concurrency limit, so its reason is
    ``ReservedFunctionConcurrentInvocationLimitExceeded`` unless the throttle names another."""
    reason = exc.code if exc.code in THROTTLE_REASONS else THROTTLE_REASON
    return ApiError(429, "TooManyRequestsException", exc.message, reason=reason)


class InvokeFront:
    """One Invoke API URL in front of a pool, safe for any number of concurrent clients.

    The RIE crashes on overlapping invokes, so its own URL must never be handed to a client that
    may send two at once (curl in two terminals, a load tool, boto3 in threads). The front takes
    every request, lets the pool pick a free environment (each serialised, as Lambda runs one
    request per environment at a time) and answers as Lambda's Invoke API does (the module
    docstring), or with a status and a JSON reason of its own: 502 an environment died, 504 no
    answer in time. Asynchronous invokes wait in a bounded queue (``async_queue`` events) and run
    on the same environments, ``pool.concurrency`` at a time. Only loopback; a silent client is
    dropped after ``client_timeout_s`` rather than holding a thread.
    """

    def __init__(self, pool: Environments, port: int = 0, host: str = "127.0.0.1", client_timeout_s: float = 30.0, *,
                 async_queue: int = DEFAULT_ASYNC_QUEUE, **async_args: Any) -> None:
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
                path, _, query = self.path.partition("?")
                invoke = _INVOKE.match(path)
                if invoke is None:
                    self.close_connection = True  # its body is never read
                    return self._refuse(ApiError(404, "ResourceNotFoundException", f"no function at {self.path}; the "
                                                 f"emulator's one function is invoked at {INVOKE_PATH}", message_key="Message"))
                try:
                    length = declared = int(self.headers.get("content-length") or "")
                except ValueError:
                    length = declared = -1
                if length < 0:
                    self.close_connection = True
                    return self._refuse(ApiError(411, "InvalidRequestContentException", "a valid Content-Length header is required"))
                invocation_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
                limit = ASYNC_PAYLOAD_BYTES if invocation_type == "Event" else LAMBDA_PAYLOAD_BYTES
                if length > limit:
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
                    kind = "asynchronous " if invocation_type == "Event" else ""
                    return self._refuse(ApiError(413, "RequestTooLargeException", f"the invoke payload is {declared:,} "
                                                 f"bytes; Lambda's {kind}limit is {limit:,} bytes"))
                try:
                    body = self.rfile.read(length)
                except OSError:
                    self.close_connection = True
                    return None
                try:
                    front.answer(self, unquote(invoke["name"]), parse_qs(query), invocation_type, body)
                except ApiError as refusal:
                    self._refuse(refusal)

            def _refuse_method(self) -> None:
                self.close_connection = True
                self._refuse(ApiError(405, "MethodNotAllowedException", f"{self.command} is not allowed: POST the "
                                                                        f"invoke payload to {INVOKE_PATH}"))

            do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _refuse_method

            def _refuse(self, error: ApiError) -> None:
                self.send(error.status, json.dumps(error.body()).encode(), {"x-amzn-ErrorType": error.error_type})

            def send(self, status: int, data: bytes, headers: Mapping[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if data:
                    self.wfile.write(data)

        self.pool = pool
        self.function = FunctionIdentity(pool.function_name, pool.region)
        self.events = AsyncQueue(self._run_event, workers=pool.concurrency, capacity=async_queue, name="emulator async queue",
                                 **async_args)
        self.dropped_at_stop = 0
        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                if isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up (boto3 closing its pool): no traceback
                    log.debug("front: %s hung up", client_address)
                    return
                super().handle_error(request, client_address)

        self._host = host
        self._server = Server((host, port), Handler)

    # --- the Invoke API -----------------------------------------------------------------------------

    def answer(self, request: Any, function_name: str, query: Mapping[str, list[str]], invocation_type: str,
               body: bytes) -> None:
        """Validate one Invoke request as Lambda does, then run it as its type says and answer it
        (``request.send``); refusals are raised as :class:`ApiError`."""
        qualifiers = query.get("Qualifier") or []
        self.function.resolve(function_name, qualifiers[0] if qualifiers else None)
        log_type = request.headers.get("X-Amz-Log-Type") or "None"
        for field, value, allowed in (("invocationType", invocation_type, INVOCATION_TYPES), ("logType", log_type, LOG_TYPES)):
            if value not in allowed:
                raise ApiError(400, "ValidationException", f"1 validation error detected: Value '{value}' at '{field}' "
                               f"failed to satisfy constraint: Member must satisfy enum value set: [{', '.join(allowed)}]")
        payload = body or b"{}"  # no payload: the function gets an empty object
        try:
            json.loads(payload)
        except ValueError as exc:
            raise ApiError(400, "InvalidRequestContentException",
                           f"Could not parse request body into json: Could not parse payload into json: {exc}") from None
        request_id = str(uuid.uuid4())
        if invocation_type == "DryRun":  # parameters and function checked: nothing runs
            return request.send(204, b"", {REQUEST_ID_HEADER: request_id})
        if invocation_type == "Event":
            try:
                self.events.submit(payload, request_id)
            except ThrottledError as exc:
                raise throttle_error(exc) from None
            except BackendError as exc:
                raise ApiError(503, "ServiceException", exc.message, message_key="Message") from None
            return request.send(202, b"", {REQUEST_ID_HEADER: request_id})
        forwarded = {REQUEST_ID_HEADER: request_id}
        if client_context := request.headers.get(CLIENT_CONTEXT_HEADER):  # for synchronous invokes only, as on Lambda
            forwarded[CLIENT_CONTEXT_HEADER] = client_context
        try:
            invocation = self.pool.invoke(payload, headers=forwarded)
            data, function_error = lambda_payload(invocation)
        except ThrottledError as exc:
            raise throttle_error(exc) from None
        except BackendError as exc:
            status = 504 if isinstance(exc, BackendTimeoutError) else exc.status if exc.status in (413, 502) else 502
            error_type = "RequestTooLargeException" if status == 413 else "ServiceException"
            raise ApiError(status, error_type, exc.message, message_key="message" if status == 413 else "Message") from None
        headers = {REQUEST_ID_HEADER: invocation.request_id or request_id, "X-Amz-Executed-Version": LATEST,
                   "x-emulator-environment": invocation.environment}
        if function_error:
            headers["X-Amz-Function-Error"] = function_error
        if log_type == "Tail":
            headers["X-Amz-Log-Result"] = log_result(invocation.log)
        request.send(200, data, headers)

    def _run_event(self, payload: bytes, request_id: str) -> bool:
        """One asynchronous invocation, its result discarded as Lambda does (a function error is logged)."""
        invocation = self.pool.invoke(payload, headers={REQUEST_ID_HEADER: request_id})
        data, function_error = lambda_payload(invocation)
        if function_error:
            log.warning("asynchronous invocation %s: the function failed: %s", request_id, data[:300].decode("utf-8", "replace"))
        return function_error is None

    # --- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._server.server_address[1]}"

    @property
    def invoke_url(self) -> str:
        return self.url + INVOKE_PATH

    def start(self) -> InvokeFront:
        self.events.start()
        threading.Thread(target=self._server.serve_forever, name="emulator-front", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop answering, then the asynchronous queue: queued events are dropped (``dropped_at_stop``)
        and those in flight get a moment to finish; stop the pool after this."""
        self._server.shutdown()
        self._server.server_close()
        self.dropped_at_stop = self.events.stop()

    def __enter__(self) -> InvokeFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
