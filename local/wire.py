"""Lambda's wire formats, stated once for every client and the emulator.

- the request body of the contract (``{"image": "<base64>"}``) and the API Gateway HTTP API (payload
  2.0) event a ``POST /classify`` becomes;
- the function's answers: a proxy response ``{"statusCode", "headers", "body"}``, a function error
  object (``errorMessage``/``errorType``), an Invoke API answer with its ``FunctionError`` flag,
  turned into the body or the typed errors of :mod:`lambda_onnx.errors`;
- the ``REPORT RequestId: ...`` log line (the emulator's stdout, an invoke's ``LogResult`` tail,
  CloudWatch Logs).

The response body itself is typed where the server makes it: :class:`lambda_onnx.contract.ResponseBody`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from lambda_onnx.errors import BackendError, BackendTimeoutError, ThrottledError
from lambda_onnx.limits import LAMBDA_PAYLOAD_BYTES, MAX_IMAGE_BYTES
from lambda_onnx.preprocess import sniff

if TYPE_CHECKING:  # the type only: the wire formats need no model code loaded
    from lambda_onnx.contract import ResponseBody

Send = Literal["json", "binary"]
SENDS = ("json", "binary")


def raise_for_body(status: int, body: Mapping[str, Any], backend: str) -> ResponseBody:
    """Turn a non-200 answer into the typed error every client raises: 429 is :class:`ThrottledError`,
    anything else a :class:`BackendError` with the server's status, code and message. A 200 answer
    is the contract's :class:`ResponseBody`: it comes back as one.

    Our contract says ``{"error", "message"}``; API Gateway and Function URLs answer their own
    errors with ``{"message"}`` or ``{"Message"}``.
    """
    if status == 200:
        return cast("ResponseBody", body)  # JSON read back: the server built it as a ResponseBody
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


def invoke_answer(data: bytes, function_error_flag: str | None, backend: str) -> tuple[int, ResponseBody]:
    """A boto3 ``invoke`` answer (its payload and ``FunctionError``) -> (status, JSON body), with
    the function's failures and error statuses raised as typed errors."""
    if function_error_flag:  # the handler raised, timed out or the runtime crashed
        try:
            error = json.loads(data)
        except ValueError:
            error = data[:200].decode(errors="replace")
        raise function_error(error, backend)
    status, body = lambda_response(data, backend)
    return status, raise_for_body(status, body, backend)


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
    """The request body the PyTorch-on-Lambda project's clients send: ``{"image": "<base64>"}``."""
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


# --- the REPORT line ---------------------------------------------------------------------------------


@dataclass
class Report:
    """The fields of a Lambda ``REPORT RequestId: ...`` log line, read by name in whatever order they come.
    https://docs.aws.amazon.com/lambda/latest/dg/python-logging.html#python-logging-output"""

    request_id: str
    duration_ms: float | None = None
    billed_duration_ms: float | None = None
    memory_size_mb: float | None = None
    max_memory_used_mb: float | None = None
    init_duration_ms: float | None = None
    restore_duration_ms: float | None = None  # SnapStart: the environment resumed from the version's snapshot
    billed_restore_duration_ms: float | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def facts(self, exclude: tuple[str, ...] = ()) -> dict[str, float]:
        """The numbers the line holds, by attribute name (``duration_ms``, ...), minus ``exclude``.

        The local emulator prints placeholders for ``max_memory_used_mb`` and ``init_duration_ms``
        (:data:`EMULATOR_PLACEHOLDERS`): it leaves them out.
        """
        return {name: getattr(self, name) for name in _NAMES.values()
                if getattr(self, name) is not None and name not in exclude}


# The AWS Lambda Runtime Interface Emulator's REPORT line gives the configured size as "Max Memory
# Used" and not the init phase as "Init Duration" (cmd/aws-lambda-rie/handlers.go, printEndReports).
EMULATOR_PLACEHOLDERS = ("max_memory_used_mb", "init_duration_ms")


_FIELD = re.compile(r"([A-Za-z][A-Za-z ]*?):\s*([^\t]+?)\s*(?=\t|$)")
_NAMES = {"duration": "duration_ms", "billed duration": "billed_duration_ms", "memory size": "memory_size_mb",
          "max memory used": "max_memory_used_mb", "init duration": "init_duration_ms",
          "restore duration": "restore_duration_ms", "billed restore duration": "billed_restore_duration_ms"}


def parse_report(line: str) -> Report | None:
    """Parse a REPORT line by field names, in whatever order they come."""
    text = line.strip()
    if not text.startswith("REPORT"):
        return None
    fields = {m.group(1).strip(): m.group(2).strip() for m in _FIELD.finditer(text.removeprefix("REPORT").strip())}
    request_id = fields.get("RequestId", "")
    report = Report(request_id=request_id, fields=fields)
    for name, value in fields.items():
        attribute = _NAMES.get(name.lower())
        number = re.match(r"[\d.]+", value)
        if attribute and number:
            setattr(report, attribute, float(number.group(0)))
    return report


def last_report(log: str) -> Report | None:
    """The last REPORT line of a log excerpt (an invoke's ``LogResult`` tail), parsed."""
    reports = [parse_report(line) for line in log.splitlines() if line.lstrip().startswith("REPORT")]
    return next((r for r in reversed(reports) if r is not None), None)
