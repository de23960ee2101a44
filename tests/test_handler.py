"""The Lambda handler in-process with a fake context: every event kind, the error contract, one
response shape, cold start and init metrics, EMF metrics and log hygiene (in a fresh process).

The handler loads its model at import from ``MODEL_PATH``, so it is imported here after the
environment points at the exported EfficientNet-Lite0 (real weights: a wrong image cannot pass).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lambda_onnx.limits import MAX_REQUEST_BYTES
from lambda_onnx.photos import by_name
from local.wire import http_api_event
from tests.helpers import corpus
from tests.helpers.events import ERROR_KEYS, MEMORY_MB, METRIC_KEYS, OK_KEYS, FakeContext, b64, function_url, http_api, json_body, rest_v1
from tests.helpers.process import ROOT


@pytest.fixture(scope="module")
def handler(lite0):
    """``lambda_onnx.handler`` imported as Lambda would, with the model from ``MODEL_PATH``."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MODEL_PATH", str(lite0))
        env.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(MEMORY_MB))
        env.delenv("_X_AMZN_TRACE_ID", raising=False)
        env.delenv("MODEL_PRECISION", raising=False)
        sys.modules.pop("lambda_onnx.handler", None)
        module = importlib.import_module("lambda_onnx.handler")
        assert module.SERVICE is not None, module.LOAD_ERROR
        yield module
    sys.modules.pop("lambda_onnx.handler", None)


def call(handler, event: Any, context: FakeContext | None = None) -> tuple[int, dict[str, Any]]:
    """Invoke and check the one response shape every path must have."""
    response = handler.handler(event, context or FakeContext())
    assert set(response) == {"statusCode", "headers", "body"}
    assert response["headers"]["content-type"] == "application/json"
    body = json.loads(response["body"])
    assert set(body) == (OK_KEYS if response["statusCode"] == 200 else ERROR_KEYS), body
    if response["statusCode"] != 200:
        assert body["status"] == response["statusCode"] and body["message"]
    return response["statusCode"], body


CHELSEA = by_name("chelsea")


def good_events() -> dict[str, Any]:
    png = CHELSEA.read()
    jpeg = corpus.encode(corpus.chelsea(), "JPEG", quality=90)
    return {
        "http_api_json": http_api(json_body(png)),
        "http_api_json_data_url": http_api(json_body(png, "data:image/png;base64,")),
        "http_api_binary_png": http_api(b64(png), "image/png", encoded=True),
        "http_api_binary_jpeg": http_api(b64(jpeg), "image/jpeg", encoded=True),
        "function_url_json": function_url(json_body(jpeg)),
        "function_url_binary": function_url(b64(png), "image/png", encoded=True),
        "rest_v1_json": rest_v1(json_body(png)),
        "rest_v1_binary": rest_v1(b64(jpeg), "image/jpeg", encoded=True),
        "direct_invoke": {"image": b64(png)},
        "client_event_json": http_api_event(png, "json"),
        "client_event_binary": http_api_event(jpeg, "binary"),
    }


@pytest.mark.parametrize("kind", list(good_events()))
def test_every_event_kind_is_classified(handler, kind):
    context = FakeContext()
    status, body = call(handler, good_events()[kind], context)
    assert status == 200, body
    assert body["predictions"][0]["label"] in corpus.CAT, body["predictions"]
    assert len(body["predictions"]) == 5 and body["request_id"] == context.aws_request_id
    assert set(body["metrics"]) == METRIC_KEYS
    assert body["metrics"]["memory_mb"] == MEMORY_MB and body["metrics"]["init_ms"] > 0
    assert body["model"]["arch"] == "efficientnet_lite0" and body["image"]["width"] == 451


