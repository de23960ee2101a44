"""AWS Lambda entry point: a thin, typed adapter from Lambda events to the shared :class:`Service`.

Heavy objects (model session, sidecar, logger, metrics) are created once at import, i.e. once per
execution environment. Every response, whatever the event kind, has one shape:
``{"statusCode", "headers", "body"}`` with a JSON body.

Events accepted:
1. API Gateway HTTP API (payload 2.0), Lambda Function URL and REST API (payload 1.0) events with a
   JSON ``{"image": "<base64>"}`` body or a raw image body (``isBase64Encoded``);
2. direct Invoke payloads ``{"image": "<base64>"}``.
"""

from __future__ import annotations

import time

_INIT_STARTED = time.perf_counter()  # before the heavy imports: init_ms covers them

import base64  # noqa: E402
import binascii  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from aws_lambda_powertools import Logger, Metrics  # noqa: E402
from aws_lambda_powertools.metrics import MetricUnit  # noqa: E402

from lambda_onnx.classifier import Classifier  # noqa: E402
from lambda_onnx.contract import (  # noqa: E402
    ErrorBody,
    ResponseBody,
    Service,
    check_request_size,
    error_body,
    internal_error_body,
    quoted,
)
from lambda_onnx.cpu import cpu_info  # noqa: E402
from lambda_onnx.decoder_log import DecoderLog, collecting  # noqa: E402
from lambda_onnx.errors import BadRequestError, ClassifierError, MethodNotAllowedError, ModelLoadError  # noqa: E402
from lambda_onnx.snapshot import after_restore, register_after_restore  # noqa: E402

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "resnet-serverless")
# The image bakes the model in here (see Dockerfile); MODEL_PATH overrides it for local runs.
TASK_ROOT = Path(os.environ.get("LAMBDA_TASK_ROOT", Path(__file__).parent.parent))
MODEL_PATH = Path(os.environ.get("MODEL_PATH", TASK_ROOT / "model" / "model.onnx"))
# The precision the stack was deployed for (template.yaml sets it). SAM bakes the model into the
# image at `sam build` time, so a stack deployed with another ModelPrecision than it was built
# with would serve the wrong model under the wrong name: refuse it at start-up instead.
EXPECTED_PRECISION = os.environ.get("MODEL_PRECISION") or None
# The image verifies the model's sha256 once, at build time (Dockerfile), and sets MODEL_VERIFY=size:
# a cold start then only checks the size. Anywhere else the full hash is checked at start-up.
VERIFY_SHA256 = os.environ.get("MODEL_VERIFY", "sha256") != "size"
HEADERS = {"content-type": "application/json"}
FUNCTION_NAME = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")  # set by Lambda (and the emulator)
CPU = cpu_info().describe()  # Lambda's x86 hosts vary between cold starts: every log line names this one
SNAPSHOT_CPU = cpu_info()  # with SnapStart, the CPU the snapshot is made on (see _after_restore)

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ResnetServerless"), service=SERVICE_NAME)


def _load() -> Service:
    """The model behind the contract (logged as ready), or a ModelLoadError with a one-line reason."""
    classifier = Classifier(MODEL_PATH, verify_sha256=VERIFY_SHA256)
    if EXPECTED_PRECISION and classifier.sidecar.precision != EXPECTED_PRECISION:
        raise ModelLoadError(
            f"the image holds the {classifier.sidecar.precision} model but the function is configured for "
            f"{EXPECTED_PRECISION}: give `sam build` and `sam deploy` the same ModelPrecision"
        )
    service = Service(classifier, init_started=_INIT_STARTED, function_name=FUNCTION_NAME)
    logger.info("model ready", extra={"model": classifier.sidecar.label, "init_ms": round(service.init_ms, 1),
                                      "threads": classifier.threads, "sha256": classifier.sidecar.sha256,
                                      "cpu": CPU, "int8_kernel": classifier.engine.int8_kernel,
                                      "canary": classifier.canary.summary(), "canary_ms": round(classifier.canary.ms, 1)})
    return service


_PATH = re.compile(r"(?<![\w.])/(?:[^\s:'\"`()]+/)*([^\s:'\"`()/]+)")


def _without_paths(reason: str) -> str:
    """The load error as callers see it: every path cut to its file name (the log keeps the whole reason)."""
    return _PATH.sub(lambda m: m.group(1), reason)


try:
    SERVICE: Service | None = _load()
    LOAD_ERROR: ModelLoadError | None = None
except ModelLoadError as exc:  # a clear error at start-up; every request then gets it (without paths) as a 500 body
    SERVICE, LOAD_ERROR = None, ModelLoadError(_without_paths(exc.message))
    logger.error("model failed to load", extra={"reason": exc.message, "model_path": str(MODEL_PATH), "cpu": CPU})


def _after_restore() -> None:
    """SnapStart: a new environment resumed from the snapshot. Re-read the CPU and, when it would choose
    another INT8 kernel than the snapshot's, rebuild the session and run the canary again
    (:mod:`lambda_onnx.snapshot`); a canary that now fails refuses every request, as at a cold start."""
    global SERVICE, LOAD_ERROR, CPU
    if SERVICE is None:
        return
    try:
        check = after_restore(SERVICE.classifier, SNAPSHOT_CPU)
    except ModelLoadError as exc:
        SERVICE, LOAD_ERROR, CPU = None, exc, cpu_info().describe()
        logger.error("model refused after restore", extra={"reason": exc.message, "cpu": CPU,
                                                           "snapshot_cpu": SNAPSHOT_CPU.describe()})
        return
    CPU = check.restored_cpu.describe()
    logger.info("restored from a snapshot", extra=check.log_fields())


