"""Every item of the corpus (tests/corpus.py) through every entry point, with the real-weights
EfficientNet-Lite0 so that "classified upright" can be checked:

- the local runner (``Classifier.predict``) and its CLI (``python -m local predict``: a one-line
  message per bad file and a non-zero exit; ``python -m local emulator --invoke`` likewise);
- the Lambda handler in-process, with every event kind (HTTP API 2.0 JSON and binary, Function URL,
  REST 1.0, direct invoke);
- the real Lambda emulator end to end (the emulator backend, boto3 through ``endpoint_url``, and
  raw events and payloads on its Invoke API);
- ``local serve`` over HTTP (raw bodies, JSON bodies, whole requests);
- the GUI's input path (``/describe`` and ``/compare`` through gradio_client on a launched app, and
  a real browser that must show a bad upload's error).

A valid image gets a prediction (its class, where it is known); anything else a 4xx whose JSON
names the reason; never a 500, never a crashed process, never a hang (every call is bounded); and
after each bad request a valid one still succeeds. Each entry point is one session- or
module-scoped fixture, so the whole matrix shares one emulator, one server and one app.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from lambda_onnx.errors import BackendError, ClassifierError
from lambda_onnx.photos import by_name
from local.clients.emulator import EmulatorBackend
from local.clients.invoke import LambdaInvokeBackend
from local.wire import lambda_response
from tests.helpers import corpus
from tests.helpers.aws import use_fake_aws
from tests.helpers.events import FakeContext, b64, function_url, http_api, json_body, rest_v1
from tests.helpers.process import run_module

pytestmark = pytest.mark.timeout(300)

IMAGES = corpus.valid_cases() + corpus.invalid_cases()
INVALID = [case for case in IMAGES if case.status != 200]
REQUESTS = corpus.requests()
DIRECT = [r for r in REQUESTS if r.payload is not corpus.NO_PAYLOAD]
PROBE = by_name("coffee")  # the valid request sent after each bad one
TIMEOUT_S = 60
SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif", "image/bmp": ".bmp",
          "image/tiff": ".tiff", "image/heic": ".heic", "image/avif": ".avif"}


def ids(items) -> list[str]:
    return [item.name for item in items]


def check(expected: corpus.Case | corpus.Request, status: int, body: dict[str, Any], where: str = "") -> None:
    """The right answer: a prediction of the known class, or the 4xx with its reason in JSON."""
    assert status == expected.status, f"{where}{expected.name}: {status} {body.get('message', '')}"
    assert status < 500
    if status == 200:
        top = body["predictions"][0]["label"]
        assert not expected.labels or top in expected.labels, f"{where}{expected.name}: top-1 {top!r}"
    else:
        assert body["error"] and expected.reason in body["message"], f"{where}{expected.name}: {body}"


def error_answer(exc: ClassifierError) -> tuple[int, dict[str, Any]]:
    return exc.status, {"error": exc.code, "message": exc.message, "status": exc.status}


# --- the local runner and its CLIs ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", IMAGES, ids=ids(IMAGES))
def test_runner(lite0_classifier, case):
    try:
        result = lite0_classifier.predict(case.data)
    except ClassifierError as exc:
        check(case, *error_answer(exc))
        return
    check(case, 200, {"predictions": [{"label": p.label} for p in result.predictions]})


@pytest.fixture(scope="module")
def case_files(tmp_path_factory) -> dict[str, Path]:
    """Each image case as a file named like a user's, with the extension its content type implies."""
    folder = tmp_path_factory.mktemp("corpus")
    files = {}
    for case in IMAGES:
        files[case.name] = folder / f"{case.name}{case.suffix or SUFFIX.get(case.content_type, '.bin')}"
        files[case.name].write_bytes(case.data)
    return files


@pytest.fixture(scope="module")
def cli_json(lite0, case_files) -> dict[str, Any]:
    """One ``python -m local predict --json`` over every case file."""
    out = run_module("local", "predict", *map(str, case_files.values()), "--model", str(lite0), "--runtime", "onnxruntime",
                     "--json", timeout=300)
    assert out.returncode == 1, out.stderr  # some files are bad: non-zero
    assert out.stderr == "", out.stderr  # --json: the errors are in the JSON, not tracebacks on stderr
    return {Path(record["file"]).name: record for record in json.loads(out.stdout)["results"]}


