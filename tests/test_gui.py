"""The Gradio app, launched for real: driven by gradio_client and by a real browser (Chromium)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from gui.launch import LaunchOptions, UsageError, launch, parse_auth
from lambda_onnx.limits import MAX_IMAGE_BYTES
from lambda_onnx.photos import by_name
from lambda_onnx.sidecar import Sidecar, sidecar_path
from local.clients.targets import Targets
from local.measure import cost
from tests.helpers import corpus
from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS
from tests.helpers.process import ROOT, run_module, wait_until_answers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(lite0):
    running = launch(Targets(model=lite0), LaunchOptions(port=free_port()), quiet=True)
    yield running
    running.close()


@pytest.fixture(scope="module")
def client(app):
    return Client(app.local_url, verbose=False, download_files=False)


def compare(client: Client, path) -> dict:
    outputs = client.predict(handle_file(str(path)), api_name="/compare")
    return outputs[-1]


@pytest.mark.slow
def test_compare_returns_both_backends_predictions_and_timings(client):
    photo = by_name("chelsea")
    summary = compare(client, photo.path)
    assert len(summary) == 2
    kinds = {v["kind"]: v for v in summary.values()}
    assert set(kinds) == {"server", "serverless"}
    for side in kinds.values():
        assert side["predictions"][0]["label"] in photo.expected
        m = side["metrics"]
        assert all(m[k] > 0 for k in ("decode_ms", "preprocess_ms", "inference_ms", "handler_ms"))
        assert side["round_trip_ms"] >= m["handler_ms"] and side["request_bytes"] > 0 and side["response_bytes"] > 0
    assert kinds["server"]["model"]["sha256"] == kinds["serverless"]["model"]["sha256"]
    again = {v["kind"]: v for v in compare(client, by_name("coffee").path).values()}
    assert again["serverless"]["metrics"]["cold_start"] is False
    assert all(v["predictions"][0]["label"] == "espresso" for v in again.values())


def test_cost_inputs_come_from_this_sessions_last_compare(client):
    """The Cost tab's "use figures measured in Compare" reads this API session's last compare, as a browser's."""
    summary = compare(client, by_name("coffee").path)
    serverless = next(v for v in summary.values() if v["kind"] == "serverless")
    memory, warm, init, rps = client.predict(12.5, api_name="/cost_from_compare")
    m = serverless["metrics"]
    assert (memory, warm, init, rps) == (m["memory_mb"], m["handler_ms"], m["init_ms"], 12.5)


def test_forced_cold_start(client):
    compare(client, by_name("lion").path)
    assert "cold start" in client.predict(api_name="/cold_start")
    after = {v["kind"]: v for v in compare(client, by_name("lion").path).values()}
    assert after["serverless"]["metrics"]["cold_start"] is True and after["serverless"]["metrics"]["init_ms"] > 0


def test_agreement_and_facts_are_shown(client):
    outputs = client.predict(handle_file(str(by_name("china").path)), api_name="/compare")
    server_facts, serverless_facts, agreement = outputs[1], outputs[3], outputs[4]
    assert "✅ both say **palace**" in agreement and "identical" in agreement and "the same model file" in agreement
    for facts in (server_facts, serverless_facts):
        assert "round trip" in facts and "payload" in facts and "memory" in facts and ("warm" in facts or "cold" in facts)
    assert "3008 MB configured" in serverless_facts


@pytest.mark.slow
def test_too_large_image_is_refused_with_the_reason_then_downscaled(client, tmp_path):
    big = tmp_path / "big.png"
    rng_image = Image.effect_noise((1600, 1400), 64).convert("RGB")
    rng_image.save(big, format="PNG")
    assert big.stat().st_size > MAX_IMAGE_BYTES
    with pytest.raises(Exception, match="Downscale"):
        client.predict(handle_file(str(big)), api_name="/compare")
    smaller = client.predict(handle_file(str(big)), api_name="/downscale")
    path = smaller["path"] if isinstance(smaller, dict) else smaller
    data = httpx.get(smaller["url"]).content if isinstance(smaller, dict) and smaller.get("url") else Path(path).read_bytes()
    assert len(data) <= MAX_IMAGE_BYTES and Image.open(io.BytesIO(data)).format == "JPEG"


