"""``python -m local serve``: the same contract over HTTP, admission control, slow clients, CORS."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

import corpus
from conftest import ROOT, run_module, wait_until_answers
from lambda_onnx.limits import MAX_REQUEST_BYTES
from lambda_onnx.sidecar import Sidecar, sidecar_path
from local.photos import by_name

PROB_ATOL = 1e-6  # same model, same runtime, same preprocessing: only thread scheduling may differ


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(model, *args: str):
    port = free_port()
    # The runtime is named: --runtime auto would follow whatever `local bench` last measured here.
    runtime = () if "--runtime" in args else ("--runtime", "onnxruntime")
    proc = subprocess.Popen([sys.executable, "-m", "local", "serve", "--model", str(model), "--port", str(port),
                             "--log-level", "warning", *runtime, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/health", proc, 60, output=proc.stdout.read)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(lite0):
    with serving(lite0) as url:
        yield url


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post_json(url: str, payload, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/classify", content=json.dumps(payload), headers={"content-type": "application/json"},
                      timeout=60, **kwargs)


def assert_still_serves(url: str) -> None:
    response = post_json(url, {"image": b64(by_name("coffee").read())})
    assert response.status_code == 200 and response.json()["predictions"][0]["label"] == "espresso"


def test_json_binary_and_data_url_bodies_agree_with_in_process(server, lite0_classifier):
    photo = by_name("chelsea").read()
    expected = [p.probability for p in lite0_classifier.predict(photo).predictions]
    answers = [
        post_json(server, {"image": b64(photo)}),
        post_json(server, {"image": "data:image/png;base64," + base64.encodebytes(photo).decode()}),
        httpx.post(f"{server}/classify", content=photo, headers={"content-type": "image/png"}, timeout=60),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predictions"][0]["label"] in by_name("chelsea").expected
        assert np.allclose([p["probability"] for p in body["predictions"]], expected, atol=PROB_ATOL)
        assert set(body["metrics"]) >= {"json_parse_ms", "decode_ms", "preprocess_ms", "inference_ms", "postprocess_ms",
                                        "handler_ms", "request_bytes", "cold_start", "init_ms", "peak_rss_mb"}
        assert body["request_id"] == response.headers["x-request-id"]
    assert answers[2].json()["metrics"]["request_bytes"] == len(photo)


def test_model_and_health_endpoints(server, lite0):
    meta = Sidecar.load(sidecar_path(lite0))
    model = httpx.get(f"{server}/model", timeout=10).json()
    assert (model["arch"], model["precision"], model["sha256"]) == (meta.arch, meta.precision, meta.sha256)
    assert model["random_weights"] is False and model["runtime"] == "onnxruntime"
    assert httpx.get(f"{server}/health", timeout=10).json()["status"] == "ok"


BAD_JSON_BODIES = [
    ("not json", b"{nope", 400, "not valid JSON"),
    ("not an object", b"[1, 2]", 400, "JSON object"),
    ("missing image", b'{"img": "x"}', 400, 'missing field "image"'),
    ("image not a string", b'{"image": 42}', 400, "base64 string"),
    ("invalid base64", b'{"image": "***not base64***"}', 400, "not valid base64"),
    ("empty image", b'{"image": ""}', 400, "empty image"),
]


@pytest.mark.parametrize("name,body,status,reason", BAD_JSON_BODIES, ids=[b[0] for b in BAD_JSON_BODIES])
def test_bad_json_requests(server, name, body, status, reason):
    response = httpx.post(f"{server}/classify", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == status
    assert reason in response.json()["message"] and response.json()["status"] == status
    assert_still_serves(server)


@pytest.mark.parametrize("case", corpus.invalid_cases(), ids=lambda c: c.name)
def test_bad_image_bytes_get_their_status(server, case):
    response = httpx.post(f"{server}/classify", content=case.data, headers={"content-type": case.content_type}, timeout=30)
    assert response.status_code == case.status, response.text
    assert response.json()["error"] and response.json()["message"]
    assert_still_serves(server)


def test_content_type_not_accepted_is_415(server):
    response = httpx.post(f"{server}/classify", content=b"hello", headers={"content-type": "text/plain"}, timeout=30)
    assert response.status_code == 415 and "not accepted" in response.json()["message"]


def test_body_over_the_limit_is_413(server):
    response = httpx.post(f"{server}/classify", content=b"\0" * (MAX_REQUEST_BYTES + 1),
                          headers={"content-type": "image/jpeg"}, timeout=60)
    assert response.status_code == 413 and "limit" in response.json()["message"]
    assert_still_serves(server)


def test_wrong_method_and_path_are_json_errors(server):
    assert httpx.get(f"{server}/classify", timeout=10).json()["error"] == "method_not_allowed"
    response = httpx.get(f"{server}/nowhere", timeout=10)
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def half_open(url: str) -> socket.socket:
    """A client that sends headers and part of its body, then stalls."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n" + b"\x89PNG")
    return sock


