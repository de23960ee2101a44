"""``python -m local loadtest`` (``local/measure/loadtest.py``, ``core/http_load.py``, ``peers/``): the ceiling,
the figures of a phase, the summaries and goals, and the short mode end to end with each load
generator. Structure and correctness are asserted, never speed.
"""

from __future__ import annotations

import json

import pytest

from local.measure.core.http_load import LoadResult, wrk_version
from local.measure.loadtest import (
    LOCAL,
    Ceiling,
    LoadtestReport,
    Phase,
    Run,
    against,
    bracket_ceiling,
    ceiling_rps,
    goals,
    measure_batches,
    measure_ceiling,
    phase_result,
    summary,
)
from local.measure.peers import process as peers
from local.report.loadtest import markdown
from tests.helpers.process import run_module

pytestmark = pytest.mark.timeout(600)


# --- the ceiling ----------------------------------------------------------------------------------------


def test_the_ceiling_is_the_cpus_over_the_cpu_seconds_of_one_request():
    assert ceiling_rps(2, 27.6) == pytest.approx(2 / 0.0276)
    assert ceiling_rps(1.7, 100.0) == pytest.approx(17.0)
    for cpus, ms in ((0, 10.0), (2, 0.0), (-1, 5.0)):
        with pytest.raises(ValueError):
            ceiling_rps(cpus, ms)
    assert Ceiling(cpus=2.0, cpu_ms=50.0, requests=3, answer={}).rps == pytest.approx(40.0)


def test_the_ceiling_is_measured_in_process_on_the_whole_request_path(lite0):
    from lambda_onnx.photos import by_name

    photo = by_name("chelsea")
    ceiling = measure_ceiling(lite0, photo.read(), content_type="image/png", cpus=2.0, min_requests=3, min_cpu_s=0.1)
    assert ceiling.requests >= 3 and ceiling.cpu_ms > 0 and ceiling.cpus == 2.0
    assert ceiling.answer["predictions"][0]["label"] in photo.expected  # the in-process answer servers are held to
    assert ceiling.answer["model"]["threads"] == 1
    per_image = measure_batches(lite0, photo.read(), sizes=(1, 2), min_cpu_s=0.05)
    assert set(per_image) == {1, 2} and all(ms > 0 for ms in per_image.values())


# --- figures, summaries and goals -------------------------------------------------------------------------


def load(ok: int, refused: int = 0, seconds: float = 10.0, connections: int = 8) -> LoadResult:
    return LoadResult(generator="test", connections=connections, elapsed_s=seconds,
                      statuses={200: ok, **({503: refused} if refused else {})}, ok_ms=[float(i) for i in range(1, ok + 1)],
                      refused_ms=[1.0] * refused, retry_after=refused, socket_errors={}, client_cpu_s=1.0)


def phase(ok: int, *, target: str = LOCAL, name: str = "capacity", round_: int = 1, refused: int = 0) -> Phase:
    ceiling = Ceiling(cpus=2.0, cpu_ms=20.0, requests=10, answer={})  # 100 answers/s at most
    return phase_result(load(ok, refused, connections=8 if name == "capacity" else 32), round_=round_, model="m",
                        target=target, phase=name, ceiling=ceiling, server_cpu_s=15.0, cpus=2.0)


def test_a_phase_counts_goodput_against_the_ceiling_and_times_accepted_requests_only():
    row = phase(900, refused=300)
    assert row.answers == 1200 and row.ok == 900 and row.statuses == {"200": 900, "503": 300}
    assert row.goodput_rps == 90.0 and row.requests_per_s == 120.0 and row.ratio == 0.9
    assert row.p50_ms == 450.5 and row.p99_ms == pytest.approx(891.0, abs=0.1)  # 1..900 ms: the 503s' 1 ms are not in it
    assert row.refused_p50_ms == 1.0 and row.retry_after == 300
    assert row.server_cpu == 0.75 and row.client_cpu == 0.05  # 15 s and 1 s of CPU over 10 s x 2 CPUs


