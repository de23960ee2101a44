"""One client interface for every way to reach a backend.

Each backend has ``classify(image) -> BackendResult`` and ``close()``; failures raise the typed
errors in :mod:`lambda_onnx.errors` (``BackendError`` and subclasses, carrying the server's status
and message). The GUI, the monitor, the benchmark and the tests see only this interface.

- :class:`InProcessBackend`: the classifier in this process;
- :class:`HttpBackend`: any URL speaking the contract (API Gateway, a Function URL, ``local serve``),
  optionally SigV4-signed for ``AWS_IAM`` Function URLs;
- :class:`LambdaInvokeBackend`: boto3 ``invoke`` by function name or ARN (or the emulator, through
  ``endpoint_url``);
- :class:`EmulatorBackend`: the local Lambda emulator (one environment or a pool), each request
  wrapped in an API Gateway HTTP API 2.0 event.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from lambda_onnx.classifier import Classifier, Prediction
from lambda_onnx.contract import Service
from lambda_onnx.errors import BackendError, BackendTimeoutError, BackendUnavailableError, ThrottledError
from lambda_onnx.limits import LAMBDA_PAYLOAD_BYTES, MAX_IMAGE_BYTES
from lambda_onnx.preprocess import sniff

if TYPE_CHECKING:
    from local.emulator import Emulator, EmulatorPool

Send = Literal["json", "binary"]
SENDS = ("json", "binary")
DEFAULT_TIMEOUT_S = 60.0  # above Lambda's 30 s API Gateway limit plus a cold start
CONNECT_TIMEOUT_S = 5.0


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
    """Turn a non-200 answer into the typed error every client raises: 429 is :class:`ThrottledError`,
    anything else a :class:`BackendError` with the server's status, code and message.

    Our contract says ``{"error", "message"}``; API Gateway and Function URLs answer their own
    errors with ``{"message"}`` or ``{"Message"}``.
    """
    if status == 200:
        return
    message = body.get("message") or body.get("Message") or f"HTTP {status}"
    if status == 429:
        raise ThrottledError(f"{backend}: throttled (429): {message}", status=status, code=body.get("error"))
    raise BackendError(f"{backend}: HTTP {status}: {message}", status=status, code=body.get("error"))


def lambda_response(payload: bytes, backend: str) -> tuple[int, dict[str, Any]]:
    """A Lambda proxy response ``{"statusCode", "headers", "body"}`` -> (status, JSON body).

    A function error (an ``errorMessage``/``errorType`` object: the handler raised or the runtime
    crashed) is a :class:`BackendError` with status 502, what API Gateway answers then; a function
    timeout is a :class:`BackendTimeoutError` (504).
    """
    if payload.startswith(b"Task timed out"):  # the emulator's plain-text timeout answer
        raise BackendTimeoutError(f"{backend}: {payload.decode(errors='replace')}", status=504)
    try:
        response = json.loads(payload)
    except ValueError:
        raise BackendError(f"{backend}: the function answered with something that is not JSON: {payload[:200]!r}",
                           status=502, code="function_error") from None
    if isinstance(response, dict) and "errorMessage" in response and "statusCode" not in response:
        raise function_error(response, backend)
    if not isinstance(response, dict) or "statusCode" not in response:
        raise BackendError(f"{backend}: expected a {{statusCode, headers, body}} response, got {str(response)[:200]}",
                           status=502, code="function_error")
    body = response.get("body")
    try:
        parsed = json.loads(body) if isinstance(body, str) else body
    except ValueError:
        raise BackendError(f"{backend}: the response body is not JSON: {str(body)[:200]}", status=502,
                           code="function_error") from None
    if not isinstance(parsed, dict):
        raise BackendError(f"{backend}: the response body is not a JSON object: {str(parsed)[:200]}", status=502,
                           code="function_error")
    return int(response["statusCode"]), parsed


def function_error(error: Any, backend: str) -> BackendError:
    """The typed error for a Lambda function error object (``errorMessage``, ``errorType``): a
    timeout is a :class:`BackendTimeoutError` (504), anything else a 502 ``function_error``."""
    if not isinstance(error, dict):
        return BackendError(f"{backend}: the function failed: {str(error)[:200]}", status=502, code="function_error")
    kind, text = str(error.get("errorType", "error")), str(error.get("errorMessage", ""))
    message = f"{backend}: the function failed ({kind}): {text}"
    if "Timedout" in kind or "timed out" in text:
        return BackendTimeoutError(message, status=504)
    return BackendError(message, status=502, code="function_error")


def invoke_answer(data: bytes, function_error_flag: str | None, backend: str) -> tuple[int, dict[str, Any]]:
    """A boto3 ``invoke`` answer (its payload and ``FunctionError``) -> (status, JSON body), with
    the function's failures and error statuses raised as typed errors."""
    if function_error_flag:  # the handler raised, timed out or the runtime crashed
        try:
            error = json.loads(data)
        except ValueError:
            error = data[:200].decode(errors="replace")
        raise function_error(error, backend)
    status, body = lambda_response(data, backend)
    raise_for_body(status, body, backend)
    return status, body