def test_half_open_client_does_not_block_others(server):
    stalled = [half_open(server) for _ in range(3)]
    try:
        assert_still_serves(server)
    finally:
        for sock in stalled:
            sock.close()


def test_slow_body_times_out_with_408(lite0):
    with serving(lite0, "--body-timeout", "1") as url:
        sock = half_open(url)
        sock.settimeout(30)
        answer = b""
        while b"request_timeout" not in answer:  # headers and body may come in separate segments
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
        assert_still_serves(url)


def test_connections_whose_headers_never_complete_are_closed(lite0):
    """Silent connections and headers sent a line at a time, then stalled: without a deadline for
    the request head each would stay open for ever, and enough of them exhaust the descriptors."""
    with serving(lite0, "--header-timeout", "1") as url:
        host, port = url.removeprefix("http://").split(":")
        silent = socket.create_connection((host, int(port)))
        partial = socket.create_connection((host, int(port)))
        partial.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\n")
        for sock in (silent, partial):
            sock.settimeout(30)
            assert sock.recv(4096) == b""  # the server hung up (within about a second, not 30)
            sock.close()
        # a client that completes its head in time is unaffected, and keep-alive still works
        with httpx.Client(timeout=60) as client:
            for _ in range(2):
                assert client.get(f"{url}/health").status_code == 200
        assert_still_serves(url)


def test_stalled_bodies_hold_no_inference_slot_and_past_the_receiving_limit_answer_503(lite0):
    with serving(lite0, "--max-concurrency", "1", "--max-queue", "0", "--max-receiving", "2") as url:
        stalled = [half_open(url)]  # sending its body: it holds a receiving place, not the only inference slot
        try:
            time.sleep(0.5)
            assert_still_serves(url)
            stalled.append(half_open(url))  # both receiving places are taken now
            time.sleep(0.5)
            response = post_json(url, {"image": b64(by_name("coffee").read())})
            assert response.status_code == 503
            assert "sending their bodies" in response.json()["message"] and response.headers["retry-after"]
        finally:
            for sock in stalled:
                sock.close()
        time.sleep(0.5)
        assert_still_serves(url)


def test_cross_origin_is_off_by_default_and_named_origins_only(server, lite0):
    headers = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    assert "access-control-allow-origin" not in httpx.options(f"{server}/classify", headers=headers, timeout=10).headers
    with serving(lite0, "--cors-origin", "https://app.example") as url:
        allowed = httpx.options(f"{url}/classify", headers={**headers, "origin": "https://app.example"}, timeout=10)
        assert allowed.headers.get("access-control-allow-origin") == "https://app.example"
        refused = httpx.options(f"{url}/classify", headers=headers, timeout=10)
        assert "access-control-allow-origin" not in refused.headers


def test_binds_to_loopback_only_by_default(server):
    port = int(server.rsplit(":", 1)[1])
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    external = [a for a in addresses if not a.startswith("127.") and ":" not in a]
    if not external:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with pytest.raises(OSError):
        socket.create_connection((external[0], port), timeout=2).close()


def test_bad_model_is_a_one_line_error_before_binding(tmp_path):
    out = run_module("local", "serve", "--model", str(tmp_path / "missing.onnx"), "--port", str(free_port()), timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("error: model not found")