def test_ratios_are_taken_against_the_ceiling_measured_before_and_after_the_runs():
    """A drift between the two readings is split: 20 ms before and 25 ms after give 22.5 ms, 88.9 answers/s."""
    before = Ceiling(cpus=2.0, cpu_ms=20.0, requests=10, answer={"top": 1})
    bracket = bracket_ceiling(before, Ceiling(cpus=2.0, cpu_ms=25.0, requests=8, answer={}))
    assert bracket.cpu_ms == 22.5 and bracket.requests == 18 and bracket.answer == {"top": 1}
    row = against(phase(800), bracket)  # 80 answers/s
    assert row.ratio == pytest.approx(80 / (2000 / 22.5), abs=1e-3) and row.ceiling_rps == pytest.approx(88.89)
    assert (row.goodput_rps, row.p99_ms) == (phase(800).goodput_rps, phase(800).p99_ms)  # only the ratio changes


def test_summary_takes_ratios_within_each_round_and_goals_say_what_was_met():
    report = LoadtestReport(machine={}, settings={}, generator="test")
    report.phases = [
        phase(950, round_=1), phase(900, name="overload", round_=1, refused=400),
        phase(940, round_=2), phase(700, name="overload", round_=2, refused=900),
        phase(800, target="Peer", round_=1), phase(850, target="Peer", name="overload", round_=1),
        phase(900, target="Peer", round_=2), phase(850, target="Peer", name="overload", round_=2),
    ]
    report.runs = [Run(round=r, model="m", target=LOCAL, version="x", start_s=1.0, top1="cat", top1_matches=True, lanes=2,
                       threads=1, places=18) for r in (1, 2)]
    rows = {(r["target"], r["phase"]): r for r in summary(report)}
    local_over = rows[(LOCAL, "overload")]
    assert rows[(LOCAL, "capacity")]["ratio"] == pytest.approx(0.945)
    assert local_over["of_capacity"] == pytest.approx((900 / 950 + 700 / 940) / 2, abs=1e-3)
    assert local_over["statuses"] == {"200": 1600, "503": 1300}
    assert local_over["queue_bound_ms"] == pytest.approx((20 / 90 + 20 / 70) / 2 * 1e3, abs=0.01)  # (18 places + 2 lanes) / goodput
    assert "queue_bound_ms" not in rows[(LOCAL, "capacity")] and "queue_bound_ms" not in rows.get(("Peer", "capacity"), {})
    assert rows[("Peer", "capacity")]["local_goodput_x"] == pytest.approx((950 / 800 + 940 / 900) / 2, abs=1e-3)
    met = {(g["goal"].split(":")[0], g["met"]) for g in goals(report)}
    assert ("goodput at 8 connections >= 0.90 x ceiling", True) in met
    assert ("goodput at 32 connections >= 0.90 x goodput at capacity", False) in met  # 0.85: not met, and said so
    bound = [g for g in goals(report) if g["goal"].startswith("accepted requests' p99 at 32 connections")]
    assert len(bound) == 1 and not bound[0]["met"]  # these made-up latencies (1..900 ms) are far above 18 / 80 per s
    text = markdown(_complete(report))
    assert "**not met**" in text and "| m | Peer | 32 |" in text and "| m | 10.0 ms (x1.00) | 9.0 ms (x0.90) |" in text


def _complete(report: LoadtestReport) -> LoadtestReport:
    report.machine = {"when": "now", "cpu": "CPU", "cpus": 2, "available_cpus": 2.0, "isa": ["avx2"], "vnni": False,
                      "memory_gb": 1.0, "platform": "Linux", "python": "3.11", "load_average_before": 0.1,
                      "versions": {"onnxruntime": "x"}}
    report.batches = [{"round": 1, "model": "m", "cpu_ms_per_image": {"1": 10.0, "2": 9.0}}]
    report.settings = {"peers": ["peer"], "connections": 8, "overload_connections": 32, "seconds": 10.0, "warmup_s": 1.0,
                       "image_bytes": 1000, "rounds": 2, "lanes": 2, "threads_per_lane": 1, "versions": {LOCAL: "x"}}
    return report


