"""Faults of the deployment, not of the request, each reported clearly and recovered from:

- the emulator killed mid-run (under a monitor run, under a stream of boto3 invokes, behind the
  GUI): a typed :class:`BackendUnavailableError` that says so, and the next request after a
  restart (or the GUI's cold-start button) works;
- a model missing, truncated or not matching its sidecar's sha256: a one-line error at start-up
  from every entry point, and from the Lambda handler a clear 500 body and one log line at init;
- connections that close without an answer and service errors: typed, and never retried when
  the request may have run; every network call in the code has a timeout;
- stalled and idle HTTP clients do not keep others from ``local serve``.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from gradio_client import Client, handle_file
from test_serve import assert_still_serves, half_open

from lambda_onnx.errors import BackendError, BackendUnavailableError, ModelLoadError
from lambda_onnx.photos import by_name
from lambda_onnx.sidecar import sidecar_path
from local.clients.emulator import EmulatorBackend
from local.clients.http import HttpBackend
from local.clients.invoke import LambdaInvokeBackend
from local.lambda_env.rie import Emulator
from local.measure.monitor import NO_ANSWER_PAUSE_S, start_monitor
from local.ports import free_ports
from local.serve.process import ServeProcess
from tests.helpers.process import ROOT, run_module

pytestmark = pytest.mark.timeout(300)

CHELSEA, COFFEE = by_name("chelsea"), by_name("coffee")


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# --- the emulator killed mid-run ----------------------------------------------------------------------------

def test_emulator_killed_during_a_monitor_run_is_reported_then_restarted(lite0):
    emulator = Emulator(lite0, name="victim").start()
    backend = EmulatorBackend(emulator, stop_on_close=False)
    try:
        run = start_monitor([backend], COFFEE.read(), interval_s=0, concurrency=2)  # until stopped
        wait_for(lambda: sum(s.ok for s in run.samples) >= 4, what="answers before the kill")
        os.kill(emulator.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: sum(not s.ok for s in run.samples) >= 4, what="errors after the kill")
        run.stop.set()
        assert run.finished.wait(30)
        elapsed = time.monotonic() - killed_at
        errors = [s for s in run.samples if not s.ok]
        assert {(s.status, s.error.split(":", 1)[0]) for s in errors} == {(0, "backend_unavailable")}
        assert all("restart" in s.error for s in errors)
        assert any("exited with code -9" in s.error for s in errors), errors[-1].error
        # A worker that gets no answer pauses before asking again: errors do not pile up.
        assert len(errors) <= 2 * (elapsed / NO_ANSWER_PAUSE_S + 2)
        assert all(s.ok for s in run.samples[: run.samples.index(errors[0])])
        emulator.restart()
        after = backend.classify(COFFEE.read())
        assert after.cold_start is True and after.predictions[0].label in COFFEE.expected
    finally:
        emulator.stop()


def test_emulator_killed_under_a_stream_of_boto3_invokes(lite0, fake_aws):
    emulator = Emulator(lite0, name="boto3-victim").start()
    backend = LambdaInvokeBackend("function", "us-east-1", endpoint_url=emulator.url, timeout=30, connect_timeout=2,
                                  connect_retries=1)
    outcomes: list[Any] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            try:
                outcomes.append(backend.classify(CHELSEA.read()))
            except Exception as exc:  # anything but a typed error fails the test below
                outcomes.append(exc)
                time.sleep(0.2)

    worker = threading.Thread(target=stream, daemon=True)
    try:
        worker.start()
        wait_for(lambda: len(outcomes) >= 3, what="answers before the kill")
        os.kill(emulator.pid, signal.SIGKILL)
        wait_for(lambda: sum(isinstance(o, Exception) for o in outcomes) >= 2, what="errors after the kill")
        stop.set()
        worker.join(60)
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert all(type(e) is BackendUnavailableError for e in errors), [repr(e) for e in errors]
        assert all(e.status == 0 and e.code == "backend_unavailable" for e in errors)
        assert any("cannot connect" in e.message for e in errors)
        emulator.restart()  # the same address: the same client works again
        assert backend.classify(CHELSEA.read()).predictions[0].label in CHELSEA.expected
    finally:
        stop.set()
        backend.close()
        emulator.stop()


@pytest.mark.slow
def test_gui_cold_start_button_brings_back_a_killed_emulator(lite0):
    from gui.launch import LaunchOptions, launch
    from local.clients.targets import Targets

    running = launch(Targets(model=lite0), LaunchOptions(port=free_ports(1)[0]), quiet=True)
    try:
        client = Client(running.local_url, verbose=False, download_files=False)

        def compare() -> tuple[dict[str, Any], str]:
            outputs = client.submit(handle_file(str(COFFEE.path)), api_name="/compare").result(timeout=60)
            return outputs[-1], outputs[3]

        summary, _ = compare()
        assert all("predictions" in side for side in summary.values())
        (emulator,) = running.context.serverless().target.emulators
        os.kill(emulator.pid, signal.SIGKILL)
        summary, serverless_facts = compare()
        server, serverless = ({**v, "name": k} for k, v in sorted(summary.items(), key=lambda kv: "emulator" in kv[0]))
        assert server["predictions"][0]["label"] in COFFEE.expected  # the server side is unaffected
        assert serverless["status"] == 0 and "restart" in serverless["error"]
        assert "❌ no answer" in serverless_facts and "exited with code -9" in serverless_facts
        assert "cold start" in client.submit(api_name="/cold_start").result(timeout=60)
        summary, _ = compare()
        side = next(v for k, v in summary.items() if "emulator" in k)
        assert side["metrics"]["cold_start"] is True and side["predictions"][0]["label"] in COFFEE.expected
    finally:
        running.close()


# --- a damaged model, at start-up, everywhere ----------------------------------------------------------------

DAMAGES = {"truncated": "truncated", "sha256_mismatch": "sha256", "no_sidecar": "sidecar not found"}


def damaged(lite0: Path, folder: Path, damage: str) -> Path:
    """A copy of the model (and its sidecar), damaged as named."""
    model = folder / lite0.name
    shutil.copy(lite0, model)
    shutil.copy(sidecar_path(lite0), sidecar_path(model))
    data = bytearray(model.read_bytes())
    if damage == "truncated":
        model.write_bytes(data[: len(data) // 2])
    elif damage == "sha256_mismatch":  # same size, one byte different: only the hash can tell
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    else:
        sidecar_path(model).unlink()
    return model


def one_line_error(out, reason: str) -> None:
    """Refused before anything started: nothing on stdout, one line on stderr, exit 1."""
    assert out.returncode == 1 and out.stdout == "", (out.stdout, out.stderr)
    assert out.stderr.startswith("error: ") and out.stderr.strip().count("\n") == 0, out.stderr
    assert reason in out.stderr and "Traceback" not in out.stderr + out.stdout


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.slow
def test_damaged_model_is_a_one_line_error_at_start_up_everywhere(lite0, tmp_path, damage):
    model, reason = damaged(lite0, tmp_path, damage), DAMAGES[damage]
    (port,) = free_ports(1)
    # (`local predict` is covered by tests/test_local.py, `local serve` with no model by tests/test_serve.py.)
    one_line_error(run_module("local", "serve", "--model", str(model), "--port", str(port), "--runtime", "onnxruntime",
                              timeout=120), reason)
    one_line_error(run_module("local", "emulator", "--model", str(model), "--invoke", str(COFFEE.path), timeout=120), reason)
    one_line_error(run_module("local", "monitor", "--model", str(model), "--backends", "serverless", "--requests", "1",
                              "--out", str(tmp_path / "monitor"), timeout=120), reason)
    with pytest.raises(BackendUnavailableError, match=reason):  # what `local soak serve` prints
        ServeProcess(model, "--runtime", "onnxruntime").start()


@pytest.mark.slow
def test_damaged_model_stops_the_gui_at_launch(lite0, tmp_path):
    from gui.launch import LaunchOptions, launch
    from local.clients.targets import Targets

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ModelLoadError, match="sha256"):
        launch(Targets(model=damaged(lite0, tmp_path / "a", "sha256_mismatch")), LaunchOptions(port=free_ports(1)[0]), quiet=True)
    truncated = damaged(lite0, tmp_path / "b", "truncated")
    one_line_error(run_module("gui", "--model", str(truncated), "--port", str(free_ports(1)[0]), timeout=120), "truncated")


@pytest.mark.parametrize("damage", ["truncated", "sha256_mismatch"])
def test_damaged_model_under_the_emulator_logs_once_at_init_and_answers_500(lite0, tmp_path, damage):
    model = damaged(lite0, tmp_path, damage)
    with Emulator(model, name="damaged") as emulator:
        backend = EmulatorBackend(emulator, stop_on_close=False)
        for _ in range(2):  # the first request (the cold start) and the next: the same clear answer
            with pytest.raises(BackendError) as raised:
                backend.classify(COFFEE.read())
            assert (raised.value.status, raised.value.code) == (500, "model_load_error")
            assert DAMAGES[damage] in raised.value.message
        pid = emulator.pid
        assert emulator.alive() and emulator.pid == pid  # answered, not crashed
        logs = emulator.log_lines("stdout")
    records = [json.loads(line) for line in logs if line.startswith('{"level"')]
    init = [r for r in records if r["message"] == "model failed to load"]
    assert len(init) == 1 and DAMAGES[damage] in init[0]["reason"] and init[0]["level"] == "ERROR"
    assert not any("Traceback" in line for line in logs)


# --- connections that close, service errors, timeouts ------------------------------------------------------

class Answers(BaseHTTPRequestHandler):
    """``/close``: read the request, close without an answer. The Invoke API of function ``closing``
    likewise; of ``failing``: Lambda's own 500 ServiceException."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.seen.append(self.path)
        if self.path in ("/close", "/2015-03-31/functions/closing/invocations"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = json.dumps({"Type": "Service", "message": "internal failure"}).encode()
        self.send_response(500)
        self.send_header("x-amzn-ErrorType", "ServiceException")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def answers():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    httpd.daemon_threads, httpd.seen = True, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_connection_closed_without_an_answer_is_unavailable_and_not_retried(answers, fake_aws):
    httpd, base = answers
    http = HttpBackend(base + "/close", timeout=5, connect_retries=2)
    with pytest.raises(BackendUnavailableError, match="connection failed"):
        http.classify(COFFEE.read())
    http.close()
    invoke = LambdaInvokeBackend("closing", "us-east-1", endpoint_url=base, timeout=5, connect_retries=2)
    with pytest.raises(BackendUnavailableError, match="before an answer came back"):
        invoke.classify(COFFEE.read())
    invoke.close()
    assert httpd.seen == ["/close", "/2015-03-31/functions/closing/invocations"]  # the request may have run: once


def test_a_lambda_service_error_is_typed_and_not_retried(answers, fake_aws):
    httpd, base = answers
    invoke = LambdaInvokeBackend("failing", "us-east-1", endpoint_url=base, timeout=5)
    with pytest.raises(BackendError) as raised:
        invoke.classify(COFFEE.read())
    invoke.close()
    assert (raised.value.status, raised.value.code) == (500, "ServiceException") and "internal failure" in raised.value.message
    assert len(httpd.seen) == 1


def test_an_invoke_over_the_payload_limit_is_refused_before_sending(answers, fake_aws):
    httpd, base = answers
    invoke = LambdaInvokeBackend("failing", "us-east-1", endpoint_url=base, timeout=5)
    with pytest.raises(BackendError) as raised:
        invoke.classify(b"\xff" * 5_000_000)  # 6.7 MB once base64 and JSON
    invoke.close()
    assert raised.value.status == 413 and "Lambda's limit" in raised.value.message and httpd.seen == []


NETWORK_CALLS = {  # (module, function) -> the keyword that bounds it
    ("httpx", "get"): "timeout", ("httpx", "post"): "timeout", ("httpx", "put"): "timeout", ("httpx", "request"): "timeout",
    ("httpx", "stream"): "timeout", ("httpx", "options"): "timeout", ("httpx", "Client"): "timeout",
    ("httpx", "AsyncClient"): "timeout", ("http.client", "HTTPConnection"): "timeout",
    ("urllib.request", "urlopen"): "timeout", ("socket", "create_connection"): "timeout",
}


def test_every_network_call_in_the_code_has_a_timeout():
    """httpx, http.client, urllib and socket calls pass a timeout; every boto3 client gets a Config
    (connect and read timeouts). A new call without one fails here."""
    missing = []
    for path in [*ROOT.glob("lambda_onnx/*.py"), *ROOT.glob("local/**/*.py"), *ROOT.glob("gui/*.py"), *ROOT.glob("export/*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else None
            keywords = {k.arg for k in node.keywords}
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            for (module, function), keyword in NETWORK_CALLS.items():
                if name == function and owner in (None, module, module.rsplit(".", 1)[-1]):
                    positional_timeout = module == "socket" and len(node.args) >= 2
                    if keyword not in keywords and not positional_timeout:
                        missing.append(f"{where}: {ast.unparse(node)[:80]}")
            if name == "client" and node.args and isinstance(node.args[0], ast.Constant) and "config" not in keywords:
                missing.append(f"{where}: boto3 client without a Config: {ast.unparse(node)[:80]}")
    assert not missing, "\n".join(missing)


# --- stalled and idle clients against local serve ---------------------------------------------------------------

@pytest.mark.slow
def test_stalled_and_idle_clients_do_not_keep_others_from_serve(lite0_serve):
    """More stalled bodies than the server admits to inference (1 running + 16 waiting), and idle
    connections that never send a byte, all from one client address: a complete request from another is
    still answered at once, and the stalling address itself is refused (503) past its share of the read
    slots instead of taking them all."""
    port = int(lite0_serve.url.rsplit(":", 1)[1])
    stalled = [half_open(lite0_serve.url, source="127.0.0.2") for _ in range(20)]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)) for _ in range(50)]
    try:
        time.sleep(0.5)
        assert_still_serves(lite0_serve.url)
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as same:
            refused = same.post(f"{lite0_serve.url}/classify", content=by_name("coffee").read(),
                                headers={"content-type": "image/jpeg"}, timeout=60)
        assert refused.status_code == 503 and refused.json()["error"] == "overloaded", refused.text
    finally:
        for sock in stalled + idle:
            sock.close()


