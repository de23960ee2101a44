"""A hostile visitor against the app launched as it is when shared, through the Gradio API (``gradio_client``)
and raw HTTP, offline: bound to 0.0.0.0 (not loopback, so the viewer role) with a viewer login and an
operator login, reached over 127.0.0.1; the serverless side is an AWS function on a moto server, whose
recorder shows every AWS call made.

The visitor calls every ``api_name`` with hostile arguments (setup and export, paths outside the model
list, function names, huge counts, zero intervals, a gzip bomb, hundreds of uploads), and the host is
shown unchanged: the model files' hashes, no file written outside temporary folders, no AWS call, no
process left behind, memory bounded, and nothing of the host in what the visitor reads. The operator,
logged in at /operator/, can still do each of these; the same operator suite against loopback without
``--share`` shows that nothing a local user relies on was lost.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psutil
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from gui.access import VIEWER_LIMITS
from gui.launch import LaunchOptions, launch
from lambda_onnx.canary import canary_path
from lambda_onnx.photos import by_name
from lambda_onnx.sidecar import sidecar_path
from local.clients.targets import Targets
from tests.helpers.process import ROOT

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

VIEWER = ("ann", "viewer-secret-1")
OPERATOR = ("olga", "operator-secret-2")
READING = {"/compare", "/describe", "/downscale", "/cold_start", "/monitor", "/monitor_stop", "/cost", "/cost_from_compare",
           "/server_throughput", "/scenario", "/scenario_compare", "/scenario_breakeven", "/switch_model"}
OPERATORS_ONLY = {"/setup_lite0", "/setup_random", "/tune", "/aws_trace"}
# What the host's answers may not name: its folders (the repository, the temporary ones), file sizes, accounts.
HOST_DETAILS = re.compile("|".join([re.escape(str(ROOT)), r"/tmp/", r"\b\d[\d,]* bytes\b", r"\b(?!123456789012)\d{12}\b",
                                    r"arn:aws:(?!lambda:us-east-1:123456789012:function:victim)"]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file under ``root`` but the virtualenv, git and caches: what a run may not touch."""
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "node_modules"}
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            path = Path(dirpath) / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return found


