"""``python -m local serve``: the same contract over HTTP, admission control, slow clients, CORS."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from lambda_onnx.limits import MAX_REQUEST_BYTES
from lambda_onnx.photos import by_name
from lambda_onnx.sidecar import Sidecar, sidecar_path
from tests.helpers import corpus
from tests.helpers.process import ROOT, run_module, wait_until_answers

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


def half_open(url: str, source: str | None = None) -> socket.socket:
    """A client that sends headers and part of its body, then stalls (from loopback address ``source``)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), source_address=(source, 0) if source else None)
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


HTTP_PARSERS = [pytest.param("httptools", marks=pytest.mark.skipif(importlib.util.find_spec("httptools") is None,
                                                                   reason="httptools is not installed")), "h11"]


@pytest.mark.parametrize("http", HTTP_PARSERS)
def test_connections_whose_headers_never_complete_are_closed(lite0, http):
    """Silent connections and headers sent a line at a time, then stalled: without a deadline for
    the request head each would stay open for ever, and enough of them exhaust the descriptors."""
    with serving(lite0, "--header-timeout", "1", "--http", http) as url:
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


def test_slow_senders_from_one_address_hold_only_their_share_of_the_read_slots(lite0):
    """64 slow senders used to hold every read slot for the body timeout: now one address holds a quarter of
    them, and another address is still served while they stall."""
    with serving(lite0, "--max-receiving", "8") as url:
        host, port = url.removeprefix("http://").split(":")
        stalled = [half_open(url) for _ in range(8)]  # all from 127.0.0.1: 2 read, 6 refused from the head
        try:
            time.sleep(0.5)
            assert httpx.get(f"{url}/health", timeout=10).json()["receiving"] == 2
            refused = post_json(url, {"image": b64(by_name("coffee").read())})
            assert refused.status_code == 503 and "for this client" in refused.json()["message"]
            other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=60)
            with other:
                answer = other.post(f"{url}/classify", json={"image": b64(by_name("coffee").read())})
            assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] == "espresso"
        finally:
            for sock in stalled:
                sock.close()


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


# --- at the machine's limit: refusals from the head, lanes, workers, cheap bookkeeping ----------------------

PIPELINE_ATOL = 1e-5  # lanes infer with one thread each, in-process with the default threads: summation order only


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    return sock


