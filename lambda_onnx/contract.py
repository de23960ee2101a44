"""The wire contract of ``POST /classify``, shared by every server edge.

The Lambda handler, ``local serve`` and the in-process backend all run :class:`Service`, so a
request gets the same response body and the same error (status, code, reason) wherever it lands.

Request: ``application/json`` ``{"image": "<base64>"}`` (a ``data:image/...;base64,`` prefix and
line breaks are accepted), or a raw image body with an image content type.

Response body (JSON), success::

    {"predictions": [{"class_id", "label", "probability"}, ...],
     "image": {"width", "height", "bytes", "format", "processed_width", "processed_height", "fast_path"},
     "model": {"arch", "weights", "random_weights", "precision", "sha256", "runtime", "threads", "int8_kernel",
               "canary": {"status", "photo", "rel_rms", "max_abs_logit", ...}},
     "host": {"cpu", "machine", "isa", "vnni"},
     "metrics": {"json_parse_ms", "decode_ms", "preprocess_ms", "inference_ms", "postprocess_ms",
                 "handler_ms", "request_bytes", "cold_start", "init_ms", "peak_rss_mb", "memory_mb",
                 "memory_utilisation_pct"},
     "request_id", "trace_id", "function_name", "warnings"}

error: ``{"error": code, "message": reason, "status": http_status, "request_id", "trace_id", "function_name"}``.
``function_name`` is the Lambda function's name (None off Lambda): with the request id it finds the
request's log group and REPORT line. ``host`` names the CPU the answer was computed on (Lambda's
x86 hosts vary between cold starts) and ``model.int8_kernel``/``model.canary`` how the model runs
there (:mod:`lambda_onnx.cpu`, :mod:`lambda_onnx.canary`). ``warnings`` is empty unless the model
is served although its canary failed on this CPU (``ALLOW_CANARY_FAILURE``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from dataclasses import asdict
from typing import Any, TypedDict, final

from lambda_onnx.classifier import TOP_K, Classification, Classifier
from lambda_onnx.cpu import CpuInfo, HostBody, cpu_info
from lambda_onnx.errors import BadRequestError, ClassifierError, PayloadTooLargeError, UnsupportedMediaTypeError
from lambda_onnx.limits import MAX_REQUEST_BYTES
from lambda_onnx.resources import configured_memory_mb, peak_rss_mb

JSON_TYPE = "application/json"
# A raw body with any image/* type (or none, or octet-stream) goes to the decoder, which decides from
# the bytes what the image really is and refuses, with 415 naming it, a format it does not take:
# clients label the same format many ways (image/x-icon and image/vnd.microsoft.icon, image/jp2,
# image/x-portable-pixmap, image/x-tga, ...), so a list of types here would refuse good images.
BINARY_TYPE = "application/octet-stream"
ACCEPTED = "application/json with a base64 image, or a raw image body (image/jpeg, image/png, image/webp, …)"

log = logging.getLogger(__name__)


class PredictionBody(TypedDict):
    class_id: int
    label: str
    probability: float


class ImageBody(TypedDict):
    width: int
    height: int
    bytes: int
    format: str
    processed_width: int
    processed_height: int
    fast_path: bool


class CanaryBody(TypedDict, total=False):
    status: str  # passed, failed, absent
    photo: str
    rel_rms: float
    max_abs_logit: float
    reason: str
    kernel_fallback: str
    restored: str  # set when a SnapStart restore re-checked (or kept) the snapshot's model: lambda_onnx.snapshot


class ModelBody(TypedDict):
    arch: str
    weights: str
    random_weights: bool
    precision: str
    sha256: str
    runtime: str
    threads: int
    int8_kernel: str | None
    canary: CanaryBody


class MetricsBody(TypedDict):
    json_parse_ms: float
    decode_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    handler_ms: float
    request_bytes: int
    cold_start: bool
    init_ms: float
    peak_rss_mb: float
    memory_mb: int | None
    memory_utilisation_pct: float | None


# Final, so that ``"error" in body`` tells a ResponseBody from an ErrorBody to the type checker too.
@final
class ResponseBody(TypedDict):
    """The body of every successful answer, wherever it was computed: what servers send and clients read."""

    predictions: list[PredictionBody]
    image: ImageBody
    model: ModelBody
    host: HostBody
    metrics: MetricsBody
    request_id: str
    trace_id: str | None
    function_name: str | None
    warnings: list[str]


@final
class ErrorBody(TypedDict):
    """The body of every refusal: a stable code, a reason, the HTTP status, and the ids to quote."""

    error: str
    message: str
    status: int
    request_id: str
    trace_id: str | None
    function_name: str | None


def media_type(content_type: str | None) -> str:
    """``"Image/JPEG; charset=x"`` -> ``"image/jpeg"``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def quoted(value: str, limit: int = 60) -> str:
    """A request value quoted in an error message, clipped: a reason never echoes the request back
    (the messages are logged, and a header or field may carry kilobytes)."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def check_request_size(size: int) -> None:
    """413 for a request body over the limit, before anything decodes it."""
    if size > MAX_REQUEST_BYTES:
        raise PayloadTooLargeError(f"request body is {size:,} bytes; the limit is {MAX_REQUEST_BYTES:,} bytes")


def decode_base64(text: str) -> bytes:
    """Base64 with an optional data-URL prefix and line breaks; anything else is a 400."""
    text = text.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise BadRequestError("a data URL must look like data:image/jpeg;base64,<data>")
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("image is not valid base64") from None


def image_from_json(body: bytes | str) -> bytes:
    """``{"image": "<base64>"}`` -> image bytes."""
    try:
        payload = json.loads(body)
    except RecursionError:  # json's parser recurses per level: [[[[... is valid JSON that exhausts the stack
        raise BadRequestError("body is JSON nested too deeply; send {\"image\": \"<base64>\"}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    return image_from_payload(payload)


def image_from_payload(payload: Any) -> bytes:
    """An already parsed JSON payload (a direct Lambda invoke) -> image bytes."""
    if not isinstance(payload, dict):
        raise BadRequestError(f'expected a JSON object with an "image" field, got {type(payload).__name__}')
    if "image" not in payload:
        raise BadRequestError('missing field "image" (a base64-encoded image)')
    image = payload["image"]
    if not isinstance(image, str):
        raise BadRequestError(f'"image" must be a base64 string, got {type(image).__name__}')
    if len(image) > MAX_REQUEST_BYTES:  # a direct invoke has no HTTP body whose size was checked
        raise PayloadTooLargeError(f'"image" is {len(image):,} characters; the limit is {MAX_REQUEST_BYTES:,}')
    return decode_base64(image)


def image_from_body(body: bytes, content_type: str | None) -> bytes:
    """An HTTP request body and its content type -> image bytes (raises 400/413/415)."""
    check_request_size(len(body))
    kind = media_type(content_type)
    if kind == JSON_TYPE or kind.endswith("+json") or (not kind and body.lstrip()[:1] == b"{"):
        return image_from_json(body)
    if kind.startswith("image/") or kind in ("", BINARY_TYPE):
        return body
    raise UnsupportedMediaTypeError(f"content type {quoted(kind)} is not accepted; send {ACCEPTED}")


class Service:
    """One model behind the contract: parse -> classify -> body, with cold-start and init metrics.

    ``init_started`` is a ``time.perf_counter()`` reading from when the process began loading
    (the Lambda handler takes it at the top of its module), so ``init_ms`` covers imports too.
    """

    def __init__(self, classifier: Classifier, init_started: float | None = None, function_name: str | None = None) -> None:
        self.classifier = classifier
        self.function_name = function_name
        now = time.perf_counter()
        self.init_ms = (now - init_started) * 1e3 if init_started is not None else classifier.load_ms
        self.memory_mb = configured_memory_mb()
        self._invocations = 0
        self._lock = threading.Lock()

    def _cold(self) -> bool:
        with self._lock:
            self._invocations += 1
            return self._invocations == 1

    def respond(self, image: bytes | None = None, *, body: bytes | None = None, content_type: str | None = None,
                payload: Any = None, request_bytes: int | None = None, request_id: str = "",
                trace_id: str | None = None, k: int = TOP_K) -> tuple[int, ResponseBody | ErrorBody]:
        """Answer one request given as image bytes, an HTTP body, or a parsed JSON payload.

        Returns ``(status, body)``; never raises for anything the request contains.
        """
        start = time.perf_counter()
        cold = self._cold()
        try:
            if image is None:
                image = image_from_payload(payload) if body is None else image_from_body(body, content_type)
            parsed = time.perf_counter()
            result = self.classifier.predict(image, k=k)
        except ClassifierError as exc:
            return exc.status, error_body(exc, request_id, trace_id, self.function_name)
        except Exception:  # a real fault of ours: logged with its traceback, 500 with the request id
            log.exception("internal error while classifying", extra={"request_id": request_id})
            return internal_error_body(request_id, trace_id, self.function_name)
        size = request_bytes if request_bytes is not None else (len(body) if body is not None else len(image))
        return 200, ok_body(result, json_parse_ms=(parsed - start) * 1e3, handler_ms=(time.perf_counter() - start) * 1e3,
                            request_bytes=size, cold_start=cold, init_ms=self.init_ms, memory_mb=self.memory_mb,
                            request_id=request_id, trace_id=trace_id, function_name=self.function_name,
                            warnings=self.classifier.warnings)


def host_section(info: CpuInfo | None = None) -> HostBody:
    """The ``host`` section of every answer: the CPU it was computed on."""
    return (info or cpu_info()).section()


def ok_body(result: Classification, *, json_parse_ms: float, handler_ms: float, request_bytes: int, cold_start: bool,
            init_ms: float, memory_mb: int | None, request_id: str, trace_id: str | None,
            function_name: str | None = None, warnings: list[str] | None = None) -> ResponseBody:
    peak = peak_rss_mb()
    t = result.timings
    return {
        "predictions": [asdict(p) for p in result.predictions],  # type: ignore[misc]
        "image": asdict(result.image),  # type: ignore[typeddict-item]
        "model": asdict(result.model),  # type: ignore[typeddict-item]
        "host": host_section(),
        "metrics": {
            "json_parse_ms": round(json_parse_ms, 3),
            "decode_ms": round(t.decode_ms, 3),
            "preprocess_ms": round(t.preprocess_ms, 3),
            "inference_ms": round(t.inference_ms, 3),
            "postprocess_ms": round(t.postprocess_ms, 3),
            "handler_ms": round(handler_ms, 3),
            "request_bytes": request_bytes,
            "cold_start": cold_start,
            "init_ms": round(init_ms, 1),
            "peak_rss_mb": round(peak, 1),
            "memory_mb": memory_mb,
            "memory_utilisation_pct": round(100.0 * peak / memory_mb, 1) if memory_mb else None,
        },
        "request_id": request_id,
        "trace_id": trace_id,
        "function_name": function_name,
        "warnings": list(warnings or []),
    }


def error_body(error: ClassifierError, request_id: str = "", trace_id: str | None = None,
               function_name: str | None = None) -> ErrorBody:
    return {"error": error.code, "message": error.message, "status": error.status, "request_id": request_id,
            "trace_id": trace_id, "function_name": function_name}


def internal_error_body(request_id: str = "", trace_id: str | None = None,
                        function_name: str | None = None) -> tuple[int, ErrorBody]:
    """A fault of ours (never the input's): 500, and the request id to quote, without internals."""
    fault = ClassifierError(f"internal error; quote request id {request_id or 'n/a'}")
    return fault.status, error_body(fault, request_id, trace_id, function_name)