def copy_model(lite0: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for path in (lite0, sidecar_path(lite0), canary_path(lite0)):
        shutil.copy(path, folder / path.name)
    return folder / lite0.name


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto standing in for AWS in this process (where the app runs), recording every request it gets."""
    from moto import mock_aws
    from moto.moto_api import recorder

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    location = tmp_path_factory.mktemp("moto") / "recording"
    previous = recorder._location  # type: ignore[attr-defined]
    recorder._location = str(location)  # type: ignore[attr-defined]
    mock = mock_aws()
    mock.start()
    recorder.reset_recording()
    recorder.start_recording()

    def calls() -> list[str]:
        return [line for line in location.read_text().splitlines() if line.strip()] if location.exists() else []

    try:
        yield calls
    finally:
        recorder.stop_recording()
        mock.stop()
        recorder._location = previous  # type: ignore[attr-defined]
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def models(lite0, tmp_path_factory):
    """The app's model list (one folder), and a model outside it."""
    base = tmp_path_factory.mktemp("shared")
    return copy_model(lite0, base / "models"), copy_model(lite0, base / "elsewhere")


@pytest.fixture(scope="module")
def saved_figures(models, tmp_path_factory):
    """Scenario figures saved for the model (so no scenario measures), where the app reads them."""
    from local.measure.scenario.calibrate import save_cache
    from tests.test_scenario import fake_calibration

    model, _ = models
    path = tmp_path_factory.mktemp("figures") / "calibration.json"
    save_cache(fake_calibration(str(model), 3008), path)
    return path


@pytest.fixture(scope="module")
def shared(models, moto, saved_figures):
    """The app as when shared: 0.0.0.0, a viewer login and an operator login; serverless = an AWS function (moto)."""
    import gui.views.scenario as scenario_view

    model, _ = models
    original = scenario_view.DEFAULT_CACHE
    scenario_view.DEFAULT_CACHE = saved_figures  # the operator's saved figures; a viewer reads a copy
    port = free_port()
    running = launch(Targets(model=model, lambda_function="victim-function", region="us-east-1"),
                     LaunchOptions(host="0.0.0.0", port=port, auth=VIEWER[0], auth_password=VIEWER[1],
                                   operator=OPERATOR[0], operator_password=OPERATOR[1]), quiet=True)
    running.test_url = f"http://127.0.0.1:{port}/"  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.close()
        scenario_view.DEFAULT_CACHE = original


@pytest.fixture(scope="module")
def loopback(models, saved_figures):
    """The app on loopback without --share: the operator's, no login, the emulator as the serverless side."""
    import gui.views.scenario as scenario_view

    model, _ = models
    original = scenario_view.DEFAULT_CACHE
    scenario_view.DEFAULT_CACHE = saved_figures
    running = launch(Targets(model=model), LaunchOptions(port=free_port()), quiet=True)
    try:
        yield running
    finally:
        running.close()
        scenario_view.DEFAULT_CACHE = original


@pytest.fixture(scope="module")
def viewer(shared):
    return Client(shared.test_url, auth=VIEWER, verbose=False, download_files=False)


def endpoints(client: Client) -> set[str]:
    return set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


def refused(client: Client, *args, api_name: str) -> str:
    """The one-line reason a call is refused with (and that it names nothing of the host)."""
    with pytest.raises(Exception) as caught:
        client.predict(*args, api_name=api_name)
    reason = str(caught.value)
    assert "\n" not in reason.strip() and len(reason) < 400, reason
    echoed = reason
    for arg in args:  # Gradio's own checks echo the value sent: that is the visitor's, not the host's
        echoed = echoed.replace(str(arg), "<sent>")
    assert not HOST_DETAILS.search(echoed), f"{api_name}: {reason}"
    return reason


@contextmanager
def login(base: str, user: str, password: str) -> Iterator[httpx.Client]:
    """An HTTP session logged in as ``user`` (Gradio's cookie)."""
    with httpx.Client(base_url=base, timeout=60) as session:
        assert session.post("login", data={"username": user, "password": password}).status_code == 200
        yield session


# --- roles --------------------------------------------------------------------------------------------------


def test_the_viewer_has_only_the_events_that_read(shared, viewer):
    assert endpoints(viewer) == READING
    # Not hidden: not there. The queue refuses an event the viewer's app never registered.
    with login(shared.test_url, *VIEWER) as session:
        info = session.get("gradio_api/info").json()
        assert not OPERATORS_ONLY & {name for name in info["named_endpoints"]}
        for name in OPERATORS_ONLY:
            try:
                answer = session.post(f"gradio_api/call{name}", json={"data": []})
                assert answer.status_code >= 400, (name, answer.status_code)
            except httpx.TransportError:  # Gradio drops the request: no such event
                pass
        page = session.get("config").json()
        assert "Role: viewer" in str(page)
    # The viewer's login does not open the operator's app, and no login opens either.
    with pytest.raises(ValueError, match="login"):
        Client(shared.operator_url.replace("localhost", "127.0.0.1"), auth=VIEWER, verbose=False)
    assert httpx.get(shared.test_url + "gradio_api/info", timeout=30).status_code == 401


def test_the_operator_has_every_event_behind_its_own_login(shared):
    operator = Client(shared.operator_url.replace("localhost", "127.0.0.1"), auth=OPERATOR, verbose=False,
                      download_files=False)
    assert endpoints(operator) == READING | OPERATORS_ONLY
    with login(shared.operator_url.replace("localhost", "127.0.0.1"), *OPERATOR) as session:
        assert "Role: operator" in str(session.get("config").json())


def test_on_loopback_without_share_the_app_is_the_operators_as_before(loopback):
    local = Client(loopback.local_url, verbose=False, download_files=False)
    assert endpoints(local) == READING | OPERATORS_ONLY and loopback.role == "operator"
    summary = local.predict(handle_file(str(by_name("coffee").path)), api_name="/compare")[-1]
    assert {v["kind"] for v in summary.values()} == {"server", "serverless"}  # the emulator answers too
    assert "cold start" in local.predict(api_name="/cold_start")


# --- the hostile visitor ------------------------------------------------------------------------------------


def gzip_bomb(path: Path, uncompressed: int = 512 * 2**20) -> Path:
    """``uncompressed`` bytes of one endless line, in a few hundred kB of gzip."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = b"0" * 2**20
    with path.open("wb") as out:
        for _ in range(uncompressed // len(chunk)):
            out.write(compressor.compress(chunk))
        out.write(compressor.flush())
    return path


def test_a_hostile_viewer_changes_nothing_spends_nothing_and_stays_bounded(shared, viewer, models, moto, tmp_path):
    model, elsewhere = models
    before_models, before_elsewhere, before_tree = digests(model.parent), digests(elsewhere.parent), snapshot(ROOT)
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    summary = viewer.predict(handle_file(str(by_name("coffee").path)), api_name="/compare")[-1]  # warm up, then measure
    rss_before = me.memory_info().rss
    assert moto() == []

    # Compare: the server answers; the serverless side (AWS) is the operator's, said without a call.
    server = next(v for v in summary.values() if v.get("kind") == "server")
    assert server["predictions"][0]["label"] == "espresso"
    aws = next(v for name, v in summary.items() if "AWS" in name)
    assert aws["status"] == 403 and "operator" in aws["error"]
    # A path on the host instead of an upload: Gradio takes only its own uploads (its refusal echoes the path sent).
    for path in ("/etc/passwd", str(model)):
        with pytest.raises((AppError, ValueError)):
            viewer.predict({"path": path, "meta": {"_type": "gradio.FileData"}}, api_name="/compare")

    # The model switch: only the app's list, by name; nothing else is even looked at.
    for hostile in ("/etc/passwd", "../models", str(elsewhere), f"../{elsewhere.parent.name}/{elsewhere.name}",
                    "victim-function", "arn:aws:lambda:us-east-1:123456789012:function:victim", model.name + "/../../x"):
        refused(viewer, hostile, api_name="/switch_model")

    # Monitor: zero and huge values, other backends and photos, and AWS.
    good = dict(which=["server"], interval=0.2, mode="request count", count=2, duration=10, concurrency=1, photo="coffee")
    for change in ({"interval": 0}, {"interval": -1}, {"count": 10**9}, {"mode": "duration", "duration": 10**9},
                   {"concurrency": 1000}, {"photo": "/etc/passwd"}, {"which": ["evil"]}, {"which": ["serverless"]},
                   {"count": float("nan")}):
        refused(viewer, *{**good, **change}.values(), api_name="/monitor")
    assert viewer.predict(*good.values(), api_name="/monitor")[0].startswith("Finished: 2 requests, 0 errors")

    # Scenarios: huge rates, periods and fleets, measuring now, odd shapes, instance types and platforms, a gzip bomb.
    base = ["diurnal", None, 1.0, "1d", 3008, "fp32", 600, None, 0, None, None, False, "never", "c7i.large", "auto",
            "x86_64", 0.0000166667, 0.2, 1.0, True, 0.01]
    hostile_scenarios = {2: [1e9, float("inf")], 3: ["100000d", "0s", "../etc"], 4: [10**9, 0], 6: [0, 10**9],
                         7: [10**12], 8: [10**12], 9: [10**9], 10: [10**6, 0], 12: ["always", "../x"], 0: ["../../etc/passwd"],
                         13: ["../../etc/passwd", "p5.48xlarge", None], 14: ["lambda", "../x", None]}
    for index, values in hostile_scenarios.items():
        for value in values:
            refused(viewer, *[value if i == index else v for i, v in enumerate(base)], api_name="/scenario")
    bomb = gzip_bomb(tmp_path / "arrivals.csv.gz")
    assert bomb.stat().st_size < 2 * 2**20
    reason = refused(viewer, "my arrivals (file)", handle_file(str(bomb)), *base[2:], api_name="/scenario")
    assert "uncompressed" in reason or "lines" in reason
    lines = tmp_path / "many.csv"
    lines.write_text("1\n" * (VIEWER_LIMITS.arrivals_lines + 1))
    assert "lines" in refused(viewer, "my arrivals (file)", handle_file(str(lines)), *base[2:], api_name="/scenario")
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(os.urandom(100_000))[:5_000])  # cut off mid-stream
    refused(viewer, "my arrivals (file)", handle_file(str(broken)), *base[2:], api_name="/scenario")
    result = viewer.predict(*base, api_name="/scenario")
    assert "Verdict" in result[0]
    refused(viewer, 3008, "fp32", "always", *base[15:], api_name="/scenario_compare")

    # The break-even simulates every option at every rate: a viewer's sweep is bounded in rates and in requests.
    sweep = [2.0, "1:10:3", None, 3008, "fp32", "never", "c7i.large", *base[15:]]
    hostile_sweeps = {0: [1e9, float("inf"), VIEWER_LIMITS.scenario_rate * 4],
                      1: ["1e-9:1e9:100000", "1:10:26", "1:1e9:25", "1/0:1:3", "1e999:1e1000:3", "1:10:" + "9" * 5000, "x"],
                      2: [0, float("nan"), 1e9, 100, -1], 3: [10**9], 5: ["always", "../x"], 6: ["../../etc/passwd", "x"]}
    for index, values in hostile_sweeps.items():
        for value in values:
            refused(viewer, *[value if i == index else v for i, v in enumerate(sweep)], api_name="/scenario_breakeven")
    assert f"at most {VIEWER_LIMITS.breakeven_points} rates" in refused(viewer, sweep[0], "1:10:26", *sweep[2:],
                                                                      api_name="/scenario_breakeven")
    assert "requests" in refused(viewer, sweep[0], "1:1e9:25", *sweep[2:], api_name="/scenario_breakeven")
    assert "burst" in refused(viewer, *sweep[:2], 100, *sweep[3:], api_name="/scenario_breakeven")
    swept = viewer.predict(*sweep[:2], 4.0, *sweep[3:], api_name="/scenario_breakeven")
    assert "Break-even" in swept[0] and "At 2 req/s (burstiness 4" in swept[0]

    # Cost is arithmetic on the visitor's numbers; throughput and a cold start of AWS reach nothing.
    viewer.predict(2048, "arm64", 40.0, 900.0, 0.02, True, 0.0000133334, 0.2, 1.0, 0.1, 30.0, 0.6, api_name="/cost")
    assert "AWS" in viewer.predict(api_name="/cold_start") or "emulator" in viewer.predict(api_name="/cold_start")
    assert viewer.predict(api_name="/server_throughput") > 0
    assert viewer.predict(api_name="/monitor_stop") == "nothing is running"
    # What only the operator may do is not there at all.
    for name in OPERATORS_ONLY:
        with pytest.raises(ValueError, match="api_name"):
            viewer.predict(api_name=name)

    # The host is as it was.
    assert digests(model.parent) == before_models and digests(elsewhere.parent) == before_elsewhere
    after_tree = snapshot(ROOT)
    changed = {p for p in set(before_tree) | set(after_tree) if before_tree.get(p) != after_tree.get(p)}
    assert not changed, sorted(changed)[:10]
    assert moto() == [], "a viewer's request reached AWS"
    assert {p.pid for p in me.children(recursive=True)} <= children_before  # the serverless side is AWS: nothing to start
    assert me.memory_info().rss - rss_before < 400 * 2**20, "memory grew with the hostile requests"


def test_uploads_are_bounded_per_visitor(shared, tmp_path):
    cache = Path(os.environ.get("GRADIO_TEMP_DIR", "/tmp/gradio"))
    with login(shared.test_url, *VIEWER) as session:
        for body in ({"files": ("big.bin", b"0" * (VIEWER_LIMITS.upload_bytes + 2**20))},  # refused from its length
                     [("files", (f"{i}.txt", b"x")) for i in range(100)]):  # cut off past the parts allowed
            try:
                answer = session.post("gradio_api/upload", files=body)
                assert answer.status_code == 413 and "at most" in answer.text
            except httpx.TransportError:  # answered before the body was all sent: the server closed the connection
                pass
        statuses = [session.post("gradio_api/upload", files={"files": (f"{i}.txt", b"hello")}).status_code
                    for i in range(VIEWER_LIMITS.uploads_per_minute + 40)]
        assert statuses.count(429) >= 40 and set(statuses) <= {200, 429}
    stored = sum(1 for p in cache.rglob("*.txt")) if cache.exists() else 0
    assert stored < VIEWER_LIMITS.uploads_per_minute + 200  # bounded, whatever else the session stored


def test_failed_logins_are_slowed_down(shared):
    import time

    times = []
    for _ in range(3):
        started = time.monotonic()
        answer = httpx.post(shared.test_url + "login", data={"username": VIEWER[0], "password": "guess"}, timeout=60)
        times.append(time.monotonic() - started)
        assert answer.status_code == 400
    assert times[2] > times[0] and times[2] >= 1.5  # 0.5 s, 1 s, 2 s: each guess waits longer
    assert httpx.post(shared.test_url + "login", data={"username": VIEWER[0], "password": VIEWER[1]},
                      timeout=60).status_code == 200


# --- the operator can still do each of these -------------------------------------------------------------------


@pytest.fixture(scope="module", params=["shared-operator", "loopback"])
def operator(request, shared, loopback):
    if request.param == "shared-operator":
        return Client(shared.operator_url.replace("localhost", "127.0.0.1"), auth=OPERATOR, verbose=False,
                      download_files=False)
    return Client(loopback.local_url, verbose=False, download_files=False)


def test_the_operator_switches_to_a_model_outside_the_list_and_back(operator, models):
    model, elsewhere = models
    for path in (elsewhere, model):
        header = operator.predict(str(path), api_name="/switch_model")[0]
        assert "efficientnet_lite0" in header
    with pytest.raises(Exception, match="passwd"):  # any path may be tried; a file that is no model is not served
        operator.predict("/etc/passwd", api_name="/switch_model")


def test_the_operator_runs_what_a_viewer_may_not(operator, tmp_path):
    # A monitor longer and faster than a viewer's, a scenario past a viewer's rate, a tune (bounded too).
    count = VIEWER_LIMITS.monitor_requests + 5
    status = operator.predict(["server"], 0.01, "request count", count, 60, 1, "coffee", api_name="/monitor")[0]
    assert status.startswith(f"Finished: {count} requests")
    rate = VIEWER_LIMITS.scenario_rate * 4
    result = operator.predict("steady", None, rate, "1h", 3008, "fp32", 600, None, 0, None, None, False, "never",
                              "c7a.large", "fargate", "x86_64", 0.0000166667, 0.2, 1.0, True, 0.01, api_name="/scenario")
    assert "Verdict" in result[0] and "What to deploy" in result[5] and result[6]
    swept = operator.predict(rate, "1:10:3", 4.0, 3008, "fp32", "never", "c7a.large", "x86_64", 0.0000166667, 0.2, 1.0,
                             True, 0.01, api_name="/scenario_breakeven")
    assert f"At {rate:g} req/s (steady Poisson)" in swept[0]
    with pytest.raises(Exception, match="warm requests"):
        operator.predict("512", 10**9, None, "p90", ["fp32"], "", "x86_64", 0.0000166667, 0.2, 1.0, True, 0.01,
                         api_name="/tune")


def test_the_operator_reaches_aws(shared, moto):
    operator = Client(shared.operator_url.replace("localhost", "127.0.0.1"), auth=OPERATOR, verbose=False,
                      download_files=False)
    try:
        summary = operator.predict(handle_file(str(by_name("coffee").path)), api_name="/compare")[-1]
        serverless = next(v for name, v in summary.items() if "victim-function" in name)
        assert "error" in serverless  # moto has no such function
    except Exception as exc:  # the operator sees AWS's own answer, whatever it is
        assert "victim-function" in str(exc) or "Error" in type(exc).__name__
    assert any("victim-function" in call for call in moto()), "the operator's compare did not reach (moto's) AWS"


def test_nothing_is_left_behind_when_the_app_closes(models):
    model, _ = models
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    running = launch(Targets(model=model), LaunchOptions(host="0.0.0.0", port=free_port(), auth="ann",
                                                         auth_password="pw", no_auth=False), quiet=True)
    port = urlparse(running.local_url).port
    client = Client(f"http://127.0.0.1:{port}/", auth=("ann", "pw"), verbose=False, download_files=False)
    client.predict(handle_file(str(by_name("coffee").path)), api_name="/compare")
    client.predict(handle_file(str(by_name("coffee").path)), api_name="/downscale")
    scratch = running.context.scratch.root
    assert scratch.is_dir()
    running.close()
    assert not scratch.exists()  # every file a run wrote, gone
    psutil.wait_procs([p for p in psutil.Process().children(recursive=True) if p.pid not in before], timeout=30)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


def test_sharing_without_a_login_prints_a_generated_one_once(models, capsys):
    model, _ = models
    running = launch(Targets(model=model), LaunchOptions(port=free_port(), share=True), quiet=True)  # offline: no link
    try:
        printed = capsys.readouterr().out
        (line,) = [line for line in printed.splitlines() if "Viewer login" in line]
        user, password = line.rsplit(": ", 1)[1].split(" / ")
        assert running.role == "viewer" and user == "viewer" and len(password) >= 16
        client = Client(running.local_url, auth=(user, password), verbose=False, download_files=False)
        assert endpoints(client) == READING
    finally:
        running.close()
    from tests.helpers.process import run_module

    out = run_module("gui", "--host", "0.0.0.0", "--model", str(model), timeout=60)
    assert out.returncode == 2 and "--no-auth" in out.stderr
