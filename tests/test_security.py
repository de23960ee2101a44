"""Security properties, on the real processes:

- every server (``local serve``, the emulator, the GUI) listens on 127.0.0.1 unless told otherwise;
- no cross-origin access unless origins are named: ``local serve``, the handler's own responses,
  and the template's HTTP API and Function URL;
- image bytes, base64 payloads, whole events, credentials and signed headers never reach a log:
  the logs of full request cycles (the handler under the emulator, ``local serve``, the GUI and a
  SigV4-signing client) are captured and searched;
- size limits are enforced before any decoding, at every edge, and bombs before any pixel is
  allocated; the GUI caps uploads.

(The template's role — logs and tracing only — is tests/test_template.py; a shared GUI needing a
login is tests/test_gui.py.)
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import subprocess
import sys
from urllib.parse import urlparse

import httpx
import psutil
import pytest
from cfnlint.decode import decode
from gradio_client import Client, handle_file

from lambda_onnx.limits import MAX_REQUEST_BYTES
from lambda_onnx.photos import by_name
from local.clients.emulator import EmulatorBackend
from local.clients.http import HttpBackend
from local.lambda_env.rie import Emulator, session_members
from local.ports import free_ports
from local.serve.process import ServeProcess
from local.wire import http_api_event
from tests.helpers import corpus
from tests.helpers.events import FakeContext, http_api
from tests.helpers.process import ROOT, wait_until_answers

pytestmark = pytest.mark.timeout(300)

PNG = by_name("chelsea").read()
ENCODED = base64.b64encode(PNG).decode()
ACCESS_KEY, SECRET, TOKEN = "AKIDLOGCHECK0000", "log-check-secret-3f9a7c1e", "log-check-session-token-8d2b44aa"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
            "AWS_DEFAULT_REGION": "us-east-1"}
MARKER = "ZZMARKERZZ"  # a string only the requests contain


def forbidden() -> list[str]:
    """What must never be in a log: credentials, signatures and any piece of a request's payload."""
    return [SECRET, TOKEN, "AWS4-HMAC-SHA256", "Signature=", MARKER, ENCODED[:32], ENCODED[len(ENCODED) // 2:][:32],
            ENCODED[-40:-8], "isBase64Encoded", "requestContext"]


def assert_clean(logs: str, where: str) -> None:
    assert logs.strip(), f"{where}: nothing was captured, so nothing was checked"
    leaked = [item for item in forbidden() if item in logs]
    assert not leaked, f"{where} logged {leaked}"
    assert max(len(line) for line in logs.splitlines()) < 2000, f"{where}: a log line long enough to hold a payload"


# --- servers listen on loopback --------------------------------------------------------------------------------

def listening(pids: list[int]) -> set[tuple[str, int]]:
    addresses = set()
    for pid in pids:
        for connection in psutil.Process(pid).net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                addresses.add((connection.laddr.ip, connection.laddr.port))
    return addresses


def test_serve_listens_on_loopback_only(lite0_serve):
    addresses = listening([lite0_serve.pid])
    assert addresses and {ip for ip, _ in addresses} == {"127.0.0.1"}, addresses


def test_emulator_listens_on_loopback_only(lite0_emulator):
    if not lite0_emulator.alive():
        lite0_emulator.restart()
    EmulatorBackend(lite0_emulator, stop_on_close=False).classify(PNG)  # the runtime API port opens on the first invoke
    addresses = listening(session_members(lite0_emulator.pid))
    assert {port for _, port in addresses} >= {lite0_emulator.port, lite0_emulator.runtime_api_port}
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}, addresses


def test_gui_listens_on_loopback_only_by_default(lite0):
    from gui.__main__ import get_args_parser as gui_args
    from gui.launch import LaunchOptions, launch
    from local.__main__ import get_args_parser as local_args
    from local.clients.targets import Targets

    assert gui_args().parse_args([]).host == LaunchOptions().host == "127.0.0.1"
    assert local_args().parse_args(["serve"]).host == "127.0.0.1"
    running = launch(Targets(model=lite0), LaunchOptions(port=free_ports(1)[0]), quiet=True)
    try:
        port = urlparse(running.local_url).port
        mine = {(ip, p) for ip, p in listening([os.getpid()]) if p == port}
        assert mine == {("127.0.0.1", port)}
    finally:
        running.close()


# --- cross-origin access --------------------------------------------------------------------------------------