def test_bad_image_is_a_visible_error_not_a_crash(client, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(corpus.truncated_jpeg())
    outputs = client.predict(handle_file(str(bad)), api_name="/compare")
    assert "❌ 400" in outputs[1] and "❌ 400" in outputs[3]
    assert compare(client, by_name("coffee").path)  # and the next request works


def test_short_monitor_run_returns_samples_and_percentiles(client, lite0):
    outputs = client.predict(["server", "serverless"], 0.05, "request count", 3, 60, 1, "coffee", api_name="/monitor")
    status, _, _, stats, csv_file, html_file = outputs
    assert status.startswith("Finished: 6 requests, 0 errors")
    rows = {row[0]: dict(zip(stats["headers"], row)) for row in stats["data"]}
    assert len(rows) == 2 and all(r["count"] == 3 and r["errors"] == 0 for r in rows.values())
    assert all(r["min_ms"] <= r["p50_ms"] <= r["max_ms"] for r in rows.values())
    serverless = next(r for name, r in rows.items() if "emulator" in name)
    assert serverless["cold_starts"] == 1  # a fresh environment for the run, as on Lambda
    assert csv_file and html_file
    report = Path(html_file["path"] if isinstance(html_file, dict) else html_file).read_text()
    assert Sidecar.load(sidecar_path(lite0)).label in report  # the run's settings name the model it ran


def test_cost_figures_follow_from_their_inputs(client):
    args = dict(memory_mb=2048, architecture="arm64", warm_duration_ms=40.0, init_ms=900.0, cold_start_fraction=0.02,
                api_gateway=True, gb_second_usd=0.0000133334, request_per_million=0.2, api_per_million=1.0,
                server_hourly=0.1, server_rps=30.0, utilisation=0.6)
    outputs = client.predict(*args.values(), api_name="/cost")
    expected = cost.compare(cost.CostInputs(
        memory_mb=2048, architecture="arm64", warm_duration_ms=40, init_ms=900, cold_start_fraction=0.02, api_gateway=True,
        gb_second_usd=0.0000133334, request_usd=0.2e-6, api_request_usd=1e-6, server_hourly_usd=0.1,
        server_throughput_rps=30, server_utilisation=0.6))
    assert outputs[-1]["serverless_per_million_usd"] == pytest.approx(expected.serverless_per_million_usd)
    assert outputs[-1]["crossover_requests_per_month"] == pytest.approx(expected.crossover_requests_per_month)
    assert f"${expected.serverless_per_million_usd:,.2f} per million" in outputs[0]


@pytest.mark.slow
def test_share_needs_auth_or_an_explicit_no_auth():
    """A shared app without a login gets a generated one; another --host without one refuses to start."""
    user, password = parse_auth(LaunchOptions(share=True))
    assert user == "viewer" and len(password) >= 16 and parse_auth(LaunchOptions(share=True)) != (user, password)
    assert parse_auth(LaunchOptions(share=True, no_auth=True)) is None
    assert parse_auth(LaunchOptions(share=True, auth="ann:secret")) == ("ann", "secret")
    assert parse_auth(LaunchOptions(share=True, auth="ann", auth_password="secret")) == ("ann", "secret")
    with pytest.raises(UsageError, match="--auth"):
        parse_auth(LaunchOptions(host="0.0.0.0"))
    with pytest.raises(UsageError, match="password"):
        parse_auth(LaunchOptions(host="0.0.0.0", operator="op"))
    assert parse_auth(LaunchOptions(host="0.0.0.0", no_auth=True)) is None
    out = run_module("gui", "--host", "0.0.0.0", timeout=60)
    assert out.returncode == 2 and "--auth" in out.stderr
    out = run_module("gui", "--host", "0.0.0.0", "--auth", "ann", "--operator", "op:secret", timeout=60)
    assert out.returncode == 2 and "never the command line" in out.stderr


def test_share_offline_still_serves_and_says_no_link(lite0):
    running = launch(Targets(model=lite0), LaunchOptions(port=free_port(), share=True, auth="ann:secret"), quiet=True)
    try:
        assert running.share_url is None
        assert "No public link could be made" in running.context.share_status
        assert httpx.get(running.local_url, timeout=10).status_code == 200
        client = Client(running.local_url, auth=("ann", "secret"), verbose=False, download_files=False)
        assert "fits the serverless limit" in client.predict(handle_file(str(by_name("coffee").path)), api_name="/describe")[1]
    finally:
        running.close()


# ---- a real browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def classify_in_page(page, url: str, photo_path: Path) -> None:
    page.goto(url)
    page.locator("#image-file input[type=file]").set_input_files(str(photo_path))
    page.get_by_text("fits the serverless limit").wait_for(timeout=60_000)
    page.locator("#classify").click()


@pytest.mark.slow
def test_browser_uploads_classifies_and_sees_both_top5_and_the_chart(app, browser, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    photo = by_name("chelsea")
    classify_in_page(page, app.local_url, photo.path)
    for side in ("#server-top5", "#serverless-top5"):
        label = page.locator(side)
        label.get_by_text("tiger cat").first.wait_for(timeout=120_000)
        assert "Egyptian cat" in label.inner_text()
    page.locator("#breakdown img, #breakdown svg, #breakdown canvas").first.wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts / "gui_compare.png"), full_page=True)
    page.close()