def error_events() -> list[tuple[str, Any, int, str]]:
    """(name, event, status, code): what the contract answers to each bad request."""
    bomb, svg, pdf = corpus.png_bomb(), corpus.svg(), corpus.pdf()
    return [
        ("bad_json", http_api("{not json"), 400, "bad_request"),
        ("missing_image", http_api('{"img": "abc"}'), 400, "bad_request"),
        ("image_not_a_string", http_api('{"image": 12}'), 400, "bad_request"),
        ("bad_base64", http_api('{"image": "@@@ not base64 @@@"}'), 400, "bad_request"),
        ("bad_data_url", http_api('{"image": "data:image/png,abcd"}'), 400, "bad_request"),
        ("empty_image_field", http_api('{"image": ""}'), 400, "invalid_image"),
        ("empty_binary_body", http_api("", "image/jpeg", encoded=True), 400, "invalid_image"),
        ("null_body", http_api(None, "image/png"), 400, "invalid_image"),
        ("undecodable_bytes", http_api(b64(os.urandom(2048)), "image/jpeg", encoded=True), 400, "invalid_image"),
        ("truncated_jpeg", http_api(json_body(corpus.truncated_jpeg())), 400, "invalid_image"),
        ("body_not_base64_though_flagged", http_api("!!!!", "image/png", encoded=True), 400, "bad_request"),
        ("body_not_a_string", {**http_api(None), "body": 10**9}, 400, "bad_request"),
        ("too_many_bytes", http_api(b64(b"\xff" * (MAX_REQUEST_BYTES + 1)), "image/jpeg", encoded=True), 413, "payload_too_large"),
        ("too_many_pixels", http_api(b64(bomb), "image/png", encoded=True), 413, "payload_too_large"),
        ("content_type_text", http_api("hello", "text/plain"), 415, "unsupported_media_type"),
        ("svg", http_api(b64(svg), "image/svg+xml", encoded=True), 415, "unsupported_media_type"),
        ("svg_as_png", http_api(json_body(svg)), 415, "unsupported_media_type"),
        ("pdf", function_url(b64(pdf), "image/jpeg", encoded=True), 415, "unsupported_media_type"),
        ("get_http_api", http_api(None, method="GET"), 405, "method_not_allowed"),
        ("get_rest_v1", rest_v1(None, method="GET"), 405, "method_not_allowed"),
        ("direct_missing_image", {"picture": "abc"}, 400, "bad_request"),
        ("direct_not_an_object", ["image"], 400, "bad_request"),
        ("direct_a_string", "hello", 400, "bad_request"),
        ("direct_bad_base64", {"image": "%%%"}, 400, "bad_request"),
    ]


@pytest.mark.parametrize("name,event,status,code", error_events(), ids=[e[0] for e in error_events()])
def test_error_contract(handler, name, event, status, code):
    context = FakeContext()
    got, body = call(handler, event, context)
    assert (got, body["error"]) == (status, code), body
    assert body["request_id"] == context.aws_request_id


def test_the_next_request_works_after_every_error(handler):
    for _, event, status, _ in error_events():
        assert call(handler, event)[0] == status
    status, body = call(handler, {"image": b64(CHELSEA.read())})
    assert status == 200 and body["predictions"][0]["label"] in corpus.CAT


def test_an_internal_fault_is_a_500_with_the_request_id(handler, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(handler.SERVICE.classifier, "predict", broken)
    context = FakeContext()
    status, body = call(handler, {"image": b64(CHELSEA.read())}, context)
    assert (status, body["error"]) == (500, "internal_error")
    assert context.aws_request_id in body["message"] and "secret" not in body["message"]
    monkeypatch.undo()
    assert call(handler, {"image": b64(CHELSEA.read())})[0] == 200


def test_a_fault_outside_the_service_keeps_the_response_shape(handler, monkeypatch):
    def broken(event):
        raise KeyError("unexpected")

    monkeypatch.setattr(handler, "_http_request", broken)
    context = FakeContext()
    status, body = call(handler, http_api(json_body(CHELSEA.read())), context)
    assert (status, body["error"]) == (500, "internal_error") and context.aws_request_id in body["message"]


def test_trace_id_from_lambda_or_from_the_api_gateway_header(handler, monkeypatch):
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    event = http_api(json_body(CHELSEA.read()), headers={"X-Amzn-Trace-Id": header})
    assert call(handler, event)[1]["trace_id"] == header
    assert call(handler, {"image": b64(CHELSEA.read())})[1]["trace_id"] is None
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-00000000-000000000000000000000001")
    assert call(handler, event)[1]["trace_id"] == "Root=1-00000000-000000000000000000000001"


def test_request_bytes_count_what_was_sent(handler):
    png = CHELSEA.read()
    assert call(handler, http_api(b64(png), "image/png", encoded=True))[1]["metrics"]["request_bytes"] == len(png)
    body = json_body(png)
    assert call(handler, http_api(body))[1]["metrics"]["request_bytes"] == len(body)


# --- a fresh process: cold start, init, EMF metrics and what reaches the logs ---------------------------

SCRIPT = """
import base64, json, sys, uuid
from pathlib import Path

class Context:
    function_name, function_version, memory_limit_in_mb = "resnet-serverless-test", "$LATEST", 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:resnet-serverless-test"
    log_group_name, log_stream_name = "/aws/lambda/x", "stream"
    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
    def get_remaining_time_in_millis(self):
        return 30000

import lambda_onnx.handler as handler
events = json.loads(Path(sys.argv[2]).read_text())
responses = [handler.handler(event, Context()) for event in events]
Path(sys.argv[1]).write_text(json.dumps(responses))
"""


def run_fresh(tmp_path: Path, events: list[Any], **env: str) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """The handler in a new Python process: (status, body) per event, and everything it printed."""
    (tmp_path / "events.json").write_text(json.dumps(events))
    process_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(MEMORY_MB),
                   "AWS_LAMBDA_FUNCTION_NAME": "resnet-serverless-test", **env}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "responses.json"), str(tmp_path / "events.json")],
                         cwd=tmp_path, env=process_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    responses = json.loads((tmp_path / "responses.json").read_text())
    for response in responses:
        assert set(response) == {"statusCode", "headers", "body"}
    return [(r["statusCode"], json.loads(r["body"])) for r in responses], out.stdout + out.stderr


