"""Property-based tests: generated Lambda events, HTTP requests and image bytes never crash an edge.

Every answer has an allowed status (never a 500 for anything the request contains) and the
documented body: the success shape, or ``{"error", "message", "status", ...}`` with a short reason
that does not echo the request back.

Two settings profiles, chosen by ``HYPOTHESIS_PROFILE``:

- ``ci`` (default): 200 examples per test, a few seconds each;
- ``long``: 10,000 examples per test (about 10 minutes on 2 cores)::

      HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_fuzz.py -p no:cacheprovider -q

Failures print the ``@reproduce_failure`` blob to replay them.
"""

from __future__ import annotations

import base64
import json
import os
import string
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from export.registry import LITE0_PREPROCESSING
from lambda_onnx.contract import decode_base64, image_from_body, image_from_payload
from lambda_onnx.errors import ClassifierError
from lambda_onnx.preprocess import prepare
from tests.helpers import corpus
from tests.helpers.events import ERROR_KEYS, OK_KEYS, FakeContext

pytestmark = pytest.mark.timeout(3600)  # the long profile; the ci one takes seconds

settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=10_000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
PROFILE = settings.get_profile(PROFILE_NAME)
fuzz = settings(PROFILE)
# Against a real server process each example is a loopback round trip: in CI a tenth as many.
fuzz_process = settings(PROFILE, max_examples=PROFILE.max_examples // 10 if PROFILE_NAME == "ci" else PROFILE.max_examples)

HANDLER_STATUSES = {200, 400, 405, 413, 415}
SERVE_STATUSES = {200, 400, 404, 405, 413, 415}
MAX_MESSAGE = 500  # a reason is a sentence, never the request echoed back


# --- strategies ---------------------------------------------------------------------------------------

def _seeds() -> list[bytes]:
    """Small valid images of every decoded format: mutated, they reach deep into each decoder."""
    small = corpus.chelsea().resize((48, 32))
    seeds = [corpus.encode(small, fmt) for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")]
    seeds += [corpus.encode(small, "TIFF", compression="tiff_lzw"), corpus.encode(small.quantize(16), "PNG"),
              corpus.encode(small, "GIF", save_all=True, append_images=[small.rotate(90)]),
              corpus.encode(small, "JPEG", progressive=True), corpus.exif_rotated_jpeg(small, 6),
              corpus.encode(small.convert("LA"), "PNG"), corpus.encode(small.convert("CMYK"), "JPEG")]
    return seeds


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["set", "delete", "insert", "truncate"]))
        if op == "set" and data:
            data[where] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[where : where + draw(st.integers(1, 64))]
        elif op == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[where:]
    return bytes(data)


image_bytes = st.one_of(st.sampled_from(SEEDS), mutated(), st.binary(max_size=1024))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


@st.composite
def image_fields(draw: st.DrawFn) -> Any:
    """What a client might put in ``{"image": ...}``."""
    encoded = base64.b64encode(draw(image_bytes)).decode("ascii")
    form = draw(st.sampled_from(["plain", "newlines", "data_url", "bad_data_url", "garbled", "text", "json"]))
    if form == "newlines":
        return base64.encodebytes(base64.b64decode(encoded)).decode("ascii")
    if form == "data_url":
        return f"data:{draw(st.sampled_from(['image/png', 'image/jpeg', 'x']))};base64," + encoded
    if form == "bad_data_url":
        return "data:" + draw(st.text(max_size=20)) + encoded
    if form == "garbled":
        cut = draw(st.integers(0, len(encoded)))
        return encoded[:cut] + draw(st.text(max_size=4)) + encoded[cut:]
    if form == "text":
        return draw(st.text(max_size=50))
    if form == "json":
        return draw(json_values)
    return encoded


payloads = st.one_of(
    st.fixed_dictionaries({"image": image_fields()}),
    st.fixed_dictionaries({"image": image_fields()}, optional={"extra": json_values, "image2": json_values}),
    json_values,
)
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "application/vnd.api+json", "image/jpeg", "image/png",
                 "image/webp", "image/gif", "image/heic", "image/avif", "image/tiff", "image/bmp", "application/octet-stream",
                 "text/plain", "image/svg+xml", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", ""]
header_text = st.text(alphabet=string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", ""),
                      max_size=80).map(str.strip)  # what a client library lets through (no edge whitespace)
content_types = st.one_of(st.none(), st.sampled_from(CONTENT_TYPES), header_text)


@st.composite
def http_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """(body, content type) of an HTTP request."""
    kind = draw(st.sampled_from(["json", "image", "random"]))
    if kind == "json":
        body = json.dumps(draw(payloads)).encode()
        return body, draw(st.sampled_from([*CONTENT_TYPES[:3], None]) | content_types)
    if kind == "image":
        return draw(image_bytes), draw(st.sampled_from(CONTENT_TYPES[3:12]) | content_types)
    return draw(st.binary(max_size=512)), draw(content_types)