def post_head(size: int, content_type: str = "image/png") -> bytes:
    return (f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer from a raw socket: status, headers (lower-case), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(body) < size:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("http", HTTP_PARSERS)
def test_a_refusal_is_answered_from_the_head_and_the_connection_stays_usable(lite0, http):
    """The 503 comes before the body is sent; the rest of the refused body is drained and the same
    connection then gets a right answer."""
    photo = by_name("coffee").read()
    with serving(lite0, "--max-concurrency", "1", "--max-queue", "0", "--max-receiving", "1", "--http", http) as url:
        stalled = half_open(url)  # holds the only receiving place
        time.sleep(0.5)
        sock = connect(url)
        try:
            sock.sendall(post_head(len(photo)) + photo[:1000])  # the head and a little of the body
            status, headers, body = read_answer(sock)  # answered although the body is not complete
            assert status == 503 and headers["retry-after"] == "1"
            assert json.loads(body)["error"] == "overloaded" and headers["x-request-id"]
            stalled.close()
            time.sleep(0.5)
            sock.sendall(photo[1000:])  # the rest of the refused request, then the next one
            sock.sendall(post_head(len(photo)) + photo)
            status, _, body = read_answer(sock)
            assert status == 200 and json.loads(body)["predictions"][0]["label"] == "espresso"
        finally:
            sock.close()
            stalled.close()
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["refused"] == {"503 overloaded": 1} and health["in_flight"] == 0


@pytest.mark.parametrize("http", HTTP_PARSERS)
def test_a_refused_client_that_stops_mid_body_is_closed(lite0, http):
    """After a 503 from the head, the rest of the body and the next head are due within the head
    deadline: a client that stops sending does not keep its connection for ever."""
    with serving(lite0, "--max-concurrency", "1", "--max-queue", "0", "--max-receiving", "1", "--header-timeout", "1",
                 "--http", http) as url:
        stalled = half_open(url)
        time.sleep(0.5)
        sock = connect(url)
        try:
            sock.sendall(post_head(100_000) + b"\x89PNG")
            status, _, _ = read_answer(sock)
            assert status == 503
            sock.settimeout(30)
            assert sock.recv(4096) == b""  # closed by the server, the body never finished
        finally:
            sock.close()
            stalled.close()
        time.sleep(0.5)
        assert_still_serves(url)


def test_a_burst_larger_than_the_queue_gets_503s_with_retry_after_and_only_right_answers(lite0, lite0_classifier):
    photo = by_name("chelsea").read()
    expected = lite0_classifier.predict(photo).predictions
    with serving(lite0, "--max-concurrency", "1", "--max-queue", "1") as url:  # 2 places for 16 requests at once
        sockets = [connect(url) for _ in range(16)]
        try:
            for sock in sockets:
                sock.sendall(post_head(len(photo)) + photo)
            answers = [read_answer(sock) for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()
        statuses = [status for status, _, _ in answers]
        assert set(statuses) == {200, 503}, statuses
        for status, headers, body in answers:
            payload = json.loads(body)
            if status == 503:
                assert headers["retry-after"] == "1" and payload["error"] == "overloaded"
                assert "server at capacity" in payload["message"]
            else:  # every accepted request is answered, and right
                assert [p["class_id"] for p in payload["predictions"]] == [p.class_id for p in expected]
                assert np.allclose([p["probability"] for p in payload["predictions"]], [p.probability for p in expected],
                                   atol=PIPELINE_ATOL)
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["refused"] == {"503 overloaded": statuses.count(503)}  # every refusal counted
        assert_still_serves(url)  # alive, and it answers the next request


def test_requests_whose_client_left_are_dropped_not_classified(lite0):
    photo = by_name("chelsea").read()
    with serving(lite0, "--max-concurrency", "1", "--max-queue", "8") as url:
        first = connect(url)
        first.sendall(post_head(len(photo)) + photo)  # takes the only lane
        leaving = [connect(url) for _ in range(6)]
        for sock in leaving:
            sock.sendall(post_head(len(photo)) + photo)
        time.sleep(0.05)
        for sock in leaving:  # gone while their requests wait for the lane
            sock.close()
        assert read_answer(first)[0] == 200
        first.close()
        health = httpx.get(f"{url}/health", timeout=10).json()
        for _ in range(100):
            if health["in_flight"] == 0:
                break
            time.sleep(0.1)
            health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["in_flight"] == 0 and health["abandoned"] >= 1, health  # their places were freed
        assert_still_serves(url)


def test_concurrent_requests_in_lanes_answer_exactly_as_in_process(server, lite0_classifier):
    from concurrent.futures import ThreadPoolExecutor

    from lambda_onnx.photos import available

    photos = available()
    expected = {p.name: lite0_classifier.predict(p.read()).predictions for p in photos}
    health = httpx.get(f"{server}/health", timeout=10).json()
    assert health["lanes"] >= 1 and health["threads_per_lane"] >= 1

    def ask(photo):
        return photo, httpx.post(f"{server}/classify", content=photo.read(), timeout=120,
                                 headers={"content-type": "application/octet-stream"})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, photos * 2))
    for photo, response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert [p["class_id"] for p in body["predictions"]] == [p.class_id for p in expected[photo.name]], photo.name
        assert np.allclose([p["probability"] for p in body["predictions"]],
                           [p.probability for p in expected[photo.name]], atol=PIPELINE_ATOL), photo.name
        assert set(body["metrics"]) == {"json_parse_ms", "decode_ms", "preprocess_ms", "inference_ms", "postprocess_ms",
                                        "handler_ms", "request_bytes", "cold_start", "init_ms", "peak_rss_mb", "memory_mb",
                                        "memory_utilisation_pct"}


def test_workers_listen_on_sockets_of_their_own_and_share_the_connections(lite0):
    with serving(lite0, "--workers", "2") as url:
        clients = [httpx.Client(timeout=30) for _ in range(16)]  # 16 connections: all on one worker has odds of 1 in 32768
        try:
            pids = {client.get(f"{url}/health").json()["pid"] for client in clients}
        finally:
            for client in clients:
                client.close()
        assert len(pids) == 2
        assert_still_serves(url)
        port = url.rsplit(":", 1)[1]
        taken = run_module("local", "serve", "--model", str(lite0), "--runtime", "onnxruntime", "--workers", "2",
                           "--port", port, timeout=120)  # no second reuse-port group joins this one
        assert taken.returncode == 1 and "cannot listen" in taken.stderr


def _health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=30).json()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0  # a zombie has stopped too