def emf_records(logs: str) -> list[dict[str, Any]]:
    records = []
    for line in logs.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            records.append(json.loads(line))
    return records


def test_fresh_environment_cold_start_metrics_and_log_hygiene(lite0, tmp_path):
    png = CHELSEA.read()
    encoded = b64(png)
    events = [http_api(json_body(png)), http_api(encoded, "image/png", encoded=True), {"image": encoded},
              http_api('{"image": "@@@"}')]
    results, logs = run_fresh(tmp_path, events, MODEL_PATH=str(lite0))
    statuses = [status for status, _ in results]
    assert statuses == [200, 200, 200, 400]
    metrics = [body["metrics"] for _, body in results[:3]]
    assert [m["cold_start"] for m in metrics] == [True, False, False]
    assert metrics[0]["init_ms"] > 0 and len({m["init_ms"] for m in metrics}) == 1  # measured once, at import
    print(f"\nhandler init (import to model ready) {metrics[0]['init_ms']:.0f} ms; handler times "
          f"{[m['handler_ms'] for m in metrics]} ms")

    records = emf_records(logs)
    names = [metric["Name"] for record in records for directive in record["_aws"]["CloudWatchMetrics"]
             for metric in directive["Metrics"]]
    assert names.count("ColdStart") == 1 and names.count("HandlerDuration") == 3 and names.count("ClientErrors") == 1
    cold = next(r for r in records if "ColdStart" in r)
    assert cold["ColdStart"] == [1.0] and cold["function_name"] == "resnet-serverless-test"
    assert all(r["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ResnetServerless" for r in records)

    # No image bytes, no base64 and no whole event in the logs, on success or on error.
    assert encoded[:40] not in logs and encoded[len(encoded) // 2:][:40] not in logs
    assert "isBase64Encoded" not in logs and "requestContext" not in logs and "@@@" not in logs
    assert max(len(line) for line in logs.splitlines()) < 2000
    structured = [json.loads(line) for line in logs.splitlines() if line.startswith('{"level"')]
    assert any(record["message"] == "classified" and record["top1"] in corpus.CAT for record in structured)
    assert any(record["message"] == "request refused" and record["status"] == 400 for record in structured)


@pytest.mark.parametrize("case", ["missing_model", "precision_mismatch"])
def test_a_model_that_cannot_load_gives_a_clear_500(lite0, tmp_path, case):
    env = {"MODEL_PATH": str(tmp_path / "nowhere.onnx")} if case == "missing_model" else \
          {"MODEL_PATH": str(lite0), "MODEL_PRECISION": "int8"}
    results, logs = run_fresh(tmp_path, [{"image": b64(CHELSEA.read())}, http_api(json_body(CHELSEA.read()))], **env)
    for status, body in results:
        assert (status, body["error"]) == (500, "model_load_error") and body["request_id"]
    expected = "model not found" if case == "missing_model" else "configured for int8"
    assert expected in results[0][1]["message"]
    assert all(str(tmp_path) not in body["message"] and "/" not in body["message"].split("`")[0] for _, body in results)
    assert "model failed to load" in logs
