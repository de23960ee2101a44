"""The elastic emulated Lambda on the real Runtime Interface Emulator (EfficientNet-Lite0):
environments on demand, reused, reclaimed when idle, throttled past the limit; the pool's surface
for InvokeFront and EmulatorBackend; the CLI; no process left behind. No timing assertions: waits
are bounded polls for a state, and overlaps are forced by the seconds a cold start takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from lambda_onnx.errors import BackendUnavailableError, ThrottledError
from lambda_onnx.photos import by_name
from local.clients.emulator import EmulatorBackend
from local.lambda_env import ElasticPool
from local.lambda_env.elastic import THROTTLE_REASON
from local.lambda_env.front import InvokeFront
from local.lambda_env.rie import session_members
from local.wire import http_api_event
from tests.helpers.process import ROOT

CHELSEA = by_name("chelsea")
pytestmark = pytest.mark.slow  # every test here starts real emulators


def wait_for(condition, timeout_s: float = 30.0) -> bool:
    """Poll until ``condition()`` holds (a bounded wait for a state, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def alive_pids(pool_pids: list[int]) -> list[int]:
    return [pid for pid in pool_pids if session_members(pid)]


@pytest.fixture
def pool_factory(lite0):
    made: list[ElasticPool] = []

    def make(**kwargs) -> ElasticPool:
        kwargs.setdefault("memory_mb", 1769)
        pool = ElasticPool(lite0, **kwargs).start()
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.stop()


def classify(pool: ElasticPool):
    return EmulatorBackend(pool, stop_on_close=False).classify(CHELSEA.read())


def test_starts_from_zero_reuses_warm_and_reclaims_idle_environments(pool_factory):
    pool = pool_factory(idle_timeout_s=1.0)
    assert pool.size == 0  # nothing runs before the first request, as on Lambda
    first, second = classify(pool), classify(pool)
    assert first.cold_start and not second.cold_start
    assert first.extra["environment"] == second.extra["environment"] and "environment_start_ms" in first.extra
    assert first.predictions[0].label in CHELSEA.expected
    pids = [e.pid for e in pool.emulators]
    assert wait_for(lambda: pool.size == 0 and not alive_pids(pids)), "the idle environment was not reclaimed"
    assert pool.reclaimed == 1  # its processes are gone too
    third = classify(pool)
    assert third.cold_start and third.extra["environment"] != first.extra["environment"]


def test_grows_under_concurrent_requests(pool_factory):
    pool = pool_factory(max_concurrency=3, idle_timeout_s=60)
    start = threading.Barrier(3)

    def one(_):
        start.wait()
        return classify(pool)

    with ThreadPoolExecutor(3) as threads:  # no environment exists: each request needs its own (seconds to start)
        results = list(threads.map(one, range(3)))
    assert all(r.cold_start for r in results)
    assert len({r.extra["environment"] for r in results}) == 3 == pool.size == pool.started
    again = [classify(pool) for _ in range(3)]
    assert not any(r.cold_start for r in again)
    # most recently used first: sequential requests keep landing on one environment
    assert len({r.extra["environment"] for r in again}) == 1


def test_throttles_past_its_limit_with_lambdas_reason(pool_factory):
    pool = pool_factory(max_concurrency=1, idle_timeout_s=60)
    start = threading.Barrier(2)

    def one(_):
        start.wait()
        try:
            return classify(pool)
        except ThrottledError as exc:
            return exc

    with ThreadPoolExecutor(2) as threads:  # the second arrives while the first environment is still starting
        outcomes = list(threads.map(one, range(2)))
    refused = [o for o in outcomes if isinstance(o, ThrottledError)]
    assert len(refused) == 1 and refused[0].status == 429 and refused[0].code == THROTTLE_REASON
    assert "concurrency limit" in refused[0].message and pool.throttled == 1 and pool.size == 1


def test_invoke_front_answers_429_over_an_elastic_pool(pool_factory):
    pool = pool_factory(max_concurrency=1, idle_timeout_s=60)
    payload = json.dumps(http_api_event(CHELSEA.read())).encode()
    with InvokeFront(pool) as front:
        def post(_):
            request = urllib.request.Request(front.invoke_url, data=payload, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, dict(response.headers)
            except urllib.error.HTTPError as exc:
                return exc.code, dict(exc.headers)

        start = threading.Barrier(2)
        with ThreadPoolExecutor(2) as threads:
            answers = list(threads.map(lambda i: (start.wait(), post(i))[1], range(2)))
        assert sorted(status for status, _ in answers) == [200, 429]
        throttled = next(headers for status, headers in answers if status == 429)
        assert throttled["x-amzn-ErrorType"] == "TooManyRequestsException"
        assert post(0)[0] == 200  # the environment is free again: a warm answer


def test_restart_makes_the_next_request_cold_and_stop_leaves_nothing(pool_factory):
    pool = pool_factory(idle_timeout_s=60)
    assert classify(pool).cold_start and not classify(pool).cold_start
    pids = [e.pid for e in pool.emulators]
    pool.restart()
    assert classify(pool).cold_start and not alive_pids(pids)
    pids = [e.pid for e in pool.emulators]
    pool.stop()
    assert pool.size == 0 and not alive_pids(pids) and not pool.alive()
    with pytest.raises(BackendUnavailableError, match="not running"):
        classify(pool)


def test_refuses_a_nonsense_configuration(lite0):
    with pytest.raises(ValueError, match="concurrency"):
        ElasticPool(lite0, max_concurrency=0)
    with pytest.raises(ValueError, match="idle timeout"):
        ElasticPool(lite0, idle_timeout_s=0)


@pytest.mark.slow
def test_cli_elastic_emulator_serves_then_stops_cleanly(lite0):
    process = subprocess.Popen([sys.executable, "-m", "local", "emulator", "--elastic", "--model", str(lite0),
                                "--max-concurrency", "2", "--idle-timeout", "30", "--memory", "1769"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url, lines = None, []
        for line in process.stdout:
            lines.append(line)
            if "invoke URL" in line:
                url = line.split("invoke URL", 1)[1].split()[0]
                break
        assert url and "elastic" in "".join(lines), "".join(lines)
        request = urllib.request.Request(url, data=json.dumps(http_api_event(CHELSEA.read())).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(json.loads(response.read())["body"])
        assert body["metrics"]["cold_start"] is True
        children = psutil.Process(process.pid).children(recursive=True)
        assert any("aws-lambda-rie" in " ".join(c.cmdline()) for c in children)  # the environment it started
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the command's own group: it stops its environments itself
        process.wait(30)
    assert process.returncode == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_cli_refuses_elastic_options_without_elastic(lite0):
    out = subprocess.run([sys.executable, "-m", "local", "emulator", "--model", str(lite0), "--idle-timeout", "5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "go with --elastic" in out.stderr