def test_no_cross_origin_headers_by_default(lite0_serve, lite0_handler):
    response = httpx.post(lite0_serve.url + "/classify", content=PNG, timeout=60,
                          headers={"content-type": "image/png", "origin": "https://evil.example"})
    assert response.status_code == 200 and not any(h.startswith("access-control-") for h in response.headers)
    # The reference project answered "*" from the handler; here CORS is the API's configuration only.
    for event in (http_api(json.dumps({"image": ENCODED}), headers={"origin": "https://evil.example"}), {"image": "@@"}):
        assert lite0_handler.handler(event, FakeContext())["headers"] == {"content-type": "application/json"}


def test_template_cors_is_off_unless_origins_are_named():
    template, problems = decode(str(ROOT / "template.yaml"))
    assert not problems
    resources = template["Resources"]
    api_cors = resources["HttpApi"]["Properties"]["CorsConfiguration"]["Fn::If"]
    url_cors = resources["FunctionUrl"]["Properties"]["Cors"]["Fn::If"]
    for condition, allowed, otherwise in (api_cors, url_cors):
        assert condition == "HasCors" and otherwise == {"Ref": "AWS::NoValue"}
        assert allowed["AllowOrigins"] == {"Ref": "CorsOrigins"}
    assert template["Parameters"]["CorsOrigins"]["Default"] == ""
    assert '"*"' not in json.dumps(template["Parameters"]) and "'*'" not in (ROOT / "template.yaml").read_text()


# --- nothing secret or private in the logs -------------------------------------------------------------------

def cycle_events() -> list[dict]:
    """A full request cycle: JSON and binary HTTP API events, a direct invoke, and refused requests,
    with the headers an IAM-authorised Function URL would pass on."""
    signed = {"authorization": f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/lambda/aws4_request, "
                               "SignedHeaders=host;x-amz-date, Signature=" + "ab" * 32,
              "x-amz-security-token": TOKEN}
    json_event, binary_event = http_api_event(PNG, "json"), http_api_event(PNG, "binary")
    for event in (json_event, binary_event):
        event["headers"].update(signed)
    bad = http_api(json.dumps({"image": MARKER + "@@@"}), headers=signed)
    return [json_event, binary_event, {"image": ENCODED}, bad, http_api(MARKER, "text/plain"), {"image": ENCODED, MARKER: 1},
            http_api(base64.b64encode(MARKER.encode() * 100).decode(), "image/jpeg", encoded=True)]


def test_handler_logs_under_the_emulator_hold_no_payload_event_or_credential(lite0):
    # Lambda gives the function credentials in its environment: they must stay there.
    with Emulator(lite0, name="log-check", env=FAKE_AWS) as emulator:
        statuses = [json.loads(emulator.invoke(event).payload)["statusCode"] for event in cycle_events()]
        logs = "\n".join(emulator.log_lines("stdout") + emulator.log_lines("stderr"))
    assert statuses == [200, 200, 200, 400, 415, 200, 400], statuses
    assert '"message":"classified"' in logs and '"message":"request refused"' in logs  # the logs were there
    assert_clean(logs, "the handler under the emulator")


@pytest.mark.slow
def test_serve_and_a_sigv4_client_log_no_payload_signature_or_credential(lite0, monkeypatch, caplog):
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.INFO)  # every logger of this process, at the level a user would run
    with ServeProcess(lite0, "--runtime", "onnxruntime", "--log-level", "info", env=FAKE_AWS) as server:
        for send in ("json", "binary"):
            client = HttpBackend(server.url + "/classify", sigv4_region="us-east-1", send=send, timeout=60, kind="server")
            assert client.classify(PNG).status == 200
            client.close()
        refused = httpx.post(server.url + "/classify", content=json.dumps({"image": MARKER}), timeout=60,
                             headers={"content-type": "application/json", "authorization": "Bearer " + SECRET})
        assert refused.status_code == 400
        assert httpx.post(server.url + "/classify", content=MARKER, headers={"content-type": "text/plain"}, timeout=60).status_code == 415
        output = server.output()
    assert output.count('"POST /classify HTTP/1.1" 200') == 2  # uvicorn's access log was on
    assert_clean(output, "local serve")
    assert "HTTP Request: POST" in caplog.text  # the client's own logging was captured
    assert_clean(caplog.text, "HttpBackend with SigV4")