def test_lanes_are_processes_behind_one_queue_and_stop_with_the_server(lite0):
    with serving(lite0) as url:
        health = _health(url)
        lanes = health["lane_pids"]
        assert health["workers"] == 1 and len(lanes) == health["lanes"] >= 1 and health["pid"] not in lanes
        assert all(int(Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[1]) == health["pid"] for pid in lanes)
    deadline = time.monotonic() + 20
    while not all(_gone(pid) for pid in lanes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in lanes), "lane processes outlived the server"


def _small_jpeg(name: str) -> bytes:
    """A photo small enough that a whole request fits in a lane's socket buffer while the lane is stopped."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(by_name(name).path).convert("RGB").resize((96, 96)).save(out, "JPEG")
    return out.getvalue()


def _one_left_in_a_stopped_lane(url: str, photo: bytes) -> tuple[int, list]:
    """Stop one lane, send 3 requests: the other lane answers two, the stopped one holds the third."""
    stopped = _health(url)["lane_pids"][1]
    os.kill(stopped, signal.SIGSTOP)
    pool = ThreadPoolExecutor(3)
    sent = [pool.submit(httpx.post, f"{url}/classify", content=photo, headers={"content-type": "image/jpeg"}, timeout=60)
            for _ in range(3)]
    pool.shutdown(wait=False)
    deadline = time.monotonic() + 60
    while sum(f.done() for f in sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    health = _health(url)
    assert (health["in_flight"], health["waiting"]) == (1, 0), health  # the third is in the stopped lane
    return stopped, sent


def _restarted(url: str, restarts: int) -> dict:
    """/health once the lanes have been started again ``restarts`` times (a start loads the model)."""
    deadline = time.monotonic() + 120
    while (health := _health(url))["lane_restarts"] < restarts and time.monotonic() < deadline:
        time.sleep(0.1)
    assert health["lane_restarts"] == restarts, health
    return health


def _answers(sent: list) -> list[tuple[int, dict]]:
    return sorted(((f.result().status_code, f.result().json()) for f in sent), key=lambda answer: answer[0])


def test_a_lane_that_dies_or_hangs_costs_only_its_request_and_is_started_again(lite0):
    photo = _small_jpeg("coffee")
    with serving(lite0, "--max-concurrency", "2", "--lane-timeout", "8") as url:
        first = _health(url)["lane_pids"]
        os.kill(first[0], signal.SIGKILL)  # dies idle: a request it is given goes back to the queue
        answers = [httpx.post(f"{url}/classify", content=photo, headers={"content-type": "image/jpeg"}, timeout=60)
                   for _ in range(4)]
        assert [a.status_code for a in answers] == [200] * 4
        stopped, sent = _one_left_in_a_stopped_lane(url, photo)
        os.kill(stopped, signal.SIGKILL)  # dies holding a request
        answered = _answers(sent)
        assert [status for status, _ in answered] == [200, 200, 500]
        assert answered[2][1]["error"] == "lane_failed" and "SIGKILL" in answered[2][1]["message"], answered[2][1]
        health = _restarted(url, 2)
        assert health["lane_failures"] == 1 and not set(health["lane_pids"]) & {*first, stopped}
        hung, sent = _one_left_in_a_stopped_lane(url, photo)  # stopped and never killed: hung
        answered = _answers(sent)
        assert [status for status, _ in answered] == [200, 200, 500]
        assert "no answer within 8 s" in answered[2][1]["message"], answered[2][1]
        assert hung not in _restarted(url, 3)["lane_pids"] and _gone(hung)
        assert_still_serves(url)


def test_the_cpu_split_for_a_server_and_for_one_request_at_a_time():
    from lambda_onnx.resources import ServerSplit, default_threads, server_split

    assert server_split(2.0) == ServerSplit(workers=1, lanes=2, threads=1)  # one front, a lane per CPU, one thread each
    assert server_split(1.7) == ServerSplit(workers=1, lanes=2, threads=1)  # rounded as default_threads rounds
    assert server_split(0.5) == ServerSplit(workers=1, lanes=1, threads=1)
    assert server_split(4.0, workers=2) == ServerSplit(workers=2, lanes=2, threads=1)  # the CPUs shared by the fronts
    assert server_split(2.0, workers=1) == ServerSplit(workers=1, lanes=2, threads=1)
    assert server_split(2.0, workers=4) == ServerSplit(workers=4, lanes=1, threads=1)
    assert server_split(8.0, lanes=2) == ServerSplit(workers=1, lanes=2, threads=4)  # given lanes share the CPUs as threads
    assert server_split(2.0, threads=2) == ServerSplit(workers=1, lanes=1, threads=2)  # given threads: as many lanes as fit
    assert server_split(2.0, lanes=3, threads=1) == ServerSplit(workers=1, lanes=3, threads=1)
    assert default_threads(2.0) == 2  # the Lambda handler, one request at a time, keeps every CPU


def test_the_queue_is_shared_by_the_workers_unless_given_per_worker():
    from local.serve.config import QUEUE, ServeConfig

    assert ServeConfig(workers=1).queue() == QUEUE
    assert ServeConfig(workers=2).queue() == -(-QUEUE // 2)
    assert ServeConfig(workers=3).queue() == -(-QUEUE // 3)  # rounded up: never fewer places than QUEUE in all
    assert ServeConfig(workers=2, max_queue=5).queue() == 5  # --max-queue is per worker


def test_onnx_runtime_threads_spin_only_when_one_request_owns_every_cpu(monkeypatch):
    from lambda_onnx.resources import SPINNING_ENV, intra_op_spinning

    monkeypatch.delenv(SPINNING_ENV, raising=False)
    assert intra_op_spinning(2.0) and not intra_op_spinning(1.7)  # a fractional quota: no spinning
    assert not intra_op_spinning(2.0, server=True)  # local serve: other work needs the core a spinning thread holds
    monkeypatch.setenv(SPINNING_ENV, "0")  # an explicit setting decides
    assert not intra_op_spinning(2.0)
    monkeypatch.setenv(SPINNING_ENV, "1")
    assert intra_op_spinning(1.7) and intra_op_spinning(2.0, server=True)


def test_peak_rss_is_the_process_own_peak_although_read_cheaply():
    """A child of this (large) test process inherits its ru_maxrss across exec; the cheap reading must
    still give the child's own VmHWM, before and after its own peak passes the inherited one."""
    code = ("import json, resource; from lambda_onnx.resources import peak_rss_mb, _vmhwm_kb\n"
            "first = [peak_rss_mb(), peak_rss_mb(), _vmhwm_kb() / 1024]\n"
            "block = b'x' * (512 * 2**20)\n"
            "second = [peak_rss_mb(), _vmhwm_kb() / 1024]\n"
            "print(json.dumps({'first': first, 'second': second,"
            " 'maxrss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    figures = json.loads(out.stdout)
    (a, b, own), (c, own_after) = figures["first"], figures["second"]
    assert abs(a - own) < 2 and abs(b - own) < 2, figures  # not the inherited ru_maxrss
    assert abs(c - own_after) < 2 and own_after > own + 400, figures


def test_refusals_to_one_client_are_paced_by_retry_after_windows():
    from local.serve.refusal import Refusals

    refusals = Refusals(retry_after_s=1)
    assert refusals.hold("10.0.0.1", 100.0) == 0  # the first refusal opens the window and goes out at once
    assert refusals.hold("10.0.0.1", 100.25) == pytest.approx(0.75)  # asked again too soon: held to the window's end
    assert refusals.hold("10.0.0.1", 100.5) == pytest.approx(0.5)  # on another connection too
    assert refusals.hold("10.0.0.2", 100.5) == 0  # another client has its own window
    assert refusals.hold("10.0.0.1", 101.0) == 0  # a client that waited Retry-After is answered at once
    assert Refusals(pace=False).hold("10.0.0.1", 0.0) == Refusals(pace=False).hold("10.0.0.1", 0.1) == 0
    for _ in range(3):
        refusals.count(503, "overloaded")
    assert refusals.total == {"503 overloaded": 3}
    line = refusals.summary(10.0)
    assert line is not None and "3 x 503 overloaded" in line and "2 held" in line and refusals.summary(10.0) is None


def test_uvicorn_access_lines_of_refusals_are_dropped_and_others_kept():
    import logging

    from local.serve.refusal import DropRefusalLines

    def line(status: int) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                                 ("127.0.0.1:5", "POST", "/classify", "1.1", status), None)

    drop = DropRefusalLines()
    assert not drop.filter(line(503)) and drop.filter(line(200)) and drop.filter(line(413))


def test_each_server_gets_its_own_head_deadline():
    # Settings are passed, not read from the process: two servers built in one process keep their own.
    from local.serve.config import ServeConfig
    from local.serve.protocol import protocol_class, uvicorn_options

    short, long = protocol_class("h11", 1.0), protocol_class("h11", 7.0)
    assert (short.header_timeout_s, long.header_timeout_s) == (1.0, 7.0)
    assert uvicorn_options(ServeConfig(header_timeout_s=3.0), "info")["http"].header_timeout_s == 3.0
    assert protocol_class("h11").header_timeout_s == ServeConfig().header_timeout_s
