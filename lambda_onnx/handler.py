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
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from aws_lambda_powertools import Logger, Metrics  # noqa: E402
from aws_lambda_powertools.metrics import MetricUnit  # noqa: E402

from lambda_onnx.classifier import Classifier  # noqa: E402
from lambda_onnx.contract import Service, error_body  # noqa: E402
from lambda_onnx.errors import BadRequestError, ClassifierError, MethodNotAllowedError, ModelLoadError  # noqa: E402

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "resnet-serverless")
# The image bakes the model in here (see Dockerfile); MODEL_PATH overrides it for local runs.
MODEL_PATH = Path(os.environ.get("MODEL_PATH", Path(os.environ.get("LAMBDA_TASK_ROOT", Path(__file__).parent.parent)) / "model" / "model.onnx"))
HEADERS = {"content-type": "application/json"}

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ResnetServerless"), service=SERVICE_NAME)

try:
    SERVICE: Service | None = Service(Classifier(MODEL_PATH), init_started=_INIT_STARTED)
    LOAD_ERROR: ModelLoadError | None = None
    logger.info("model ready", extra={"model": SERVICE.classifier.sidecar.label, "init_ms": round(SERVICE.init_ms, 1),
                                      "threads": SERVICE.classifier.threads, "sha256": SERVICE.classifier.sidecar.sha256})
except ModelLoadError as exc:  # a clear error at start-up; every request then gets it as a 500 body
    SERVICE, LOAD_ERROR = None, exc
    logger.error("model failed to load", extra={"reason": exc.message, "model_path": str(MODEL_PATH)})


def _is_http_event(event: Any) -> bool:
    return isinstance(event, dict) and ("requestContext" in event or "httpMethod" in event or "routeKey" in event)


def _http_request(event: dict[str, Any]) -> tuple[str, bytes, str | None]:
    """(method, body bytes, content type) of an HTTP API 2.0 / Function URL / REST 1.0 event."""
    context = event.get("requestContext") or {}
    method = (context.get("http") or {}).get("method") or event.get("httpMethod") or "POST"
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError("the event body is marked isBase64Encoded but is not valid base64") from None
    else:
        raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return method.upper(), raw, headers.get("content-type")


def classify(event: Any, request_id: str, trace_id: str | None) -> tuple[int, dict[str, Any]]:
    """A Lambda event -> (status, JSON body). Pure apart from the model: testable without Lambda."""
    if SERVICE is None:
        assert LOAD_ERROR is not None
        return LOAD_ERROR.status, error_body(LOAD_ERROR, request_id, trace_id)
    try:
        if _is_http_event(event):
            method, body, content_type = _http_request(event)
            if method != "POST":
                raise MethodNotAllowedError(f"use POST to classify, not {method}")
            return SERVICE.respond(body=body, content_type=content_type, request_id=request_id, trace_id=trace_id)
        size = len(json.dumps(event)) if isinstance(event, (dict, list)) else 0
        return SERVICE.respond(payload=event, request_bytes=size, request_id=request_id, trace_id=trace_id)
    except ClassifierError as exc:
        return exc.status, error_body(exc, request_id, trace_id)


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(log_event=False)
def handler(event: Any, context: Any) -> dict[str, Any]:
    request_id = getattr(context, "aws_request_id", "") or ""
    trace_id = os.environ.get("_X_AMZN_TRACE_ID")
    status, body = classify(event, request_id, trace_id)
    if status == 200:
        m = body["metrics"]
        metrics.add_metric(name="HandlerDuration", unit=MetricUnit.Milliseconds, value=m["handler_ms"])
        metrics.add_metric(name="InferenceDuration", unit=MetricUnit.Milliseconds, value=m["inference_ms"])
        metrics.add_metric(name="PeakRss", unit=MetricUnit.Megabytes, value=m["peak_rss_mb"])
        top = body["predictions"][0]
        logger.info("classified", extra={"status": status, "handler_ms": m["handler_ms"], "cold_start": m["cold_start"],
                                         "image": f'{body["image"]["width"]}x{body["image"]["height"]} {body["image"]["format"]}',
                                         "request_bytes": m["request_bytes"], "top1": top["label"]})
    else:
        metrics.add_metric(name="ClientErrors" if status < 500 else "ServerErrors", unit=MetricUnit.Count, value=1)
        logger.warning("request refused", extra={"status": status, "error": body["error"], "reason": body["message"]})
    return {"statusCode": status, "headers": HEADERS, "body": json.dumps(body)}