# --- the short mode, end to end (what CI runs) -------------------------------------------------------------


def run_short(lite0, tmp_path, load: str):
    out = run_module("local", "loadtest", "--short", "--load", load, "--model", str(lite0), "--out", str(tmp_path),
                     timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads((tmp_path / "loadtest.json").read_text())
    assert (tmp_path / "loadtest.md").read_text().startswith("# Load test")
    assert (tmp_path / "loadtest.png").read_bytes()[:4] == b"\x89PNG"
    capacity, overload = data["phases"]
    assert (capacity["phase"], overload["phase"]) == ("capacity", "overload")
    assert capacity["connections"] == 2 and overload["connections"] == 8
    # At capacity every answer is right and nothing is refused; past it (8 connections, 4 places), 503s
    # with Retry-After, and the server keeps answering.
    assert capacity["ok"] > 0 and capacity["statuses"] == {"200": capacity["ok"]} and not capacity["socket_errors"]
    assert overload["ok"] > 0 and set(overload["statuses"]) == {"200", "503"} and not overload["socket_errors"]
    assert overload["retry_after"] == overload["statuses"]["503"]
    assert all(run["top1_matches"] for run in data["runs"])
    assert data["ceilings"][0]["rps"] > 0 and capacity["ratio"] > 0 and capacity["server_cpu"] > 0
    ceiling = data["ceilings"][0]  # measured on both sides of the servers' runs, the ratios against the mean
    assert ceiling["cpu_ms"] == pytest.approx((ceiling["before_ms"] + ceiling["after_ms"]) / 2, abs=0.01)
    assert capacity["ratio"] == pytest.approx(capacity["goodput_rps"] / ceiling["rps"], abs=2e-3)
    assert {g["goal"].split(" >=")[0] for g in data["goals"]} >= {"goodput at 2 connections", "goodput at 8 connections"}
    print(out.stdout)
    return data, out.stdout


@pytest.mark.slow
def test_short_mode_with_the_python_fallback(lite0, tmp_path):
    data, stdout = run_short(lite0, tmp_path, "python")
    assert data["generator"].startswith("python") and "Python fallback" in stdout


@pytest.mark.slow
@pytest.mark.skipif(wrk_version() is None, reason="wrk is not installed (bash .ci/run installs it)")
def test_short_mode_with_wrk(lite0, tmp_path):
    data, _ = run_short(lite0, tmp_path, "wrk")
    assert data["generator"].startswith("wrk ")


def test_a_missing_model_is_a_one_line_error(tmp_path):
    out = run_module("local", "loadtest", "--short", "--model", str(tmp_path / "none.onnx"), timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("error: no model at")


# --- the peers (only where they are installed: bash local/measure/peers/setup.sh) ----------------------------


@pytest.mark.slow
@pytest.mark.parametrize("peer", peers.PEERS)
def test_each_peer_gives_the_in_process_answer_and_stops_everything_it_started(peer, lite0):
    if not peers.installed(peer):
        pytest.skip(f"{peer} is not installed ({peers.SETUP})")
    from lambda_onnx.photos import by_name

    photo = by_name("chelsea").read()
    expected = measure_ceiling(lite0, photo, content_type="image/png", min_requests=1, min_cpu_s=0.0).answer
    service = peers.PeerProcess(peer, lite0, lanes=1, threads=1)
    try:
        service.start(photo, "image/png")
        family = [p.pid for p in service.processes()]
        answer = service.first_answer
        assert answer is not None and answer["predictions"][0]["class_id"] == expected["predictions"][0]["class_id"]
        assert answer["predictions"][0]["probability"] == pytest.approx(expected["predictions"][0]["probability"], abs=1e-5)
    finally:
        service.close()
    import psutil

    alive = [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"{peer} left processes running: {alive}"