@pytest.mark.parametrize("case", IMAGES, ids=ids(IMAGES))
@pytest.mark.slow
def test_cli_predict(cli_json, case_files, case):
    record = cli_json[case_files[case.name].name]
    if "error" in record:
        check(case, record["error"]["status"], record["error"])
    else:
        check(case, 200, record["result"])


def test_cli_predict_says_one_line_per_bad_file_and_exits_non_zero(lite0, case_files, tmp_path):
    bad = [case_files[case.name] for case in INVALID] + [tmp_path / "missing.jpg", tmp_path]
    out = run_module("local", "predict", *map(str, bad), str(PROBE.path), "--model", str(lite0), "--runtime", "onnxruntime",
                     timeout=300)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == len(bad) and "Traceback" not in out.stderr, out.stderr
    for path, line in zip(bad, lines):
        assert line.startswith(f"error: {path}: ")
    for case, line in zip(INVALID, lines):
        assert case.reason in line and line.endswith(f"({case.status})"), line
    assert "No such file" in lines[-2] and "directory" in lines[-1].lower()
    assert "espresso" in out.stdout  # the valid file after them was still classified


@pytest.mark.slow
def test_cli_emulator_invoke_says_one_line_per_bad_file(lite0, case_files):
    bad = [case_files[case.name] for case in INVALID]
    out = run_module("local", "emulator", "--model", str(lite0), "--send", "binary", "--invoke", *map(str, bad),
                     str(PROBE.path), timeout=300)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == len(bad) and "Traceback" not in out.stderr, out.stderr
    for case, path, line in zip(INVALID, bad, lines):
        assert line.startswith(f"error: {path}: ") and case.reason in line, line
    assert "espresso" in out.stdout


# --- the Lambda handler in-process, every event kind ------------------------------------------------------

EVENT_KINDS = {
    "http_api_json": lambda case: http_api(json_body(case.data)),
    "http_api_binary": lambda case: http_api(b64(case.data), case.content_type, encoded=True),
    "function_url_json": lambda case: function_url(json_body(case.data)),
    "function_url_binary": lambda case: function_url(b64(case.data), case.content_type, encoded=True),
    "rest_v1_json": lambda case: rest_v1(json_body(case.data)),
    "rest_v1_binary": lambda case: rest_v1(b64(case.data), case.content_type, encoded=True),
    "direct_invoke": lambda case: {"image": b64(case.data)},
}
HTTP_EVENTS = {"http_api": http_api, "function_url": function_url, "rest_v1": rest_v1}


def handle(handler, event: Any) -> tuple[int, dict[str, Any]]:
    response = handler.handler(event, FakeContext())
    assert set(response) == {"statusCode", "headers", "body"}
    body = json.loads(response["body"])
    if response["statusCode"] != 200:
        assert body["status"] == response["statusCode"]
    return response["statusCode"], body


@pytest.mark.parametrize("kind", list(EVENT_KINDS))
@pytest.mark.parametrize("case", IMAGES, ids=ids(IMAGES))
def test_handler_image(lite0_handler, case, kind):
    check(case, *handle(lite0_handler, EVENT_KINDS[kind](case)), where=f"{kind}: ")


@pytest.mark.parametrize("kind", list(HTTP_EVENTS))
@pytest.mark.parametrize("request_", REQUESTS, ids=ids(REQUESTS))
def test_handler_request(lite0_handler, request_, kind):
    body, encoded = request_.event_body()
    check(request_, *handle(lite0_handler, HTTP_EVENTS[kind](body, request_.content_type, encoded=encoded)), where=f"{kind}: ")


@pytest.mark.parametrize("request_", DIRECT, ids=ids(DIRECT))
def test_handler_direct_invoke(lite0_handler, request_):
    check(request_, *handle(lite0_handler, request_.payload))


def test_handler_still_answers_after_the_whole_corpus(lite0_handler):
    status, body = handle(lite0_handler, {"image": b64(PROBE.read())})
    assert status == 200 and body["predictions"][0]["label"] in PROBE.expected


