"""Lambda as a discrete-event model (SimPy): execution environments made on demand, reused most
recently used first, reclaimed after an idle timeout; a concurrency limit and a scaling rate that
throttle (429); provisioned concurrency; API Gateway's 30 s limit (504).

Why SimPy rather than a hand-written loop: its clock and event queue are maintained and tested, and
the model reads as what Lambda does. It is pure Python, so the model is shaped for speed (measured
in ``python -m local scenario --benchmark``): one process walks the arrivals and each request is a
single timeout event whose callback frees its environment, rather than a SimPy process per
request (2.3x slower here). Reclaiming needs no events at all: idle environments wait in a deque
in the order they became idle, so the ones past the idle timeout are always at its old end and are
dropped there when the next request looks for one; the most recently used is at the other end.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import cast

import numpy as np
import simpy

from local.measure.cost import (
    PROVISIONED_DURATION_USD_PER_GB_S,
    PROVISIONED_USD_PER_GB_S,
    gb_second_price,
    snapstart_cache_usd,
    snapstart_restore_usd,
)
from local.measure.scenario.params import LambdaParams
from local.measure.scenario.results import OK, THROTTLED, TIMED_OUT, SideRun

PROGRESS_EVERY = 1 << 16
Progress = Callable[[int, int], None]


def simulate_lambda(arrivals: np.ndarray, params: LambdaParams, *, seed: int = 0, measure_from: float = 0.0,
                    end_s: float | None = None, on_progress: Progress | None = None) -> SideRun:
    """Every arrival (seconds, sorted) through one function; requests before ``measure_from`` are a
    warm-up (simulated, not counted or charged)."""
    times = np.asarray(arrivals, dtype=float)
    n = times.size
    rng = np.random.default_rng(seed)
    warm = params.warm_ms.draw(rng, n)
    latency = np.zeros(n)
    status = np.zeros(n, dtype=np.int16)
    cold = np.zeros(n, dtype=bool)
    busy_ms = np.zeros(n)
    on_provisioned = np.zeros(n, dtype=bool)
    start = min(0.0, float(times[0])) if n else 0.0
    end = float(end_s if end_s is not None else (times[-1] if n else 0.0))
    env = simpy.Environment(initial_time=start)

    idle_timeout = params.idle_timeout_s
    api_ms = params.api_timeout_s * 1000.0 if params.api_timeout_s else math.inf
    limit, burst, refill = params.concurrency_limit, float(params.scaling_burst), params.scaling_refill_per_s
    idle: deque[tuple[int, float]] = deque()  # (environment, idle since), oldest first
    provisioned_idle = list(range(params.provisioned))  # always initialised, never reclaimed
    created = [start] * params.provisioned
    reclaimed: list[float] = []
    state = {"busy": 0, "tokens": burst, "refilled": start, "by_limit": 0, "by_rate": 0}
    cold_draws: list[float] = []
    overlap_draws: list[float] = []
    contended_draws: list[float] = []
    host = params.cold_overlap_ms is not None or params.warm_during_cold_ms is not None
    initialising: list[float] = []  # when the cold starts in progress end (only to simulate the emulator's host)

    def release(event: simpy.Event) -> None:
        state["busy"] -= 1
        environment, provisioned = cast(tuple[int, bool], event.value)
        if provisioned:
            provisioned_idle.append(environment)
        else:
            idle.append((environment, env.now))

    def draw(pool: list[float], distribution) -> float:
        if not pool:  # in batches: these are rare, one numpy call per request would dominate
            pool.extend(distribution.draw(rng, 1024).tolist())
        return pool.pop()

    def draw_cold(now: float) -> float:
        if host:
            initialising[:] = [t for t in initialising if t > now]
            overlapped = bool(initialising) and params.cold_overlap_ms is not None
            ms = draw(overlap_draws, params.cold_overlap_ms) if overlapped else draw(cold_draws, params.cold_ms)
            initialising.append(now + ms / 1000.0)
            return ms
        return draw(cold_draws, params.cold_ms)

    def draw_warm(now: float, ms: float) -> float:
        """A warm request on the emulator's host while another environment initialises."""
        if params.warm_during_cold_ms is not None and initialising:
            initialising[:] = [t for t in initialising if t > now]
            if initialising:
                return draw(contended_draws, params.warm_during_cold_ms)
        return ms

    def arrive(env: simpy.Environment):
        timeout = env.timeout
        now = start
        arrivals_list, warm_list = times.tolist(), warm.tolist()
        for i in range(n):
            t = arrivals_list[i]
            if t > now:
                yield timeout(t - now)
                now = t
            if on_progress is not None and i % PROGRESS_EVERY == 0:
                on_progress(i, n)
            while idle and now - idle[0][1] >= idle_timeout:  # reclaimed while nobody looked
                reclaimed.append(idle.popleft()[1] + idle_timeout)
            if state["busy"] >= limit:
                status[i] = THROTTLED
                state["by_limit"] += 1
                continue
            provisioned = False
            if provisioned_idle:
                environment, provisioned, ms = provisioned_idle.pop(), True, warm_list[i]
            elif idle:
                environment, ms = idle.pop()[0], warm_list[i]  # most recently used first
                if host:
                    ms = draw_warm(now, ms)
            else:
                tokens = min(burst, state["tokens"] + (now - state["refilled"]) * refill)
                state["refilled"] = now
                if tokens < 1.0:
                    state["tokens"] = tokens
                    status[i] = THROTTLED
                    state["by_rate"] += 1
                    continue
                state["tokens"] = tokens - 1.0
                environment, ms = len(created), draw_cold(now)
                created.append(now)
                cold[i] = True
            state["busy"] += 1
            busy_ms[i] = ms
            on_provisioned[i] = provisioned
            if ms > api_ms:  # the gateway gives up; the function runs on and is billed
                status[i], latency[i] = TIMED_OUT, api_ms
            else:
                status[i], latency[i] = OK, ms
            timeout(ms / 1000.0, (environment, provisioned)).callbacks.append(release)
        if on_progress is not None:
            on_progress(n, n)

    env.process(arrive(env))
    env.run()
    while idle:  # the ones still idle at the end are reclaimed on time, or outlive the period
        environment, since = idle.popleft()
        if since + idle_timeout <= end:
            reclaimed.append(since + idle_timeout)

    run = SideRun("lambda", times, latency, status, cold, busy_ms, np.zeros(n), _steps(created, reclaimed),
                  measure_from=measure_from, end_s=end)
    run.cost = lambda_cost(run, params, warm, on_provisioned)
    if state["by_limit"]:
        run.notes.append(f"{state['by_limit']:,} request(s) throttled at the concurrency limit of {limit:,}")
    if state["by_rate"]:
        run.notes.append(f"{state['by_rate']:,} request(s) throttled by the scaling rate ({params.scaling_burst:,} new "
                         f"environments per {params.scaling_burst / params.scaling_refill_per_s:g} s)")
    return run