def refuse_oversized_invoke(payload: bytes, backend: str) -> None:
    """Lambda refuses a synchronous invoke payload over 6 MiB with 413 RequestEntityTooLargeException;
    say so before sending it (the emulator would truncate it instead and the runtime fail to parse it).
    https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html"""
    if len(payload) > LAMBDA_PAYLOAD_BYTES:
        raise BackendError(f"{backend}: the invoke payload is {len(payload):,} bytes; Lambda's limit is "
                           f"{LAMBDA_PAYLOAD_BYTES:,} bytes (an image of at most {MAX_IMAGE_BYTES:,} bytes fits)",
                           status=413, code="payload_too_large")


def sniff_content_type(data: bytes) -> str:
    """The image content type from the first bytes (the server decides what it really is)."""
    found = sniff(data)
    return found[1] if found else "application/octet-stream"


def json_request(image: bytes) -> bytes:
    """The reference project's request body: ``{"image": "<base64>"}``."""
    return json.dumps({"image": base64.b64encode(image).decode("ascii")}).encode()


def new_trace_id() -> str:
    """An X-Ray trace header (``Root=1-<epoch hex>-<96 random bits>``), as API Gateway adds one."""
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Sampled=0"


def http_api_event(image: bytes, send: Send = "json", *, path: str = "/classify", trace_id: str | None = None) -> dict[str, Any]:
    """The API Gateway HTTP API (payload 2.0) event that ``POST {path}`` with this image becomes.

    https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
    """
    if send == "json":
        body, encoded, content_type = json_request(image).decode("ascii"), False, "application/json"
    else:  # HTTP APIs base64-encode binary bodies
        body, encoded, content_type = base64.b64encode(image).decode("ascii"), True, sniff_content_type(image)
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": f"POST {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": content_type, "content-length": str(len(image) if encoded else len(body)),
                    "host": "localhost", "user-agent": "resnet-serverless", "x-amzn-trace-id": trace_id or new_trace_id()},
        "requestContext": {
            "accountId": "123456789012", "apiId": "local", "domainName": "localhost", "domainPrefix": "localhost",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": "resnet-serverless"},
            "requestId": str(uuid.uuid4()), "routeKey": f"POST {path}", "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)), "timeEpoch": int(now * 1000),
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


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


class HttpBackend:
    """``POST`` the contract to a URL: API Gateway, a Lambda Function URL or ``local serve``.

    ``send="json"`` posts ``{"image": "<base64>"}``; ``"binary"`` posts the raw bytes with their
    image content type. ``sigv4_region`` signs each request with the default AWS credentials
    (service ``lambda``), as an ``AWS_IAM`` Function URL requires. Only connection attempts are
    retried: a request that may have reached the function is never sent twice.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S, connect_timeout: float = CONNECT_TIMEOUT_S,
                 sigv4_region: str | None = None, sigv4_service: str = "lambda", send: Send = "json",
                 connect_retries: int = 1, kind: str = "serverless", name: str | None = None) -> None:
        import httpx

        if send not in SENDS:
            raise ValueError(f"send must be one of {SENDS}, got {send!r}")
        self.url, self.send, self.kind = url, send, kind
        self.name = name or f"http {url}"
        self.sigv4_region, self.sigv4_service = sigv4_region, sigv4_service
        self._credentials = None
        if sigv4_region:
            import botocore.session

            self._credentials = botocore.session.get_session().get_credentials()
            if self._credentials is None:
                raise BackendError(f"{self.name}: no AWS credentials found to sign requests with (SigV4 for region "
                                   f"{sigv4_region}); configure them as for the AWS CLI", code="no_credentials")
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=connect_timeout),
                                    transport=httpx.HTTPTransport(retries=connect_retries), follow_redirects=False)

    def _signed(self, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="POST", url=self.url, data=body, headers=headers)
        SigV4Auth(self._credentials, self.sigv4_service, self.sigv4_region).add_auth(request)
        return dict(request.headers.items())

    def classify(self, image: bytes) -> BackendResult:
        import httpx

        if self.send == "json":
            body, headers = json_request(image), {"content-type": "application/json"}
        else:
            body, headers = image, {"content-type": sniff_content_type(image)}
        if self._credentials is not None:
            headers = self._signed(body, headers)
        start = time.perf_counter()
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.ConnectError as exc:
            raise BackendUnavailableError(f"{self.name}: cannot connect ({exc})") from None
        except httpx.TimeoutException as exc:
            raise BackendTimeoutError(f"{self.name}: no answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"{self.name}: the connection failed ({type(exc).__name__}: {exc})") from None
        elapsed = (time.perf_counter() - start) * 1e3
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            parsed = {"message": response.text[:300].strip() or response.reason_phrase}
            if response.status_code == 200:
                raise BackendError(f"{self.name}: HTTP 200 but the body is not a JSON object: {parsed['message']}",
                                   status=200, code="bad_response")
        raise_for_body(response.status_code, parsed, self.name)
        return BackendResult(self.name, self.kind, response.status_code, parsed, elapsed, len(body), len(response.content),
                             extra={"http_version": response.http_version})

    def close(self) -> None:
        self._client.close()


class LambdaInvokeBackend:
    """boto3 ``lambda.invoke`` (RequestResponse) with the ``{"image": "<base64>"}`` payload.

    ``function`` is a name or an ARN. ``endpoint_url`` points the same client at the local
    emulator (function ``"function"``). botocore's own retries are off: a throttle comes back as
    :class:`ThrottledError` for the caller (the benchmark counts them), and only a connection that
    never reached Lambda is retried here, so an invoke never runs twice.
    """

    kind = "serverless"

    def __init__(self, function: str, region: str | None = None, *, endpoint_url: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, connect_timeout: float = CONNECT_TIMEOUT_S,
                 connect_retries: int = 2, session: Any = None, name: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.function, self.connect_retries = function, connect_retries
        self.name = name or f"lambda invoke {function}" + (f" @ {endpoint_url}" if endpoint_url else "")
        config = Config(connect_timeout=connect_timeout, read_timeout=timeout,
                        retries={"total_max_attempts": 1, "mode": "standard"})
        self._client = (session or boto3.session.Session()).client("lambda", region_name=region, endpoint_url=endpoint_url,
                                                                   config=config)

    def _invoke(self, payload: bytes) -> dict[str, Any]:
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError, HTTPClientError, NoCredentialsError,
                                         NoRegionError, ReadTimeoutError)

        refuse_oversized_invoke(payload, self.name)
        for attempt in range(self.connect_retries + 1):
            try:
                response = self._client.invoke(FunctionName=self.function, InvocationType="RequestResponse", Payload=payload)
                response["Payload"] = response["Payload"].read()
                return response
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code, message = error.get("Code", "ClientError"), error.get("Message", str(exc))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                if code in ("TooManyRequestsException", "ThrottlingException") or status == 429:
                    raise ThrottledError(f"{self.name}: throttled ({code}): {message}", status=429, code="throttled") from None
                raise BackendError(f"{self.name}: {code}: {message}", status=status, code=code) from None
            except ReadTimeoutError:
                raise BackendTimeoutError(f"{self.name}: no answer within the read timeout") from None
            except ConnectionError as exc:  # never reached Lambda: safe to try again
                if attempt == self.connect_retries:
                    raise BackendUnavailableError(f"{self.name}: cannot connect ({exc})") from None
                time.sleep(0.2 * 2**attempt)
            except (NoCredentialsError, NoRegionError) as exc:
                raise BackendError(f"{self.name}: {exc}", code="aws_configuration") from None
            except HTTPClientError as exc:  # closed or reset after the request went out: it may have run, never retried
                raise BackendUnavailableError(f"{self.name}: the connection failed before an answer came back "
                                              f"({type(exc).__name__}: {exc})") from None
            except BotoCoreError as exc:  # anything else botocore raises: still a typed error, not a traceback
                raise BackendError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def classify(self, image: bytes) -> BackendResult:
        payload = json_request(image)
        start = time.perf_counter()
        response = self._invoke(payload)
        elapsed = (time.perf_counter() - start) * 1e3
        data: bytes = response["Payload"]
        status, body = invoke_answer(data, response.get("FunctionError"), self.name)
        return BackendResult(self.name, self.kind, status, body, elapsed, len(payload), len(data),
                             extra={"executed_version": response.get("ExecutedVersion")})

    def close(self) -> None:
        self._client.close()


class EmulatorBackend:
    """The local Lambda emulator: each request becomes an HTTP API 2.0 event (the emulator speaks
    only the Invoke API), answered by one environment or by a pool of them.

    ``close()`` stops the emulators unless ``stop_on_close=False`` (when they are shared).
    """

    kind = "serverless"

    def __init__(self, target: Emulator | EmulatorPool, *, send: Send = "json", name: str = "emulator",
                 stop_on_close: bool = True) -> None:
        if send not in SENDS:
            raise ValueError(f"send must be one of {SENDS}, got {send!r}")
        self.target, self.send, self.name, self.stop_on_close = target, send, name, stop_on_close

    def classify(self, image: bytes) -> BackendResult:
        event = http_api_event(image, self.send)
        payload = json.dumps(event).encode()
        invocation = self.target.invoke(payload)
        status, body = lambda_response(invocation.payload, self.name)
        raise_for_body(status, body, self.name)
        extra = {"environment": invocation.environment, "queue_ms": invocation.queue_ms,
                 "http_body_bytes": len(event["body"]), **invocation.report}
        return BackendResult(self.name, self.kind, status, body, invocation.round_trip_ms, len(payload),
                             len(invocation.payload), extra=extra)

    def close(self) -> None:
        if self.stop_on_close:
            self.target.stop()