# --- the real Lambda emulator, end to end ----------------------------------------------------------------

@pytest.fixture(scope="module")
def emulator(lite0_emulator):
    """The shared emulator, alive; every test here checks that the same environment survives."""
    if not lite0_emulator.alive():
        lite0_emulator.restart()
    return lite0_emulator


@pytest.fixture(scope="module")
def boto3_invoke(emulator):
    """boto3 ``invoke`` through ``endpoint_url``, with credentials that exist nowhere."""
    with pytest.MonkeyPatch.context() as env:
        use_fake_aws(env)
        backend = LambdaInvokeBackend("function", "us-east-1", endpoint_url=emulator.url, timeout=TIMEOUT_S)
    yield backend
    backend.close()


def probe_emulator(emulator, pid: int) -> None:
    result = EmulatorBackend(emulator, stop_on_close=False).classify(PROBE.read())
    assert result.predictions[0].label in PROBE.expected
    assert emulator.pid == pid and emulator.alive(), "the emulator was restarted or died"


def emulator_event(emulator, event: Any) -> tuple[int, dict[str, Any]]:
    """An event or payload on the Invoke API, answered as (status, body) the way a client sees it."""
    try:
        return lambda_response(emulator.invoke(json.dumps(event).encode(), timeout_s=TIMEOUT_S).payload, "emulator")
    except BackendError as exc:  # refused before the function ran (a payload over Lambda's limit)
        return error_answer(exc)


@pytest.mark.parametrize("client", ["emulator_backend_binary", "boto3_invoke_json"])
@pytest.mark.parametrize("case", IMAGES, ids=ids(IMAGES))
def test_emulator_image(emulator, boto3_invoke, case, client):
    pid = emulator.pid
    backend = EmulatorBackend(emulator, send="binary", stop_on_close=False) if client.startswith("emulator") else boto3_invoke
    try:
        result = backend.classify(case.data)
        check(case, 200, result.body, where=f"{client}: ")
    except ClassifierError as exc:
        check(case, *error_answer(exc), where=f"{client}: ")
        probe_emulator(emulator, pid)


@pytest.mark.parametrize("request_", REQUESTS, ids=ids(REQUESTS))
def test_emulator_request(emulator, request_):
    pid = emulator.pid
    body, encoded = request_.event_body()
    check(request_, *emulator_event(emulator, http_api(body, request_.content_type, encoded=encoded)), where="HTTP API event: ")
    if request_.payload is not corpus.NO_PAYLOAD:
        check(request_, *emulator_event(emulator, request_.payload), where="direct invoke: ")
    probe_emulator(emulator, pid)


def test_emulator_keeps_decoder_noise_inside_the_structured_log_line(emulator):
    """libtiff prints its complaints about a hostile TIFF to stderr from C; in the function (as on
    Lambda) they reach the log only inside the request's JSON line, never as raw lines of their own."""
    case = corpus.by_case_name("truncated_deflate_tiff")
    with pytest.raises(ClassifierError) as info:
        EmulatorBackend(emulator, send="binary", stop_on_close=False).classify(case.data)
    assert info.value.status == 400
    deadline, structured, lines = time.monotonic() + 10, [], []
    while not structured and time.monotonic() < deadline:
        lines = emulator.log_lines("stdout") + emulator.log_lines("stderr")
        structured = [json.loads(line) for line in lines if line.startswith("{") and '"decoder_messages"' in line]
        time.sleep(0.1)
    assert structured and any(m.startswith("TIFFFillStrip") for m in structured[-1]["decoder_messages"]), lines[-20:]
    assert not [line for line in lines if "TIFFFillStrip" in line and not line.startswith("{")]


# --- local serve over HTTP ----------------------------------------------------------------------------------

def serve_answer(url: str, body: bytes, content_type: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"content-type": content_type} if content_type is not None else {}
    response = httpx.post(url + "/classify", content=body, headers=headers, timeout=TIMEOUT_S)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def probe_serve(server) -> None:
    status, body = serve_answer(server.url, PROBE.read(), "image/png")
    assert status == 200 and body["predictions"][0]["label"] in PROBE.expected
    assert server.alive()


