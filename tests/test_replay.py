"""Replay: the open loop keeps its schedule, outcomes are summarised like the simulation's, the
comparison applies the issue's goals, and a short real validation runs end to end (slow)."""

from __future__ import annotations

import threading

import numpy as np
import psutil
import pytest

from local.measure.core.open_loop import ReplaySample, open_loop
from local.measure.core.requests import Outcome
from local.measure.replay import ReplayRun, arrivals_for, compare_counts, compare_latency
from local.measure.scenario.results import summarise
from local.measure.scenario.traffic import Arrivals, Shape


def test_the_open_loop_never_waits_for_earlier_answers():
    # Every send blocks until all ten are in flight at once: a loop that waited for answers would
    # never get there (the barrier breaks after its timeout and the test fails).
    gate = threading.Barrier(10, timeout=30)

    def send(i: int) -> Outcome:
        gate.wait()
        return Outcome(200, 1.0)

    run = open_loop([0.01 * i for i in range(10)], send)
    assert len(run.samples) == 10 and not gate.broken
    assert [s.index for s in run.samples] == list(range(10))  # every scheduled request once, in order
    assert all(s.sent_s >= s.scheduled_s for s in run.samples)  # never before its time


def test_the_open_loop_keeps_gaps_it_is_given():
    sent: list[float] = []
    run = open_loop([0.0, 0.3, 0.6], lambda i: (sent.append(i), Outcome(200, 1.0))[1])
    assert sorted(sent) == [0, 1, 2]
    starts = [s.sent_s for s in run.samples]
    assert starts == sorted(starts) and all(s.sent_s >= s.scheduled_s for s in run.samples)


def test_the_open_loop_stops_early_and_refuses_an_unsorted_schedule():
    stop = threading.Event()
    stop.set()
    assert open_loop([0.0, 100.0], lambda i: Outcome(200, 1.0), stop=stop).samples == []
    with pytest.raises(ValueError, match="sorted"):
        open_loop([1.0, 0.0], lambda i: Outcome(200, 1.0))


def test_a_replay_is_summarised_like_a_simulation():
    outcomes = [Outcome(200, 700.0, True), Outcome(200, 40.0, False), Outcome(429, 2.0, error="throttled"),
                Outcome(200, 45.0, False), Outcome(503, 1.0, error="overloaded")]
    run = ReplayRun("lambda", [ReplaySample(i, float(i), float(i), o) for i, o in enumerate(outcomes)], 5.0)
    result = summarise(run.to_side_run(), "measured")
    assert (result.requests, result.served, result.cold_starts, result.throttled, result.rejected) == (5, 3, 1, 1, 1)
    assert result.p50_ms == 45.0


def test_goals_same_counts_p50_within_15_and_p99_within_30_percent():
    assert compare_counts("lambda", "cold_starts", [7, 7, 8], 7).ok
    assert not compare_counts("lambda", "cold_starts", [7, 7, 8], 9).ok
    assert compare_counts("lambda", "cold_starts", [6, 7, 8], 7).simulated_range == (6, 8)
    assert compare_latency("lambda", "p50_ms", 57.0, 50.0, 0.15).ok and not compare_latency("x", "p50_ms", 58, 50, 0.15).ok
    assert compare_latency("server", "p99_ms", 129.0, 100.0, 0.30).ok and not compare_latency("x", "p99_ms", None, 1, 0.3).ok


def test_arrivals_for_a_shape_and_a_sped_up_file():
    times, what = arrivals_for(Shape("sparse", every_s=10), 60)
    assert list(times) == [0, 10, 20, 30, 40, 50] and "sparse" in what
    log = Arrivals(np.array([0.0, 60.0, 120.0, 3600.0]), "day.log", "alb", 4, 0)
    times, what = arrivals_for(log, 60, speedup=60)
    assert list(times) == [0.0, 1.0, 2.0, 60.0] and "60x faster" in what
    with pytest.raises(ValueError):
        arrivals_for(log, 60, speedup=0)


@pytest.mark.slow
def test_a_short_real_validation_accounts_for_every_request(lite0):
    from local.measure.replay import validate

    # 12 requests in 12 s: a cold start, warm ones, a 4 s gap over the 2 s idle timeout (cold again), a pair at once
    arrivals = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 6.5, 7.0, 7.5, 8.0, 10.0, 10.0, 11.0])
    before = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. a session fixture's emulator
    validation = validate(arrivals, model=lite0, scenario="test", idle_timeout_s=2.0, max_concurrency=2, seeds=3,
                          calibration_requests=10, cold_starts=2, overlapping_pairs=1, again_after=False)
    for side in ("lambda", "server"):
        assert validation.measured[side].requests == validation.simulated[side].requests == arrivals.size
        assert len(validation.runs[side].samples) == arrivals.size
    assert validation.measured["lambda"].cold_starts >= 2  # the first request and the one after the long gap
    assert {c.metric for c in validation.checks} >= {"cold_starts", "throttled", "p50_ms", "p99_ms"}
    assert validation.calibration["sources"]["lambda_cold_ms"]
    # the part of local serve's round trip outside its lane (client, HTTP), from the answers' own handler_ms
    server = validation.calibration["server"]
    assert 0 < server["overhead_ms"] < server["service_ms"]["median_ms"]
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.pid not in before
                 and ("aws-lambda-rie" in " ".join(p.cmdline()) or "-m local serve" in " ".join(p.cmdline()))]
    assert not leftovers  # every emulator and server it started is stopped
