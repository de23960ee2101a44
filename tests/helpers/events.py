"""Lambda events as API Gateway, Function URLs and REST APIs send them, a Lambda context, and the keys
every answer has: what the handler tests and the hostile-input and fuzz tests build their requests from."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

MEMORY_MB = 2048
ERROR_KEYS = {"error", "message", "status", "request_id", "trace_id", "function_name"}
OK_KEYS = {"predictions", "image", "model", "host", "metrics", "request_id", "trace_id", "function_name", "warnings"}
METRIC_KEYS = {"json_parse_ms", "decode_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "handler_ms",
               "request_bytes", "cold_start", "init_ms", "peak_rss_mb", "memory_mb", "memory_utilisation_pct"}


@dataclass
class FakeContext:
    """The attributes of Lambda's context object that the handler and powertools read."""

    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "resnet-serverless-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = MEMORY_MB
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:resnet-serverless-test"
    log_group_name: str = "/aws/lambda/resnet-serverless-test"
    log_stream_name: str = "2026/01/01/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


# --- events, written out as AWS documents them (not with the client's own builder) ------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def json_body(image: bytes, prefix: str = "") -> str:
    return json.dumps({"image": prefix + b64(image)})


def http_api(body: str | None, content_type: str | None = "application/json", *, encoded: bool = False,
             method: str = "POST", headers: dict[str, str] | None = None) -> dict[str, Any]:
    """API Gateway HTTP API, payload format 2.0."""
    return {
        "version": "2.0", "routeKey": "POST /classify", "rawPath": "/classify", "rawQueryString": "",
        "headers": {**({"content-type": content_type} if content_type else {}), "host": "abc123.execute-api.us-east-1.amazonaws.com",
                    **(headers or {})},
        "requestContext": {"accountId": "123456789012", "apiId": "abc123", "http": {"method": method, "path": "/classify",
                           "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "pytest"},
                           "requestId": "JKJaXmPLvHcESHA=", "routeKey": "POST /classify", "stage": "$default"},
        "body": body, "isBase64Encoded": encoded,
    }


def function_url(body: str | None, content_type: str = "application/json", *, encoded: bool = False,
                 method: str = "POST") -> dict[str, Any]:
    """Lambda Function URL: payload 2.0 with routeKey ``$default`` and a lambda-url domain."""
    event = http_api(body, content_type, encoded=encoded, method=method)
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/"
    event["headers"]["host"] = event["requestContext"]["domainName"] = "abcdefghij.lambda-url.us-east-1.on.aws"
    return event


def rest_v1(body: str | None, content_type: str = "application/json", *, encoded: bool = False,
            method: str = "POST") -> dict[str, Any]:
    """API Gateway REST API, payload format 1.0 (headers keep their case)."""
    return {"resource": "/classify", "path": "/classify", "httpMethod": method, "headers": {"Content-Type": content_type},
            "multiValueHeaders": {"Content-Type": [content_type]}, "queryStringParameters": None,
            "requestContext": {"resourcePath": "/classify", "httpMethod": method, "stage": "prod", "requestId": "c6af9ac6"},
            "body": body, "isBase64Encoded": encoded}