@st.composite
def events(draw: st.DrawFn) -> Any:
    """Lambda events: HTTP API 2.0, Function URL, REST 1.0 (each with generated body, flags, method and
    headers, some fields replaced by arbitrary JSON), direct invokes, and arbitrary JSON."""
    kind = draw(st.sampled_from(["http_api", "function_url", "rest_v1", "direct", "arbitrary"]))
    if kind == "direct":
        return draw(payloads)
    if kind == "arbitrary":
        return draw(json_values)
    raw, content_type = draw(http_bodies())
    encode = draw(st.sampled_from([True, False, None, "true", "false", 1, 0]))
    body: Any = base64.b64encode(raw).decode("ascii") if encode else raw.decode("utf-8", "replace")
    body = draw(st.sampled_from([body, body, body, None, ""]) | json_values)
    method = draw(st.sampled_from(["POST", "POST", "GET", "PUT", "post", "OPTIONS"]) | st.text(max_size=10) | json_values)
    headers: Any = {"content-type": content_type} if content_type is not None else {}
    headers = draw(st.sampled_from([headers, {**headers, "x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793"}])
                   | st.dictionaries(st.text(max_size=15), json_values, max_size=3) | json_values)
    if kind == "rest_v1":
        event = {"resource": "/classify", "path": "/classify", "httpMethod": method, "headers": headers,
                 "requestContext": {"httpMethod": method, "stage": "prod", "requestId": "c6af9ac6"},
                 "body": body, "isBase64Encoded": encode}
    else:
        route = "POST /classify" if kind == "http_api" else "$default"
        event = {"version": "2.0", "routeKey": route, "rawPath": "/classify", "headers": headers,
                 "requestContext": {"http": {"method": method, "path": "/classify"}, "routeKey": route, "stage": "$default"},
                 "body": body, "isBase64Encoded": encode}
    for key in draw(st.lists(st.sampled_from(sorted(event)), max_size=2, unique=True)):
        event[key] = draw(json_values)
    return event


# --- what every answer must look like ------------------------------------------------------------------

def check_body(status: int, body: Any, allowed: set[int]) -> None:
    event(f"status {status}")  # the spread of answers, shown by --hypothesis-show-statistics
    assert status in allowed, (status, body)
    assert isinstance(body, dict)
    if status == 200:
        assert set(body) >= OK_KEYS - {"function_name"} and len(body["predictions"]) == 5
        assert all(0.0 <= p["probability"] <= 1.0 for p in body["predictions"])
    else:
        assert set(body) >= ERROR_KEYS - {"function_name"} and body["status"] == status, body
        assert isinstance(body["message"], str) and 0 < len(body["message"]) <= MAX_MESSAGE, body["message"]


# --- the contract parser and the decoder, directly ----------------------------------------------------------

@fuzz
@given(body=http_bodies())
def test_contract_parser_raises_only_typed_4xx(body):
    data, content_type = body
    try:
        image_from_body(data, content_type)
    except ClassifierError as exc:
        assert 400 <= exc.status < 500 and exc.message


@fuzz
@given(payload=payloads)
def test_payload_parser_raises_only_typed_4xx(payload):
    try:
        assert isinstance(image_from_payload(payload), bytes)
    except ClassifierError as exc:
        assert 400 <= exc.status < 500 and exc.message


@fuzz
@given(text=image_fields().filter(lambda v: isinstance(v, str)) | st.text())
def test_base64_decoder_raises_only_typed_4xx(text):
    try:
        decode_base64(text)
    except ClassifierError as exc:
        assert exc.status == 400


@fuzz
@given(data=image_bytes)
def test_decoder_gives_a_model_input_or_a_typed_4xx(data):
    try:
        for fast in (False, True):
            prepared, _ = prepare(data, LITE0_PREPROCESSING, fast=fast)
            assert prepared.tensor.shape == (1, 3, 224, 224)
    except ClassifierError as exc:
        assert 400 <= exc.status < 500 and len(exc.message) <= MAX_MESSAGE


# --- the Lambda handler ----------------------------------------------------------------------------------------

@fuzz
@given(event=events())
def test_handler_answers_every_event(lite0_handler, event):
    response = lite0_handler.handler(event, FakeContext())
    assert set(response) == {"statusCode", "headers", "body"} and response["headers"] == {"content-type": "application/json"}
    check_body(response["statusCode"], json.loads(response["body"]), HANDLER_STATUSES)


# --- local serve: the real app in-process, and the real process ---------------------------------------------

@pytest.fixture(scope="module")
def serve_client(lite0):
    from local.serve import ServeConfig, create_app

    app = create_app(ServeConfig(model=str(lite0), runtime="onnxruntime"))
    with TestClient(app, raise_server_exceptions=True) as client:  # an exception in the app fails the test
        yield client


@fuzz
@given(body=http_bodies(), method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH"]),
       path=st.sampled_from(["/classify"] * 6 + ["/classify/", "/health", "/model", "/", "/nowhere/x.png"]),
       extra=st.dictionaries(st.sampled_from(["x-request-id", "accept", "x-custom", "origin"]), header_text, max_size=2))
def test_serve_app_answers_every_request(serve_client, body, method, path, extra):
    data, content_type = body
    headers = {**extra, **({"content-type": content_type} if content_type is not None else {})}
    response = serve_client.request(method, path, content=data, headers=headers)
    if path in ("/health", "/model") and method == "GET":
        assert response.status_code == 200
        return
    check_body(response.status_code, response.json(), SERVE_STATUSES)


@fuzz_process
@given(body=http_bodies())
def test_serve_process_answers_every_body(lite0_serve, body):
    data, content_type = body
    headers = {"content-type": content_type} if content_type is not None else {}
    response = httpx.post(lite0_serve.url + "/classify", content=data, headers=headers, timeout=30)
    check_body(response.status_code, response.json(), SERVE_STATUSES)