@pytest.mark.slow
def test_gui_logs_hold_no_payload_or_credential(lite0, tmp_path):
    port = free_ports(1)[0]
    log = tmp_path / "gui.log"
    image = tmp_path / "photo.png"
    image.write_bytes(PNG)
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gui", "--model", str(lite0), "--port", str(port)], cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **FAKE_AWS, "PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(url, process, 120, output=log.read_text)
        client = Client(url, verbose=False, download_files=False)
        summary = client.submit(handle_file(str(image)), api_name="/compare").result(timeout=120)[-1]
        assert all("predictions" in side for side in summary.values()), summary
        bad = tmp_path / "bad.png"
        bad.write_bytes(MARKER.encode() * 50)
        client.submit(handle_file(str(bad)), api_name="/compare").result(timeout=120)
        family = psutil.Process(process.pid).children(recursive=True)  # the emulator and its runtime
    finally:
        process.terminate()
        process.wait(30)
    assert len(family) >= 2 and not [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    output = log.read_text(errors="replace")
    assert "Running on local URL" in output
    assert_clean(output, "the GUI")


# --- size limits before decoding, pixels before allocation ------------------------------------------------------

def test_serve_refuses_a_declared_oversized_body_before_reading_it(lite0_serve):
    host, port = urlparse(lite0_serve.url).hostname, urlparse(lite0_serve.url).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 7000000\r\n\r\n\xff\xd8\xff")  # 3 bytes of 7 MB: the rest never comes
        answer = b""
        while b"payload_too_large" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"7,000,000 bytes" in answer


def test_serve_refuses_a_streamed_oversized_body_while_reading_it(lite0_serve):
    def chunks():
        yield b"\xff\xd8\xff"
        for _ in range(8):
            yield b"\0" * (1 << 20)

    response = httpx.post(lite0_serve.url + "/classify", content=chunks(), headers={"content-type": "image/jpeg"}, timeout=60)
    assert response.status_code == 413 and "exceeds the limit" in response.json()["message"]  # the reader's, not the decoder's


@pytest.mark.parametrize("where", ["serve", "handler_binary", "handler_direct"])
def test_the_size_is_checked_before_any_decoding(lite0_serve, lite0_handler, where):
    """A body over the limit that would also fail to decode answers 413, not 400: the size came first."""
    junk = "!" * (MAX_REQUEST_BYTES + 10)  # neither JSON nor base64
    if where == "serve":
        response = httpx.post(lite0_serve.url + "/classify", content=junk, headers={"content-type": "application/json"},
                              timeout=60)
        status, message = response.status_code, response.json()["message"]
    else:
        # As base64, the body stands for three quarters of its length in bytes.
        event = http_api(junk * 2, "image/jpeg", encoded=True) if where == "handler_binary" else {"image": junk}
        body = json.loads(lite0_handler.handler(event, FakeContext())["body"])
        status, message = body["status"], body["message"]
    assert status == 413 and "limit" in message


def test_bombs_are_refused_before_any_pixel_is_allocated():
    """Every bomb of the corpus, decoded in a fresh process: refused, and the peak memory barely moves
    (the PNG bomb alone would take 112 MB as 1-bit pixels, the others gigabytes)."""
    code = (
        "import json, sys; from tests.helpers import corpus; "
        "from lambda_onnx.preprocess import decode; from lambda_onnx.resources import peak_rss_mb; "
        "from lambda_onnx.errors import PayloadTooLargeError; "
        "bombs = [c for c in corpus.invalid_cases() if 'megapixels' in c.reason]; before = peak_rss_mb(); refused = []\n"
        "for case in bombs:\n"
        "    try: decode(case.data)\n"
        "    except PayloadTooLargeError: refused.append(case.name)\n"
        "print(json.dumps({'refused': refused, 'bombs': len(bombs), 'grown_mb': peak_rss_mb() - before}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["refused"]) == result["bombs"] >= 5 and result["grown_mb"] < 30, result


def test_gui_caps_uploads(lite0, tmp_path):
    from gui.launch import LaunchOptions, launch
    from local.clients.targets import Targets

    running = launch(Targets(model=lite0), LaunchOptions(port=free_ports(1)[0], max_upload_mb=2), quiet=True)
    try:
        upload = running.local_url + "gradio_api/upload"
        small = httpx.post(upload, files={"files": ("a.png", PNG, "image/png")}, timeout=30)
        big = httpx.post(upload, files={"files": ("b.png", corpus.oversized_png(), "image/png")}, timeout=30)
        assert small.status_code == 200
        assert big.status_code == 413 and "maximum allowed size" in big.text
    finally:
        running.close()
