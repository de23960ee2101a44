"""Client backends against a real HTTP server started here (no mocked client): what each one sends,
and how every failure comes back as a typed error, with the server's message, never retried when
the request may have run.

The server plays API Gateway / a Function URL for :class:`HttpBackend` and the Lambda Invoke API for
:class:`LambdaInvokeBackend` (boto3 pointed at it with ``endpoint_url``).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lambda_onnx.errors import BackendError, BackendTimeoutError, BackendUnavailableError, ThrottledError
from lambda_onnx.photos import by_name
from local.clients.http import HttpBackend
from local.clients.inprocess import InProcessBackend
from local.clients.invoke import LambdaInvokeBackend
from local.wire import raise_for_body
from tests.helpers import corpus

ACCESS_KEY, SECRET_KEY = "AKIDTESTBACKENDS", "backend-test-secret"
SLOW_S, CLIENT_TIMEOUT_S = 1.5, 0.3
PNG = by_name("chelsea").read()
CONTRACT_BODY = {"predictions": [{"class_id": 282, "label": "tiger cat", "probability": 0.5}],
                 "metrics": {"handler_ms": 4.0, "cold_start": False}, "model": {"arch": "test"}}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})}


def verify_sigv4(method: str, path: str, headers: dict[str, str], body: bytes) -> bool:
    """Recompute the signature from what arrived on the wire, as AWS would."""
    auth = headers.get("Authorization", "")
    match = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
                         r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})", auth)
    if match is None or match["key"] != ACCESS_KEY:
        return False
    lowered = {k.lower(): v for k, v in headers.items()}
    signed = {name: lowered[name] for name in match["signed"].split(";")}
    request = AWSRequest(method=method, url=f"http://{lowered['host']}{path}", data=body, headers=signed)
    request.context["timestamp"] = lowered["x-amz-date"]
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), match["service"], match["region"])
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return hmac.compare_digest(expected, match["signature"])


def route(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
    """What the fake service answers, by path."""
    invoke = re.fullmatch(r"/2015-03-31/functions/(?P<name>[^/]+)/invocations", path)
    if invoke is not None:  # the Lambda Invoke API
        name = invoke["name"]
        if name == "ok":
            return json_response(200, {"statusCode": 200, "headers": {}, "body": json.dumps(CONTRACT_BODY)},
                                 {"X-Amz-Executed-Version": "$LATEST"})
        if name == "rejecting":
            body_ = {"error": "invalid_image", "message": "could not decode the image", "status": 400}
            return json_response(200, {"statusCode": 400, "headers": {}, "body": json.dumps(body_)})
        if name == "throttled":
            return json_response(429, {"message": "Rate Exceeded.", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                                       "Type": "User"}, {"x-amzn-ErrorType": "TooManyRequestsException"})
        if name == "crashing":
            return json_response(200, {"errorMessage": "boom in the handler", "errorType": "RuntimeError", "stackTrace": []},
                                 {"X-Amz-Function-Error": "Unhandled"})
        if name == "timing-out":
            return json_response(200, {"errorMessage": "2026-01-01T00:00:00Z abc Task timed out after 30.00 seconds",
                                       "errorType": "Sandbox.Timedout"}, {"X-Amz-Function-Error": "Unhandled"})
        if name == "slow":
            time.sleep(SLOW_S)
            return json_response(200, {"statusCode": 200, "headers": {}, "body": json.dumps(CONTRACT_BODY)})
        return json_response(404, {"Type": "User", "Message": f"Function not found: {name}"},
                             {"x-amzn-ErrorType": "ResourceNotFoundException"})
    if path == "/classify":
        return json_response(200, CONTRACT_BODY)
    if path == "/throttle":
        return json_response(429, {"message": "Too Many Requests"})
    if path == "/reject":
        return json_response(400, {"error": "invalid_image", "message": "could not decode the image", "status": 400})
    if path == "/fault":
        return json_response(500, {"error": "internal_error", "message": "internal error; quote request id r-1", "status": 500})
    if path == "/forbidden":  # a Function URL refusing an unsigned or badly signed request
        return json_response(403, {"Message": "Forbidden"})
    if path == "/gateway":
        return 502, b"<html>Bad Gateway</html>", {"content-type": "text/html"}
    if path == "/not-json":
        return 200, b"hello", {"content-type": "text/plain"}
    if path == "/slow":
        time.sleep(SLOW_S)
        return json_response(200, CONTRACT_BODY)
    if path == "/signed":
        if verify_sigv4(method, path, headers, body):
            return json_response(200, CONTRACT_BODY)
        return json_response(403, {"Message": "The request signature we calculated does not match the signature you provided."})
    return json_response(404, {"message": "Not Found"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = dict(self.headers.items())
        self.server.requests.append((self.path, headers, body))
        status, payload, response_headers = route("POST", self.path, headers, body)
        try:
            self.send_response(status)
            for name, value in {**response_headers, "content-length": str(len(payload))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def base(server) -> str:
    server.requests.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed


# --- HttpBackend ------------------------------------------------------------------------------------

def test_http_json_sends_the_reference_request(server, base):
    backend = HttpBackend(base + "/classify", timeout=5, name="api")
    result = backend.classify(PNG)
    backend.close()
    path, headers, body = server.requests[-1]
    assert headers["content-type"] == "application/json"
    assert base64.b64decode(json.loads(body)["image"]) == PNG
    assert (result.status, result.kind, result.predictions[0].label) == (200, "serverless", "tiger cat")
    assert result.request_bytes == len(body) and result.response_bytes == len(json.dumps(CONTRACT_BODY))
    assert result.round_trip_ms > 0 and result.server_ms == 4.0


@pytest.mark.parametrize("data,content_type", [(PNG, "image/png"), (corpus.encode(corpus.chelsea(), "JPEG"), "image/jpeg"),
                                               (corpus.encode(corpus.chelsea(), "WEBP"), "image/webp")])
def test_http_binary_sends_the_bytes_with_their_type(server, base, data, content_type):
    backend = HttpBackend(base + "/classify", timeout=5, send="binary", kind="server")
    assert backend.classify(data).kind == "server"
    backend.close()
    _, headers, body = server.requests[-1]
    assert (headers["content-type"], body) == (content_type, data)


@pytest.mark.parametrize("path,error,status,code,text", [
    ("/throttle", ThrottledError, 429, None, "Too Many Requests"),
    ("/reject", BackendError, 400, "invalid_image", "could not decode the image"),
    ("/fault", BackendError, 500, "internal_error", "quote request id r-1"),
    ("/forbidden", BackendError, 403, None, "Forbidden"),
    ("/gateway", BackendError, 502, None, "Bad Gateway"),
    ("/not-json", BackendError, 200, "bad_response", "hello"),
])
def test_http_errors_are_typed_with_the_servers_message(server, base, path, error, status, code, text):
    backend = HttpBackend(base + path, timeout=5)
    with pytest.raises(error) as raised:
        backend.classify(PNG)
    backend.close()
    assert raised.value.status == status and text in raised.value.message
    if code:
        assert raised.value.code == code
    assert len(server.requests) == 1  # an answered request is never sent again


def test_http_timeout_is_typed_and_not_retried(server, base):
    backend = HttpBackend(base + "/slow", timeout=CLIENT_TIMEOUT_S)
    with pytest.raises(BackendTimeoutError):
        backend.classify(PNG)
    backend.close()
    assert len(server.requests) == 1


def test_http_connection_refused_is_unavailable():
    backend = HttpBackend(f"http://127.0.0.1:{closed_port()}/classify", timeout=2, connect_retries=1)
    with pytest.raises(BackendUnavailableError, match="cannot connect"):
        backend.classify(PNG)
    backend.close()


def test_sigv4_signature_verifies_on_the_server(server, base, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for send in ("json", "binary"):
        backend = HttpBackend(base + "/signed", timeout=5, sigv4_region="eu-west-1", send=send)
        assert backend.classify(PNG).status == 200
        backend.close()
        _, headers, _ = server.requests[-1]
        assert "/eu-west-1/lambda/aws4_request" in headers["Authorization"]
    unsigned = HttpBackend(base + "/signed", timeout=5)
    with pytest.raises(BackendError) as raised:  # the same server refuses what is not signed
        unsigned.classify(PNG)
    unsigned.close()
    assert raised.value.status == 403 and "signature" in raised.value.message


def test_sigv4_without_credentials_says_so(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(BackendError, match="no AWS credentials"):
        HttpBackend("http://127.0.0.1:9/classify", sigv4_region="us-east-1")


# --- LambdaInvokeBackend (boto3 against the fake Invoke API) ------------------------------------------

@pytest.fixture
def lambda_client_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def invoke_backend(base: str, function: str, **kwargs: Any) -> LambdaInvokeBackend:
    return LambdaInvokeBackend(function, "us-east-1", endpoint_url=base, **kwargs)


def test_invoke_sends_the_payload_and_parses_the_proxy_response(server, base, lambda_client_env):
    backend = invoke_backend(base, "ok")
    result = backend.classify(PNG)
    backend.close()
    path, headers, body = server.requests[-1]
    assert path == "/2015-03-31/functions/ok/invocations" and headers.get("X-Amz-Invocation-Type") == "RequestResponse"
    assert base64.b64decode(json.loads(body)["image"]) == PNG and "/us-east-1/lambda/aws4_request" in headers["Authorization"]
    assert (result.status, result.kind, result.predictions[0].label) == (200, "serverless", "tiger cat")
    assert result.request_bytes == len(body) and result.extra["executed_version"] == "$LATEST"


@pytest.mark.parametrize("function,error,status,code,text", [
    ("throttled", ThrottledError, 429, "throttled", "Rate Exceeded"),
    ("crashing", BackendError, 502, "function_error", "boom in the handler"),
    ("timing-out", BackendTimeoutError, 504, "backend_timeout", "Task timed out"),
    ("rejecting", BackendError, 400, "invalid_image", "could not decode the image"),
    ("missing", BackendError, 404, "ResourceNotFoundException", "Function not found"),
])
def test_invoke_errors_are_typed_and_never_retried(server, base, lambda_client_env, function, error, status, code, text):
    backend = invoke_backend(base, function)
    with pytest.raises(error) as raised:
        backend.classify(PNG)
    backend.close()
    assert (raised.value.status, raised.value.code) == (status, code) and text in raised.value.message
    assert type(raised.value) is error
    assert len(server.requests) == 1


def test_invoke_read_timeout_is_typed_and_not_retried(server, base, lambda_client_env):
    backend = invoke_backend(base, "slow", timeout=CLIENT_TIMEOUT_S)
    with pytest.raises(BackendTimeoutError):
        backend.classify(PNG)
    backend.close()
    assert len(server.requests) == 1


def test_invoke_connection_refused_is_unavailable_after_retrying_the_connection(lambda_client_env):
    backend = LambdaInvokeBackend("ok", "us-east-1", endpoint_url=f"http://127.0.0.1:{closed_port()}", connect_retries=1,
                                  timeout=2, connect_timeout=1)
    with pytest.raises(BackendUnavailableError, match="cannot connect"):
        backend.classify(PNG)
    backend.close()


# --- the shared error mapping ---------------------------------------------------------------------------

def test_raise_for_body_maps_statuses():
    raise_for_body(200, {}, "x")
    with pytest.raises(ThrottledError):
        raise_for_body(429, {"message": "slow down"}, "x")
    with pytest.raises(BackendError) as raised:
        raise_for_body(415, {"error": "unsupported_media_type", "message": "SVG is not supported"}, "x")
    assert (raised.value.status, raised.value.code) == (415, "unsupported_media_type") and "SVG" in raised.value.message


@pytest.mark.slow
def test_in_process_backend_raises_the_same_typed_errors(lite0_classifier):
    backend = InProcessBackend(lite0_classifier)
    with pytest.raises(BackendError) as raised:
        backend.classify(corpus.svg())
    assert (raised.value.status, raised.value.code) == (415, "unsupported_media_type")
