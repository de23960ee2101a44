"""The monitor: samples, percentiles, CSV and the one-file HTML report, on real backends."""

from __future__ import annotations

import csv
import io
import time

import numpy as np
import pytest

from lambda_onnx.photos import by_name
from local.clients.inprocess import InProcessBackend
from local.measure.monitor import run_monitor, start_monitor, summarise
from local.report.monitor import monitor_html


@pytest.fixture(scope="module")
def backends(lite0):
    return [InProcessBackend(lite0, name="server A"), InProcessBackend(lite0, name="server B")]


def test_request_count_run_gives_samples_and_percentiles(backends):
    run = run_monitor(backends, by_name("coffee").read(), interval_s=0.05, requests=5, concurrency=2)
    samples = run.samples
    assert len(samples) == 10 and {s.backend for s in samples} == {"server A", "server B"}
    assert all(s.ok and s.status == 200 and s.round_trip_ms > 0 for s in samples)
    assert sorted({s.worker for s in samples if s.backend == "server A"}) == [0, 1]
    stats = {s.backend: s for s in run.stats()}
    a_times = np.array([s.round_trip_ms for s in samples if s.backend == "server A"])
    assert stats["server A"].count == 5 and stats["server A"].errors == 0
    assert stats["server A"].p50_ms == pytest.approx(np.percentile(a_times, 50), abs=0.01)
    assert stats["server A"].min_ms <= stats["server A"].p90_ms <= stats["server A"].max_ms


def test_errors_are_samples_not_crashes(backends):
    run = run_monitor(backends[:1], b"not an image", interval_s=0, requests=3)
    assert [(s.ok, s.status) for s in run.samples] == [(False, 400)] * 3
    assert "invalid_image" in run.samples[0].error
    assert run.stats()[0].errors == 3 and run.stats()[0].p50_ms is None


def test_stop_ends_an_open_ended_run(backends):
    run = start_monitor(backends[:1], by_name("coffee").read(), interval_s=0.2)
    time.sleep(0.7)
    run.stop.set()
    assert run.finished.wait(10)
    assert 1 <= len(run.samples) <= 6


def test_duration_bounds_the_run(backends):
    run = run_monitor(backends[:1], by_name("coffee").read(), interval_s=0.25, duration_s=1.0)
    assert [s.seq for s in run.samples] == [0, 1, 2, 3]


def test_csv_and_html_report(backends, artifacts):
    run = run_monitor(backends, by_name("lion").read(), interval_s=0, requests=4)
    rows = list(csv.DictReader(io.StringIO(run.csv_text())))
    assert len(rows) == 8 and set(rows[0]) >= {"backend", "t_s", "round_trip_ms", "cold_start", "status"}
    page = monitor_html(run, title="test run", settings={"interval_s": 0, "requests": 4})
    assert page.count("data:image/png;base64,") == 2 and "server A" in page and "samples.csv" in page
    (artifacts / "monitor_report.html").write_text(page)


def test_summarise_counts_cold_starts(backends):
    fresh = InProcessBackend(backends[0].service.classifier, name="fresh")
    run = run_monitor([fresh], by_name("coffee").read(), interval_s=0, requests=3)
    assert [s.cold_start for s in run.samples] == [True, False, False]
    assert summarise(run.samples)[0].cold_starts == 1


def test_cli_writes_the_samples_and_the_report(lite0, tmp_path):
    from tests.helpers.process import run_module

    out = run_module("local", "monitor", "--model", str(lite0), "--backends", "server", "--requests", "3",
                     "--interval", "0", "--out", str(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "samples.csv").read_text())))
    assert len(rows) == 3
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "data:text/csv;base64," in page
    assert f"wrote {tmp_path / 'samples.csv'} and {tmp_path / 'report.html'}" in out.stdout


# ---- the settings people read: typed, filled in, and honest about random weights ---------------------------


def report_settings(page: str) -> dict[str, str]:
    """The report's Settings table as {setting: value}, unescaped."""
    import html
    import re

    table = re.search(r"<h2>Settings</h2>\s*<table>(.*?)</table>", page, re.S)
    assert table, "the report has no Settings table"
    return {html.unescape(k): html.unescape(v) for k, v in re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", table.group(1))}


def test_report_shows_the_typed_settings_filled_in(backends, lite0):
    from dataclasses import replace

    from lambda_onnx.sidecar import Sidecar, sidecar_path
    from local.measure.monitor import MonitorSettings, model_facts
    from local.report.monitor import settings_rows

    run = run_monitor(backends, by_name("coffee").read(), interval_s=0, requests=2)
    model, random_weights = model_facts(lite0)
    assert (model, random_weights) == (Sidecar.load(sidecar_path(lite0)).label, False)
    settings = MonitorSettings(backends=tuple(run.backends), model=model, random_weights=random_weights, photo="coffee",
                               interval_s=0.0, concurrency=1, requests=2)
    page = monitor_html(run, settings=settings)
    assert report_settings(page) == {"backends": "server A, server B", "model": model, "photo": "coffee",
                                     "seconds between a worker's requests": "0", "concurrency": "1 worker(s) per backend",
                                     "stop after": "2 requests per backend"}
    assert "<function" not in page and "RANDOM WEIGHTS" not in page  # real weights: no banner
    stops = [settings_rows(replace(settings, requests=None, duration_s=d))[-1]["value"] for d in (90.5, None)]
    assert stops == ["90.5 s", "when stopped"]


def test_report_of_a_random_weights_model_says_so_first(resnet_random):
    from local.measure.monitor import MonitorSettings, model_facts

    run = run_monitor([InProcessBackend(resnet_random, name="random")], by_name("coffee").read(), interval_s=0, requests=1)
    model, random_weights = model_facts(resnet_random)
    assert random_weights and "RANDOM WEIGHTS" in model
    page = monitor_html(run, settings=MonitorSettings(backends=("random",), model=model, random_weights=True, photo="coffee",
                                                      interval_s=0.0, concurrency=1, requests=1))
    assert page.index("RANDOM WEIGHTS") < page.index("<h2>")  # the banner, above every table


def test_cli_report_shows_the_runs_settings_not_the_command_line(resnet_random, tmp_path):
    from lambda_onnx.sidecar import Sidecar, sidecar_path
    from tests.helpers.process import run_module

    out = run_module("local", "monitor", "--model", str(resnet_random), "--backends", "server", "--requests", "2",
                     "--interval", "0", "--out", str(tmp_path), timeout=180)
    assert out.returncode == 0, out.stderr
    assert "RANDOM WEIGHTS" in out.stdout
    page = (tmp_path / "report.html").read_text()
    assert "<function" not in page
    settings = report_settings(page)
    assert set(settings) == {"backends", "model", "photo", "seconds between a worker's requests", "concurrency", "stop after"}
    assert all(value.strip() for value in settings.values()), settings
    assert settings["model"] == Sidecar.load(sidecar_path(resnet_random)).label
    assert (settings["photo"], settings["stop after"]) == ("chelsea", "2 requests per backend")
    assert page.index("RANDOM WEIGHTS") < page.index("<h2>")