RESTORE_HOOK = register_after_restore(_after_restore)  # False off Lambda's managed runtimes


def _is_http_event(event: Any) -> bool:
    return isinstance(event, dict) and ("requestContext" in event or "httpMethod" in event or "routeKey" in event)


def _headers(event: dict[str, Any]) -> dict[str, str]:
    headers = event.get("headers")
    # API Gateway and Function URLs send string values; anything else is not a header we read.
    return {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)} if isinstance(headers, dict) else {}


def _http_request(event: dict[str, Any]) -> tuple[str, bytes, str | None]:
    """(method, body bytes, content type) of an HTTP API 2.0 / Function URL / REST 1.0 event."""
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, dict) else None
    method = (http.get("method") if isinstance(http, dict) else None) or event.get("httpMethod") or "POST"
    if not isinstance(method, str):
        raise BadRequestError(f"the event's HTTP method must be a string, got {type(method).__name__}")
    body = event.get("body") or ""
    if not isinstance(body, str):  # API Gateway and Function URLs always send a string (or null)
        raise BadRequestError(f"the event body must be a string, got {type(body).__name__}")
    if event.get("isBase64Encoded"):
        check_request_size(len(body) * 3 // 4 - body[-2:].count("="))  # refused before it is decoded
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError("the event body is marked isBase64Encoded but is not valid base64") from None
    else:
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the event's JSON): not text at all
            raise BadRequestError("the event body is not valid Unicode text") from None
    return method.upper(), raw, _headers(event).get("content-type")


def _payload_bytes(event: Any) -> int:
    """A direct invoke's size as JSON, for the metrics. The runtime parses the payload with a shallow
    stack, so an event nested almost to the recursion limit can fail to re-encode here: then 0."""
    try:
        return len(json.dumps(event))
    except (RecursionError, TypeError, ValueError):
        return 0


def trace_id_of(event: Any) -> str | None:
    """The X-Ray trace id: Lambda's ``_X_AMZN_TRACE_ID``, else the ``X-Amzn-Trace-Id`` header that
    API Gateway and Function URLs put in the event (the local emulator only provides the latter)."""
    return os.environ.get("_X_AMZN_TRACE_ID") or (_headers(event).get("x-amzn-trace-id") if _is_http_event(event) else None)


def classify(event: Any, request_id: str, trace_id: str | None) -> tuple[int, ResponseBody | ErrorBody]:
    """A Lambda event -> (status, JSON body). Pure apart from the model: testable without Lambda."""
    if SERVICE is None:
        assert LOAD_ERROR is not None
        return LOAD_ERROR.status, error_body(LOAD_ERROR, request_id, trace_id, FUNCTION_NAME)
    try:
        if _is_http_event(event):
            method, body, content_type = _http_request(event)
            if method != "POST":
                raise MethodNotAllowedError(f"use POST to classify, not {quoted(method)}")
            return SERVICE.respond(body=body, content_type=content_type, request_id=request_id, trace_id=trace_id)
        return SERVICE.respond(payload=event, request_bytes=_payload_bytes(event), request_id=request_id, trace_id=trace_id)
    except ClassifierError as exc:
        return exc.status, error_body(exc, request_id, trace_id, FUNCTION_NAME)


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(log_event=False)  # never log whole events: they carry the image
def handler(event: Any, context: Any) -> dict[str, Any]:
    request_id = getattr(context, "aws_request_id", "") or ""
    decoder = DecoderLog()  # what libtiff & co. print for this request's image, kept off raw stderr
    try:
        trace_id = trace_id_of(event)
        with collecting(decoder):
            status, body = classify(event, request_id, trace_id)
    except Exception:  # a fault of ours outside the Service: still one response shape, never a crash
        logger.exception("internal error while handling the event")
        trace_id = os.environ.get("_X_AMZN_TRACE_ID")
        status, body = internal_error_body(request_id, trace_id, FUNCTION_NAME)
    if "error" not in body:  # status 200: every refusal, and only a refusal, carries an error code
        m = body["metrics"]
        metrics.add_metric(name="HandlerDuration", unit=MetricUnit.Milliseconds, value=m["handler_ms"])
        metrics.add_metric(name="InferenceDuration", unit=MetricUnit.Milliseconds, value=m["inference_ms"])
        metrics.add_metric(name="PeakRss", unit=MetricUnit.Megabytes, value=m["peak_rss_mb"])
        top = body["predictions"][0]
        logger.info("classified", extra={"status": status, "handler_ms": m["handler_ms"], "cold_start": m["cold_start"],
                                         "image": f'{body["image"]["width"]}x{body["image"]["height"]} {body["image"]["format"]}',
                                         "request_bytes": m["request_bytes"], "top1": top["label"], "cpu": CPU,
                                         "int8_kernel": body["model"]["int8_kernel"],
                                         "canary": body["model"]["canary"].get("status"), **decoder.log_fields()})
    else:
        metrics.add_metric(name="ClientErrors" if status < 500 else "ServerErrors", unit=MetricUnit.Count, value=1)
        logger.warning("request refused", extra={"status": status, "error": body["error"], "reason": body["message"],
                                                 **decoder.log_fields()})
    return {"statusCode": status, "headers": HEADERS, "body": json.dumps(body)}