@pytest.mark.slow
def test_browser_sessions_each_get_their_own_results(app, browser):
    photos = [by_name("coffee"), by_name("china"), by_name("lion")]
    pages = [browser.new_page() for _ in photos]
    for page, photo in zip(pages, photos):
        classify_in_page(page, app.local_url, photo.path)  # all three clicks in flight together
    for page, photo in zip(pages, photos):
        expected = photo.expected[0]
        for side in ("#server-top5", "#serverless-top5"):
            page.locator(side).get_by_text(expected).first.wait_for(timeout=120_000)
        others = {p.expected[0] for p in photos} - {expected}
        text = page.locator("#server-top5").inner_text() + page.locator("#serverless-top5").inner_text()
        assert not any(f"\n{o}\n" in f"\n{text}\n" for o in others)
        page.close()


@pytest.mark.slow
def test_browser_shows_the_random_weights_banner(resnet_random, browser, artifacts):
    running = launch(Targets(model=resnet_random), LaunchOptions(port=free_port()), quiet=True)
    try:
        page = browser.new_page()
        page.goto(running.local_url)
        page.get_by_text("RANDOM WEIGHTS").first.wait_for(timeout=30_000)
        for tab in ("Monitor", "Cost"):
            page.get_by_role("tab", name=tab).click()
            page.get_by_text("RANDOM WEIGHTS").first.wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts / "gui_random_banner.png"))
        page.close()
    finally:
        running.close()


@pytest.mark.slow
def test_first_run_exports_a_model_and_offers_explicit_fallbacks(tmp_path, browser, artifacts):
    """No model yet and no network: the app says why and exports EfficientNet-Lite0 when asked."""
    port = free_port()
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    model = tmp_path / "models" / "resnet50.onnx"
    proc = subprocess.Popen([sys.executable, "-m", "gui", "--port", str(port), "--model", str(model)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(url, proc, 90)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(url)
        page.get_by_text("could not download ResNet50_Weights.IMAGENET1K_V2").wait_for(timeout=120_000)
        assert page.get_by_text("RANDOM weights").first.is_visible()  # offered, not taken
        assert not model.exists()
        page.get_by_role("button", name="Export EfficientNet-Lite0").click()
        page.get_by_text("exported EfficientNet-Lite0").wait_for(timeout=180_000)
        page.get_by_role("tab", name="Compare").wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts / "gui_first_run.png"))
        assert (model.parent / "efficientnet_lite0.onnx").is_file()
        page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_either_precision_is_served_on_both_sides(lite0, lite0_int8, tmp_path):
    """The model switch serves the INT8 file on both sides (same sha256 each side, INT8 named)."""
    import shutil

    from lambda_onnx.sidecar import Sidecar, sidecar_path

    folder = tmp_path / "models"
    folder.mkdir()
    for path in (lite0, lite0_int8):
        shutil.copy(path, folder / path.name)
        shutil.copy(sidecar_path(path), folder / sidecar_path(path).name)
    running = launch(Targets(model=folder / lite0.name), LaunchOptions(port=free_port()), quiet=True)
    try:
        client = Client(running.local_url, verbose=False, download_files=False)
        header = client.predict(str(folder / lite0_int8.name), api_name="/switch_model")[0]
        assert "efficientnet_lite0 int8" in header
        summary = compare(client, by_name("coffee").path)
        int8_sha = Sidecar.load(sidecar_path(lite0_int8)).sha256
        for side in summary.values():
            assert side["model"]["precision"] == "int8" and side["model"]["sha256"] == int8_sha
            assert side["predictions"][0]["label"] == "espresso"
    finally:
        running.close()