@pytest.mark.parametrize("send", ["binary", "json"])
@pytest.mark.parametrize("case", IMAGES, ids=ids(IMAGES))
def test_serve_image(lite0_serve, case, send):
    if send == "binary":
        answer = serve_answer(lite0_serve.url, case.data, case.content_type)
    else:
        answer = serve_answer(lite0_serve.url, json_body(case.data).encode(), "application/json")
    check(case, *answer, where=f"{send}: ")
    if case.status != 200:
        probe_serve(lite0_serve)


@pytest.mark.parametrize("request_", REQUESTS, ids=ids(REQUESTS))
def test_serve_request(lite0_serve, request_):
    check(request_, *serve_answer(lite0_serve.url, request_.body, request_.content_type))
    probe_serve(lite0_serve)


# --- the GUI's input path -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gui(lite0):
    from gui.launch import LaunchOptions, launch
    from local.clients.targets import Targets
    from local.ports import free_ports

    running = launch(Targets(model=lite0), LaunchOptions(port=free_ports(1)[0]), quiet=True)
    yield running
    running.close()


@pytest.fixture(scope="module")
def gui_client(gui):
    return Client(gui.local_url, verbose=False, download_files=False)


def gui_call(client: Client, path: Path, api_name: str) -> Any:
    return client.submit(handle_file(str(path)), api_name=api_name).result(timeout=TIMEOUT_S)


def probe_gui(client: Client) -> None:
    summary = gui_call(client, PROBE.path, "/compare")[-1]
    assert len(summary) == 2 and all(side["predictions"][0]["label"] in PROBE.expected for side in summary.values()), summary


@pytest.mark.parametrize("case", IMAGES, ids=ids(IMAGES))
@pytest.mark.slow
def test_gui_describe_and_compare(gui_client, case_files, case):
    preview, note = gui_call(gui_client, case_files[case.name], "/describe")[:2]
    if case.name == "over_the_byte_limit":  # shown, with the offer to downscale it, and refused by compare
        assert note.startswith("⚠️") and "Downscale" in note and preview
        with pytest.raises(AppError, match="Downscale"):
            gui_call(gui_client, case_files[case.name], "/compare")
        probe_gui(gui_client)
        return
    if case.status == 200:
        assert note.startswith("✅") and preview, note
    else:
        assert note.startswith("❌") and case.reason in note and f"({case.status})" in note, note
    outputs = gui_call(gui_client, case_files[case.name], "/compare")
    summary, facts = outputs[-1], (outputs[1], outputs[3])
    assert len(summary) == 2
    for side in summary.values():
        if case.status == 200:
            check(case, 200, side)
        else:
            check(case, side["status"], {"error": "shown", "message": side["error"]})
    if case.status != 200:
        assert all(f"❌ {case.status}" in text and case.reason in text for text in facts), facts
        probe_gui(gui_client)


@pytest.mark.slow
def test_browser_shows_a_bad_upload_as_an_error(gui, case_files, artifacts):
    playwright = pytest.importorskip("playwright.sync_api")
    from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(gui.local_url)
            upload = page.locator("#image-file input[type=file]")
            upload.set_input_files(str(case_files["truncated_jpeg"]))
            page.get_by_text("could not decode the JPEG").first.wait_for(timeout=TIMEOUT_S * 1000)
            page.locator("#classify").click()
            page.get_by_text("❌ 400").first.wait_for(timeout=TIMEOUT_S * 1000)
            assert page.get_by_text("❌ 400").count() == 2  # both sides say so
            page.screenshot(path=str(artifacts / "gui_bad_upload.png"), full_page=True)
            page.close()
            page = browser.new_page()  # a holding gr.File has no file input until cleared: a new session
            page.goto(gui.local_url)
            page.locator("#image-file input[type=file]").set_input_files(str(case_files["svg"]))
            page.get_by_text("SVG is not supported").first.wait_for(timeout=TIMEOUT_S * 1000)
            page.close()
        finally:
            browser.close()


def test_no_process_died(lite0_serve, emulator, gui):
    """The processes the whole matrix went through are the ones it started with."""
    assert lite0_serve.alive() and emulator.alive()
    assert all(e.alive() for e in gui.context.serverless().target.emulators)
