"""Short soaks (``local/soak.py``, ``python -m local soak``): concurrent clients get only right answers,
past capacity ``local serve`` answers 503 with a reason, the emulator serialises one environment's
invokes and never crashes. Errors and correctness are asserted, never speed; the figures are printed
(run with -s). The long versions are ``python -m local soak serve|emulator``.
"""

from __future__ import annotations

import pytest

from lambda_onnx.photos import by_name
from local.measure.soak import soak_emulator, soak_serve
from tests.helpers.process import run_module

pytestmark = pytest.mark.timeout(300)

CHELSEA = by_name("chelsea")


def show(phase) -> None:
    memory = f"RSS {phase.memory.start_mb:.0f}→{phase.memory.max_mb:.0f}→{phase.memory.end_mb:.0f} MB" if phase.memory else "RSS n/a"
    print(f"\n{phase.name}: {phase.clients} clients, {phase.requests} requests, errors {phase.errors}, "
          f"p50/p90/p99 {phase.p50_ms}/{phase.p90_ms}/{phase.p99_ms} ms, {phase.throughput_rps} answers/s, {memory}")


def test_serve_soak_has_no_errors_and_past_capacity_answers_503_with_a_reason(lite0):
    # Capacity 3 (1 classifying + 2 waiting): 3 clients, one request each at a time, always fit;
    # 12 clients cannot.
    report = soak_serve(CHELSEA.read(), model=lite0, clients=3, seconds=3, overload_clients=12, overload_seconds=2,
                        expected=CHELSEA.expected, serve_args=["--runtime", "onnxruntime", "--max-concurrency", "1",
                                                               "--max-queue", "2", "--log-level", "warning"])
    steady, overload = report.phases
    for phase in report.phases:
        show(phase)
    assert report.facts["capacity"] == 3
    assert steady.requests > 0 and steady.ok == steady.requests and steady.errors == {}
    assert steady.memory is not None and len(steady.memory.samples) >= 2
    assert overload.ok > 0 and set(overload.errors) == {"503 overloaded"}  # right answers, or 503: nothing else
    assert "server at capacity" in overload.reasons["503 overloaded"] and overload.wrong == 0
    assert report.facts["alive"] and report.facts["after"] in CHELSEA.expected


def test_emulator_soak_serialises_one_environment_and_spreads_over_a_pool(lite0, lite0_emulator):
    if not lite0_emulator.alive():
        lite0_emulator.restart()
    report = soak_emulator(CHELSEA.read(), lite0, clients=3, seconds=3, pool=2, expected=CHELSEA.expected,
                           emulator=lite0_emulator)
    one, pool = report.phases
    for phase in report.phases:
        show(phase)
    assert one.requests > 3 and one.ok == one.requests and one.errors == {}
    assert set(one.environments) == {lite0_emulator.name} and one.cold_starts == 0
    assert report.facts["single_alive"] and report.facts["single_pid_before"] == report.facts["single_pid_after"]
    assert pool.requests > 3 and pool.ok == pool.requests and pool.errors == {}
    assert set(pool.environments) == {"soak-pool-0", "soak-pool-1"}  # concurrent requests, two environments
    assert report.facts["pool_alive"] and report.facts["pool_pids_unchanged"]


def test_cli_prints_the_figures(lite0):
    out = run_module("local", "soak", "serve", "--model", str(lite0), "--clients", "2", "--seconds", "2",
                     "--overload-clients", "8", "--overload-seconds", "1", "--serve-arg=--runtime=onnxruntime",
                     "--serve-arg=--max-queue=1", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr  # 503s in the overload phase are the expected answer
    assert "[steady] 2 clients" in out.stdout and "errors 0 (none)" in out.stdout
    assert "latency p50" in out.stdout and "server RSS: start" in out.stdout and "[overload] 8 clients" in out.stdout
    out = run_module("local", "soak", "emulator", "--model", str(lite0), "--clients", "2", "--seconds", "1", "--pool", "0",
                     timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[one environment] 2 clients" in out.stdout and "errors 0 (none)" in out.stdout and "alive: True" in out.stdout
