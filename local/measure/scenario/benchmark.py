"""How fast and how right the simulator is: ``python -m local scenario --benchmark``.

Speed: one million requests (Poisson, 200 req/s) through each side, timed. Accuracy: the models
against queueing theory where it has exact answers, and the latest replay against real runs:

- Lambda at a concurrency limit of c with environments never reclaimed is an Erlang loss system
  (M/G/c/c): the share of requests throttled is Erlang's B formula, whatever the service-time
  distribution;
- a fleet of one instance with c workers and an unbounded queue, exponential service, is M/M/c:
  the mean wait and the share of requests that wait are Erlang's C formula;
- one worker (M/M/1): the time in the system is exponential, so its p99 is ln(100) / (mu - lambda).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from local.defaults import SCENARIO_OUT
from local.measure.scenario.fleet_sim import simulate_fleet
from local.measure.scenario.lambda_sim import simulate_lambda
from local.measure.scenario.params import Distribution, FleetParams, LambdaParams
from local.measure.scenario.results import THROTTLED, summarise
from local.measure.scenario.traffic import Shape

BENCHMARK_REQUESTS = 1_000_000
BENCHMARK_RATE = 200.0
GOAL_S = 60.0
DEFAULT_REPLAY_JSON = SCENARIO_OUT / "replay.json"
Say = Callable[[str, "float | None"], None]


@dataclass(frozen=True)
class Accuracy:
    check: str
    simulated: float
    exact: float

    @property
    def error_pct(self) -> float:
        return 100.0 * abs(self.simulated - self.exact) / abs(self.exact) if self.exact else math.nan


@dataclass
class BenchmarkResult:
    requests: int
    seconds: dict[str, float]  # side -> wall seconds for BENCHMARK_REQUESTS
    accuracy: list[Accuracy]
    validation: dict[str, Any] | None  # the latest replay's checks, if one was run
    goal_s: float = GOAL_S
    notes: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return all(s <= self.goal_s for s in self.seconds.values())

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "seconds": self.seconds, "goal_s": self.goal_s, "met": self.met,
                "accuracy": [{**asdict(a), "error_pct": round(a.error_pct, 3)} for a in self.accuracy],
                "validation": self.validation, "notes": self.notes}


def _quiet(message: str, fraction: float | None = None) -> None:
    pass


def erlang_b(servers: int, load: float) -> float:
    """The probability that an arrival finds all ``servers`` busy in M/G/c/c (offered load in erlangs)."""
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(servers: int, load: float) -> float:
    """The probability that an arrival waits in M/M/c."""
    b = erlang_b(servers, load)
    rho = load / servers
    return b / (1 - rho * (1 - b))


def benchmark(*, requests: int = BENCHMARK_REQUESTS, seed: int = 0, replay_json: Path = DEFAULT_REPLAY_JSON,
              on_progress: Say | None = None) -> BenchmarkResult:
    """Time a million requests per side and check the models against the exact cases."""
    say = on_progress or _quiet
    rng = np.random.default_rng(seed)
    # Figures of the size this project measures (a warm ResNet-50 request, a second's cold start);
    # the speed does not depend on them.
    warm = Distribution.measured(rng.lognormal(math.log(50.0), 0.25, 500).tolist(), "benchmark: lognormal around 50 ms")
    arrivals = Shape("steady", BENCHMARK_RATE).arrivals(requests / BENCHMARK_RATE, seed)
    lam = LambdaParams(warm_ms=warm, cold_ms=Distribution.constant(1000.0), init_ms=800.0, overhead_ms=3.0,
                       idle_timeout_s=600.0)
    fleet = FleetParams(service_ms=warm, workers=1, queue=64, instances=20)
    seconds = {}
    for side in ("lambda", "server"):
        def progress(i: int, n: int, side: str = side) -> None:
            say(f"{side}: {i:,} of {n:,} requests", i / max(n, 1))

        began = time.perf_counter()
        if side == "lambda":
            simulate_lambda(arrivals, lam, seed=seed, on_progress=progress)
        else:
            simulate_fleet(arrivals, fleet, seed=seed, on_progress=progress)
        seconds[side] = round(time.perf_counter() - began, 2)
        say(f"{side}: {arrivals.size:,} requests in {seconds[side]:.1f} s ({arrivals.size / seconds[side]:,.0f} per second)",
            None)
    say("accuracy against queueing theory", None)
    result = BenchmarkResult(int(arrivals.size), seconds, accuracy_checks(seed), latest_validation(replay_json))
    return result


def accuracy_checks(seed: int = 0, requests: int = 400_000) -> list[Accuracy]:
    """The three exact cases of the module docstring, each with ``requests`` arrivals."""
    rng = np.random.default_rng(seed + 7)
    exponential = Distribution(samples=tuple(rng.exponential(50.0, 200_000).tolist()), source="exponential, mean 50 ms")
    checks = []
    # Erlang B: 10 environments, 160 req/s x 50 ms = 8 erlangs offered
    rate, limit = 160.0, 10
    arrivals = Shape("steady", rate).arrivals(requests / rate, seed)
    loss = LambdaParams(warm_ms=exponential, cold_ms=exponential, idle_timeout_s=1e12, concurrency_limit=limit,
                        api_timeout_s=None)
    run = simulate_lambda(arrivals, loss, seed=seed)
    checks.append(Accuracy(f"Lambda at a limit of {limit}, {rate * exponential.mean_ms / 1000:.1f} erlangs: share throttled "
                           "(Erlang B)", float((run.status == THROTTLED).mean()),
                           erlang_b(limit, rate * exponential.mean_ms / 1000)))
    # Erlang C: 2 workers at 75 % busy
    rate, workers = 30.0, 2
    arrivals = Shape("steady", rate).arrivals(requests / rate, seed + 1)
    mmc = FleetParams(service_ms=exponential, workers=workers, queue=10**9, queue_timeout_s=1e12, instances=1)
    run = simulate_fleet(arrivals, mmc, seed=seed)
    load = rate * exponential.mean_ms / 1000
    wait_c = erlang_c(workers, load)
    mean_wait = wait_c / (workers * 1000 / exponential.mean_ms - rate) * 1000
    checks.append(Accuracy("fleet, 2 workers 75 % busy: mean wait ms (Erlang C)", float(run.wait_ms.mean()), mean_wait))
    checks.append(Accuracy("fleet, 2 workers 75 % busy: share of requests that wait (Erlang C)",
                           float((run.wait_ms > 0).mean()), wait_c))
    # M/M/1: p99 of the time in the system
    rate = 15.0
    arrivals = Shape("steady", rate).arrivals(requests / rate, seed + 2)
    mm1 = FleetParams(service_ms=exponential, workers=1, queue=10**9, queue_timeout_s=1e12, instances=1)
    summary = summarise(simulate_fleet(arrivals, mm1, seed=seed), "M/M/1")
    checks.append(Accuracy("fleet, 1 worker 75 % busy: p99 ms (M/M/1)", float(summary.p99_ms or 0.0),
                           math.log(100) / (1000 / exponential.mean_ms - rate) * 1000))
    return checks


def latest_validation(path: Path = DEFAULT_REPLAY_JSON) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return {"created": data.get("created"), "scenario": data.get("scenario"), "ok": data.get("ok"),
            "checks": data.get("checks", []), "settings": data.get("settings", {})}
