"""The real AWS Lambda emulator (RIE) running the handler with an exported model: cold and warm
invokes through the emulator backend and through boto3, forced cold starts, a pool of environments,
the error contract, numeric agreement with the in-process runner, crashes and clean stops.

Speed figures are printed (run with -s), never asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest

from lambda_onnx.errors import BackendError, BackendTimeoutError, BackendUnavailableError
from lambda_onnx.photos import by_name
from lambda_onnx.resources import LAMBDA_MB_PER_VCPU, default_threads
from local.clients.emulator import EmulatorBackend
from local.clients.inprocess import InProcessBackend
from local.clients.invoke import LambdaInvokeBackend
from local.lambda_env.pool import EmulatorPool
from local.lambda_env.rie import Emulator, session_members
from local.wire import http_api_event, json_request, lambda_response
from tests.helpers import corpus
from tests.helpers.process import ROOT, run_module

# The emulator runs the same ONNX Runtime build on the same bytes; only the thread count differs
# (one thread at 3008 MB against one per CPU in-process), which can reorder float sums.
TRANSPORT_PROB_ATOL = 1e-5
CHELSEA = by_name("chelsea")


@pytest.fixture
def emulator(lite0_emulator):
    """The shared emulator, alive and cold: each test starts from a fresh environment."""
    return lite0_emulator.restart()


def test_cold_then_warm_through_the_emulator_backend(emulator):
    backend = EmulatorBackend(emulator, stop_on_close=False)
    results = [backend.classify(CHELSEA.read()) for _ in range(3)]
    assert [r.cold_start for r in results] == [True, False, False]
    assert all(r.status == 200 and r.kind == "serverless" for r in results)
    assert all(r.predictions[0].label in CHELSEA.expected for r in results)
    init = [r.metrics["init_ms"] for r in results]
    assert init[0] > 0 and len(set(init)) == 1
    # The REPORT line's real facts; the emulator's own init phase only on the cold invoke.
    assert "emulator_init_ms" in results[0].extra and "emulator_init_ms" not in results[1].extra
    assert all(r.extra["memory_size_mb"] == 3008 and r.extra["duration_ms"] > 0 for r in results)
    # the handler's thread count follows the memory size: 3008 MB is 1.7 vCPU (capped at this machine's CPUs)
    expected = default_threads(min(3008 / LAMBDA_MB_PER_VCPU, len(os.sched_getaffinity(0))))
    assert results[0].metrics["memory_mb"] == 3008 and results[0].model["threads"] == expected
    assert results[0].request_bytes > results[0].extra["http_body_bytes"] > len(CHELSEA.read())
    assert results[0].body["trace_id"].startswith("Root=1-")
    print(f"\nemulator: cold round trip {results[0].round_trip_ms:.0f} ms (handler init {init[0]:.0f} ms, "
          f"emulator init phase {results[0].extra['emulator_init_ms']:.0f} ms); warm round trips "
          f"{[round(r.round_trip_ms, 1) for r in results[1:]]} ms, handler {[r.server_ms for r in results[1:]]} ms")


def test_boto3_invoke_reaches_the_emulator_through_endpoint_url(emulator, fake_aws):
    backend = LambdaInvokeBackend("function", region="us-east-1", endpoint_url=emulator.url, timeout=60)
    try:
        results = [backend.classify(CHELSEA.read()) for _ in range(2)]
    finally:
        backend.close()
    assert [r.cold_start for r in results] == [True, False]
    assert all(r.status == 200 and r.predictions[0].label in CHELSEA.expected for r in results)
    assert results[0].request_bytes == len(json_request(CHELSEA.read())) and results[0].response_bytes > 0
    # The emulator serves one function, named "function"; any other name is an error with its status.
    unknown = LambdaInvokeBackend("no-such-function", region="us-east-1", endpoint_url=emulator.url)
    with pytest.raises(BackendError) as raised:
        unknown.classify(CHELSEA.read())
    unknown.close()
    assert raised.value.status == 404


def test_restart_forces_a_cold_start_in_a_new_environment(emulator):
    backend = EmulatorBackend(emulator, stop_on_close=False)
    assert backend.classify(CHELSEA.read()).cold_start is True
    assert backend.classify(CHELSEA.read()).cold_start is False
    old = emulator.pid
    old_members = session_members(old)
    assert len(old_members) == 2  # the RIE and the Python runtime it started
    emulator.restart()
    assert emulator.pid != old and session_members(old) == []
    assert backend.classify(CHELSEA.read()).cold_start is True


def test_a_pool_of_two_answers_two_concurrent_requests_with_two_cold_starts(lite0):
    with EmulatorPool(lite0, size=2, memory_mb=3008) as pool:
        backend = EmulatorBackend(pool, stop_on_close=False)
        barrier, results, errors = threading.Barrier(2), [], []

        def one() -> None:
            barrier.wait()
            try:
                results.append(backend.classify(CHELSEA.read()))
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert sorted(r.extra["environment"] for r in results) == ["env-0", "env-1"]
        assert [r.cold_start for r in results] == [True, True]
        # Sequential requests then reuse one warm environment, as on Lambda.
        following = [backend.classify(CHELSEA.read()) for _ in range(2)]
        assert [r.cold_start for r in following] == [False, False]
        assert len({r.extra["environment"] for r in following}) == 1
        pids = [e.pid for e in pool.emulators]
    assert all(session_members(pid) == [] for pid in pids)


ERRORS = [  # (case, content type sent, status, code): raw bodies, each in an HTTP API event
    ("empty", b"", 400, "invalid_image"),
    ("random_bytes", os.urandom(4096), 400, "invalid_image"),
    ("decompression_bomb", corpus.png_bomb(), 413, "payload_too_large"),
    ("svg", corpus.svg(), 415, "unsupported_media_type"),
    ("pdf", corpus.pdf(), 415, "unsupported_media_type"),
]


def test_error_contract_through_the_emulator_and_the_next_request_works(emulator):
    backend = EmulatorBackend(emulator, send="binary", stop_on_close=False)
    assert backend.classify(CHELSEA.read()).cold_start is True
    pid = emulator.pid
    for case, data, status, code in ERRORS:
        with pytest.raises(BackendError) as raised:
            backend.classify(data)
        assert (raised.value.status, raised.value.code) == (status, code), (case, raised.value.message)
        assert raised.value.message
    for body, status in (('{"image": "@@@"}', 400), ('{"nothing": 1}', 400), ("{not json", 400)):
        event = http_api_event(b"", "json")
        event["body"] = body
        invocation = emulator.invoke(event)
        response = invocation.json()
        assert response["statusCode"] == status and "message" in response["body"]
    event = http_api_event(b"x", "json")
    event["headers"]["content-type"] = "text/plain"
    assert emulator.invoke(event).json()["statusCode"] == 415
    after = backend.classify(CHELSEA.read())
    assert after.status == 200 and after.cold_start is False and emulator.pid == pid  # same environment, no crash


def test_same_probabilities_in_process_and_through_the_emulator(lite0_classifier, lite0_emulator):
    local = InProcessBackend(lite0_classifier)
    remote = EmulatorBackend(lite0_emulator, stop_on_close=False)
    for name in ("chelsea", "coffee", "china"):
        image = by_name(name).read()
        here, there = local.classify(image), remote.classify(image)
        assert [p.class_id for p in here.predictions] == [p.class_id for p in there.predictions], name
        np.testing.assert_allclose([p.probability for p in there.predictions], [p.probability for p in here.predictions],
                                   rtol=0, atol=TRANSPORT_PROB_ATOL, err_msg=name)
        assert there.predictions[0].label in by_name(name).expected
        print(f"\n{name}: in-process {here.round_trip_ms:.1f} ms, emulator round trip {there.round_trip_ms:.1f} ms "
              f"(handler {there.server_ms:.1f} ms); top-1 {there.predictions[0].label} {there.predictions[0].probability:.4f}")


def test_a_killed_emulator_is_unavailable_until_restarted(lite0):
    emulator = Emulator(lite0, name="doomed").start()
    backend = EmulatorBackend(emulator)
    try:
        # Kill it mid-invoke: once the runtime process exists the cold init is under way.
        outcome: list[BaseException] = []
        worker = threading.Thread(target=lambda: _capture(outcome, backend.classify, CHELSEA.read()))
        worker.start()
        deadline = time.monotonic() + 10
        while len(session_members(emulator.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(emulator.pid, signal.SIGKILL)
        worker.join(30)
        assert outcome and isinstance(outcome[0], BackendUnavailableError), outcome
        with pytest.raises(BackendUnavailableError, match="restart"):
            backend.classify(CHELSEA.read())
        assert not emulator.alive()
        emulator.restart()
        result = backend.classify(CHELSEA.read())
        assert result.status == 200 and result.cold_start is True
    finally:
        backend.close()
    assert not emulator.alive()


def _capture(outcome: list[BaseException], call, *args) -> None:
    try:
        call(*args)
        outcome.append(AssertionError("the invoke succeeded although the emulator was killed"))
    except BaseException as exc:
        outcome.append(exc)


def test_a_runtime_crash_is_a_function_error_and_the_next_invoke_starts_cold(emulator):
    backend = EmulatorBackend(emulator, stop_on_close=False)
    assert backend.classify(CHELSEA.read()).cold_start is True
    runtime = next(pid for pid in session_members(emulator.pid) if pid != emulator.pid)
    os.kill(runtime, signal.SIGKILL)
    with pytest.raises(BackendError) as raised:
        backend.classify(CHELSEA.read())
    assert (raised.value.status, raised.value.code) == (502, "function_error") and "Runtime" in raised.value.message
    assert backend.classify(CHELSEA.read()).cold_start is True  # Lambda starts a new runtime


def test_a_model_that_cannot_load_answers_500_through_the_emulator(tmp_path):
    with Emulator(tmp_path / "missing.onnx", name="no-model") as emulator:
        with pytest.raises(BackendError) as raised:
            EmulatorBackend(emulator, stop_on_close=False).classify(CHELSEA.read())
    assert (raised.value.status, raised.value.code) == (500, "model_load_error")
    assert "model not found" in raised.value.message


def test_an_emulator_that_cannot_start_says_why(lite0, tmp_path):
    fake = tmp_path / "aws-lambda-rie"
    fake.write_text("#!/bin/sh\necho 'cannot bind: permission denied' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BackendUnavailableError) as raised:
        Emulator(lite0, rie=fake).start()
    assert "exited with code 3" in raised.value.message and "permission denied" in raised.value.message


def test_only_loopback_addresses():
    with pytest.raises(ValueError, match="loopback"):
        Emulator(None, host="0.0.0.0")


def test_cli_invokes_a_photo_and_exits(lite0):
    out = run_module("local", "emulator", "--model", str(lite0), "--invoke", str(CHELSEA.path), str(by_name("coffee").path),
                     timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    firsts = [lines[i + 1] for i, line in enumerate(lines) if line.startswith(str(CHELSEA.path.parent))]
    assert any(label in firsts[0] for label in CHELSEA.expected) and "espresso" in firsts[1]
    assert "COLD start" in out.stdout and "warm" in out.stdout


@pytest.mark.slow
def test_cli_serves_one_url_that_takes_concurrent_requests_until_interrupted(lite0, fake_aws):
    """The printed URL is the front, not an emulator: the RIE crashes on overlapping invokes, and
    a user's curl, load tool or threaded boto3 client will overlap them. It is started with SIGINT
    ignored, as a shell without job control starts a background command, and SIGINT still stops it."""
    process = subprocess.Popen([sys.executable, "-m", "local", "emulator", "--model", str(lite0), "--pool", "2"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        urls, arns = [], []
        for line in process.stdout:
            if "invoke URL" in line:
                urls.append(line.split("invoke URL", 1)[1].split()[0])
            if line.startswith("  function "):
                arns.append(line.split(" = ", 1)[1].split()[0])
            if "Ctrl-C" in line:
                break
        assert len(urls) == 1 and urls[0].startswith("http://127.0.0.1:")
        emulators = [p for p in psutil.Process(process.pid).children(recursive=True) if "aws-lambda-rie" in p.name()]
        assert len(emulators) == 2

        def post(_: int) -> tuple[int, str, bytes]:
            request = urllib.request.Request(urls[0], data=json_request(CHELSEA.read()), method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers["x-emulator-environment"], response.read()

        with ThreadPoolExecutor(6) as clients:
            answers = list(clients.map(post, range(12)))
        assert all(status == 200 and lambda_response(body, "front")[1]["predictions"][0]["label"] in CHELSEA.expected
                   for status, _, body in answers)
        assert {environment for _, environment, _ in answers} <= {"env-0", "env-1"}
        assert all(p.is_running() for p in emulators)  # no overlapping invoke reached an emulator
        # boto3 reaches the same URL with the function's printed ARN, or with the RIE's own name "function"
        base = urls[0].split("/2015-03-31")[0]
        assert arns == ["arn:aws:lambda:us-east-1:012345678912:function:resnet-serverless"]
        for name in (arns[0], "function"):
            invoke = LambdaInvokeBackend(name, region="us-east-1", endpoint_url=base, timeout=60)
            assert invoke.classify(CHELSEA.read()).predictions[0].label in CHELSEA.expected
            invoke.close()
        # refusals with a status and a reason, and the next request still works
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(urllib.request.Request(base + "/2015-03-31/functions/other/invocations", data=b"{}"), timeout=10)
        assert missing.value.code == 404 and missing.value.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
        with pytest.raises(urllib.error.HTTPError) as oversized:
            urllib.request.urlopen(urllib.request.Request(urls[0], data=b"x" * (6 * 1024 * 1024 + 1)), timeout=30)
        assert oversized.value.code == 413 and "6,291,457 bytes" in json.loads(oversized.value.read())["message"]
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:  # urllib cannot send this
            raw.sendall(b"POST /2015-03-31/functions/function/invocations HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
            assert raw.recv(4096).startswith(b"HTTP/1.1 411 ")
        with pytest.raises(urllib.error.HTTPError) as get:
            urllib.request.urlopen(urls[0], timeout=10)
        assert get.value.code == 405 and "POST" in json.loads(get.value.read())["message"]
        assert post(0)[0] == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert "stopping" in process.stdout.read()
    finally:
        if process.poll() is None:
            stop_cli(process)


@pytest.mark.slow
def test_cli_brings_back_an_environment_that_died(lite0):
    process = subprocess.Popen([sys.executable, "-m", "local", "emulator", "--model", str(lite0)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = next(line.split("invoke URL", 1)[1].split()[0] for line in process.stdout if "invoke URL" in line)
        (rie,) = [p for p in psutil.Process(process.pid).children(recursive=True) if "aws-lambda-rie" in p.name()]
        rie.kill()
        assert "exited; starting it again" in process.stderr.readline()
        deadline = time.monotonic() + 30
        while True:  # back within a moment, and the next request is a cold start
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data=json_request(CHELSEA.read())), timeout=60) as r:
                    _, body = lambda_response(r.read(), "front")
                break
            except urllib.error.HTTPError as exc:
                assert exc.code == 502 and time.monotonic() < deadline
                time.sleep(0.2)
        assert body["metrics"]["cold_start"] is True and process.poll() is None
    finally:
        stop_cli(process)


def stop_cli(process: subprocess.Popen) -> None:
    """Stop a `python -m local emulator` as a user would (SIGTERM: it stops its emulators on the way
    out); if it does not, kill it and every emulator session it started, so nothing outlives the test."""
    try:
        sessions = {p.pid for p in psutil.Process(process.pid).children(recursive=True) if "aws-lambda-rie" in p.name()}
    except psutil.NoSuchProcess:
        sessions = set()
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for sid in sessions:  # each RIE leads a session of its own, with the function's runtime in it
        for pid in session_members(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


SLEEPY = """import time


def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"statusCode": 200, "headers": {}, "body": "{}"}
"""


def test_timeouts_end_in_a_typed_error_and_a_usable_environment(tmp_path):
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    with Emulator(None, handler="sleepy.handler", pythonpath=[tmp_path], cwd=tmp_path, timeout_s=1, name="sleepy") as emulator:
        # The function's own timeout: the emulator stops it and says so.
        with pytest.raises(BackendTimeoutError, match="timed out"):
            lambda_response(emulator.invoke({"sleep": 3}).payload, "sleepy")
        assert emulator.invoke({"sleep": 0}).json()["statusCode"] == 200
        # The client's timeout: the function still runs in there, so the environment is replaced
        # rather than risking an overlapping invoke (which crashes the emulator).
        pid = emulator.pid
        with pytest.raises(BackendTimeoutError, match="restarted"):
            emulator.invoke({"sleep": 0.9}, timeout_s=0.3)
        assert emulator.pid != pid and session_members(pid) == []
        invocation = emulator.invoke({"sleep": 0})
        assert invocation.json()["statusCode"] == 200 and invocation.initialised