def test_a_duration_bound_monitor_run_with_no_interval_ends(lite0_classifier):
    """Interval 0 made every request "due" at 0, so a duration never ended the run (the GUI allows 0)."""
    from local.clients.inprocess import InProcessBackend
    from local.measure.monitor import run_monitor

    run = start_monitor([InProcessBackend(lite0_classifier)], COFFEE.read(), interval_s=0, duration_s=1.0)
    assert run.finished.wait(60), "the run did not end"
    assert run.samples and all(s.ok for s in run.samples)
    assert run_monitor([InProcessBackend(lite0_classifier)], COFFEE.read(), interval_s=0, requests=2).finished.is_set()


def alive(processes: list[psutil.Process]) -> list[int]:
    out = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                out.append(process.pid)
        except psutil.NoSuchProcess:
            continue
    return out


@pytest.mark.slow
def test_sigterm_stops_the_emulators_a_command_started(lite0, tmp_path):
    """Killed with SIGTERM (kill, docker stop, systemd), a command used to die without its finally
    blocks and atexit handlers, orphaning the emulator it had started (each runs in a session of its own)."""
    process = subprocess.Popen([sys.executable, "-m", "local", "monitor", "--model", str(lite0), "--backends", "serverless",
                                "--interval", "0.5", "--duration", "120", "--out", str(tmp_path)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(psutil.Process(process.pid).children(recursive=True)) >= 2, 60, "the emulator and its runtime")
        family = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0  # stopped as by Ctrl-C: the report is written
        wait_for(lambda: not alive(family), 10, "the emulator to stop")
        assert (tmp_path / "samples.csv").is_file()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