def _steps(created: list[float], reclaimed: list[float]) -> tuple[np.ndarray, np.ndarray]:
    times = np.concatenate([np.asarray(reclaimed, dtype=float), np.asarray(created, dtype=float)])
    steps = np.concatenate([-np.ones(len(reclaimed)), np.ones(len(created))])
    order = np.lexsort((steps, times))
    return times[order], np.cumsum(steps[order])


def lambda_cost(run: SideRun, params: LambdaParams, warm_ms: np.ndarray, on_provisioned: np.ndarray) -> dict[str, float]:
    """USD for the measured period, by item, with the Cost module's prices and billing model: each
    invoked request is billed ``ceil(warm - overhead)`` ms (at least 1), a cold start its INIT too;
    requests served by provisioned environments at the provisioned duration price, plus those
    environments by the second. With SnapStart a cold start is a restore: its billed restore duration
    (``init_ms``), SnapStart's restore charge, and the snapshot's cache for the period (3 hours at least)."""
    prices = params.prices
    gb = params.memory_mb / 1024.0
    mask = run.counted
    invoked = mask & (run.busy_ms > 0)
    billed = np.maximum(1.0, np.ceil(warm_ms - params.overhead_ms)) + np.where(run.cold, math.ceil(params.init_ms), 0.0)
    arch = prices.architecture
    on_demand_s = float(billed[invoked & ~on_provisioned].sum()) / 1000.0
    provisioned_s = float(billed[invoked & on_provisioned].sum()) / 1000.0
    items = {"lambda_duration": gb * on_demand_s * gb_second_price(prices),
             "lambda_requests": int(invoked.sum()) * prices.request_usd}
    if prices.api_gateway:
        items["api_gateway"] = int(mask.sum()) * prices.api_request_usd
    if params.provisioned:
        items["provisioned_concurrency"] = params.provisioned * gb * run.duration_s * PROVISIONED_USD_PER_GB_S[arch]
        items["provisioned_duration"] = gb * provisioned_s * PROVISIONED_DURATION_USD_PER_GB_S[arch]
    if params.snapstart:
        items["snapstart_restore"] = snapstart_restore_usd(params.memory_mb, int((invoked & run.cold).sum()))
        items["snapstart_cache"] = snapstart_cache_usd(params.memory_mb, run.duration_s)
    return items
