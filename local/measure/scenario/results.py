"""What a simulation leaves: per-request outcomes (:class:`SideRun`), their summary with the issue's
key names (:class:`SideResult`), a whole scenario (:class:`ScenarioResult`) and its verdict line.

Percentiles are over the requests that were answered (status 200), as in the monitor's table;
refusals are counted, not timed: ``throttled`` (Lambda's 429), ``rejected`` (a server's 503: queue
full or waited past the queue timeout) and ``timeouts`` (504: API Gateway's 30 s).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from local.measure.core.stats import duration_summary
from local.measure.cost import HOURS_PER_MONTH

OK, THROTTLED, REJECTED, TIMED_OUT = 200, 429, 503, 504
MONTH_S = HOURS_PER_MONTH * 3600.0  # the Cost module's month


@dataclass
class SideRun:
    """Every request's outcome on one side, indexed like the arrivals (nothing is dropped)."""

    side: str  # "lambda" or "server"
    arrivals: np.ndarray  # seconds
    latency_ms: np.ndarray  # what the client waited (0 for an immediate refusal)
    status: np.ndarray  # int16: 200, 429, 503, 504
    cold: np.ndarray  # bool: this request started an execution environment
    busy_ms: np.ndarray  # how long it held an environment or worker
    wait_ms: np.ndarray  # how long it queued before that (a server's queue; 0 on Lambda)
    instances: tuple[np.ndarray, np.ndarray]  # step function: times (s), count from that time on
    measure_from: float = 0.0  # arrivals before this are a warm-up: simulated, not counted
    end_s: float = 0.0  # the period measured ends here
    cost: dict[str, float] = field(default_factory=dict)  # USD by item, for the measured period
    notes: list[str] = field(default_factory=list)
    instance_s: float = 0.0  # a fleet's instance-seconds in the measured period (what its instances cost)

    @property
    def counted(self) -> np.ndarray:
        return self.arrivals >= self.measure_from

    @property
    def duration_s(self) -> float:
        return max(self.end_s - self.measure_from, 1e-9)

    def in_service(self) -> tuple[np.ndarray, np.ndarray]:
        """Requests being served over time (a step function)."""
        return concurrency_steps(self.arrivals + self.wait_ms / 1000.0, self.busy_ms)


@dataclass
class SideResult:
    """One side of a scenario, with the key names ``--json`` prints."""

    side: str
    label: str
    requests: int
    served: int
    cold_starts: int
    throttled: int
    rejected: int
    timeouts: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    peak_concurrency: int
    peak_instances: int
    cost_usd: float
    cost_per_month_usd: float
    cost_breakdown: dict[str, float] = field(default_factory=dict)
    cold_start_pct: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def concurrency_steps(start: np.ndarray, busy_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Requests in service over time, as a step function (vectorised: +1 at each start, -1 at each end;
    an end sorts before a start at the same instant, as the simulation frees before it assigns)."""
    keep = busy_ms > 0
    begins, ends = start[keep], start[keep] + busy_ms[keep] / 1000.0
    times = np.concatenate([ends, begins])
    steps = np.concatenate([-np.ones(ends.size), np.ones(begins.size)])
    order = np.lexsort((steps, times))
    return times[order], np.cumsum(steps[order])


def peak(steps: tuple[np.ndarray, np.ndarray], start: float, end: float) -> int:
    """The highest value of a step function on [start, end]."""
    times, values = steps
    if times.size == 0:
        return 0
    before = np.searchsorted(times, start, side="right") - 1
    inside = (times >= start) & (times <= end)
    candidates = values[inside]
    if before >= 0:
        candidates = np.append(candidates, values[before])
    return int(candidates.max()) if candidates.size else 0


def bucket_max(steps: tuple[np.ndarray, np.ndarray], edges: np.ndarray) -> np.ndarray:
    """The highest value of a step function in each bucket ``[edges[i], edges[i+1])`` (vectorised)."""
    times, values = steps
    result = np.zeros(edges.size - 1)
    if times.size == 0:
        return result
    carried = np.searchsorted(times, edges[:-1], side="right") - 1  # the value each bucket starts with
    result = np.where(carried >= 0, values[np.clip(carried, 0, None)], 0.0)
    inside = np.searchsorted(edges, times, side="right") - 1
    valid = (inside >= 0) & (inside < result.size)
    np.maximum.at(result, inside[valid], values[valid])
    return result


def summarise(run: SideRun, label: str) -> SideResult:
    """The counts, percentiles, peaks and costs of the measured period."""
    mask = run.counted
    status, latency = run.status[mask], run.latency_ms[mask]
    served = latency[status == OK]
    times = duration_summary(served.tolist()) if served.size else {}
    p95 = round(float(np.percentile(served, 95)), 2) if served.size else None
    requests = int(mask.sum())
    cold = int(run.cold[mask].sum())
    busy = run.in_service()
    total_cost = float(sum(run.cost.values()))
    return SideResult(
        side=run.side, label=label, requests=requests, served=int(served.size), cold_starts=cold,
        throttled=int((status == THROTTLED).sum()), rejected=int((status == REJECTED).sum()),
        timeouts=int((status == TIMED_OUT).sum()), p50_ms=times.get("p50"), p95_ms=p95, p99_ms=times.get("p99"),
        mean_ms=times.get("mean"), max_ms=times.get("max"), peak_concurrency=peak(busy, run.measure_from, run.end_s),
        peak_instances=peak(run.instances, run.measure_from, run.end_s), cost_usd=round(total_cost, 6),
        cost_per_month_usd=round(total_cost * MONTH_S / run.duration_s, 4),
        cost_breakdown={k: round(v, 6) for k, v in run.cost.items()},
        cold_start_pct=round(100.0 * cold / requests, 3) if requests else 0.0, notes=list(run.notes))


# --- over time --------------------------------------------------------------------------------------


@dataclass
class TimeSeries:
    """Per time bucket: arrivals per second, peak concurrency and instances, latency p50/p99."""

    bucket_s: float
    t_s: list[float]
    arrivals_per_s: list[float]
    concurrency: list[int]
    instances: list[int]
    p50_ms: list[float | None]
    p99_ms: list[float | None]


def time_series(run: SideRun, buckets: int = 240) -> TimeSeries:
    """Bucketed view of the measured period, for the charts (vectorised over the requests)."""
    start, end = run.measure_from, run.end_s
    size = max((end - start) / buckets, 1e-6)
    edges = start + size * np.arange(buckets + 1)
    mask = run.counted
    arrivals = run.arrivals[mask]
    counts, _ = np.histogram(arrivals, bins=edges)
    which = np.clip(((arrivals - start) / size).astype(int), 0, buckets - 1)
    latency, ok = run.latency_ms[mask], run.status[mask] == OK
    order = np.argsort(which[ok], kind="stable")
    sorted_buckets, sorted_latency = which[ok][order], latency[ok][order]
    bounds = np.searchsorted(sorted_buckets, np.arange(buckets + 1))
    p50: list[float | None] = []
    p99: list[float | None] = []
    for b in range(buckets):
        chunk = sorted_latency[bounds[b]:bounds[b + 1]]
        p50.append(round(float(np.percentile(chunk, 50)), 2) if chunk.size else None)
        p99.append(round(float(np.percentile(chunk, 99)), 2) if chunk.size else None)
    busy = run.in_service()
    return TimeSeries(bucket_s=size, t_s=[round(float(e), 3) for e in edges[:-1]],
                      arrivals_per_s=[round(float(c) / size, 4) for c in counts],
                      concurrency=[int(v) for v in bucket_max(busy, edges)],
                      instances=[int(v) for v in bucket_max(run.instances, edges)],
                      p50_ms=p50, p99_ms=p99)


# --- a scenario ------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """Both sides of one scenario, how it was simulated, the calibration and the verdict."""

    name: str
    traffic: dict[str, Any]
    duration_s: float  # the period the figures stand for
    simulated_s: float  # what was simulated (less, for month-scale runs)
    method: str  # "full" or how representative days stood in for the period
    lambda_: SideResult
    server: SideResult
    calibration: dict[str, Any]
    verdict: str
    wall_s: float = 0.0
    series: dict[str, TimeSeries] = field(default_factory=dict)
    charts: dict[str, str] = field(default_factory=dict)
    deployment: dict[str, Any] = field(default_factory=dict)  # the server side's FleetDeployment, as a dict
    lambda_deployment: dict[str, Any] = field(default_factory=dict)  # the function's settings simulated
    server_cost: dict[str, Any] = field(default_factory=dict)  # per month: instances, load balancer, total, platforms

    def to_dict(self, with_series: bool = False) -> dict[str, Any]:
        data = {"name": self.name, "traffic": self.traffic, "duration_s": self.duration_s,
                "simulated_s": self.simulated_s, "method": self.method, "lambda": self.lambda_.to_dict(),
                "server": self.server.to_dict(), "verdict": self.verdict, "calibration": self.calibration,
                "wall_s": round(self.wall_s, 2), "charts": self.charts, "deployment": self.deployment,
                "lambda_deployment": self.lambda_deployment, "server_cost": self.server_cost}
        if with_series:
            data["series"] = {side: asdict(series) for side, series in self.series.items()}
        return data


def money(usd: float) -> str:
    """USD as the verdicts and the break-even write it: cents above a dollar, more digits below."""
    return f"${usd:,.2f}" if usd >= 0.995 else f"${usd:.3f}" if usd >= 0.001 else f"${usd:.5f}"


def ms_text(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def failed(side: SideResult) -> int:
    return side.throttled + side.rejected + side.timeouts


def verdict(lam: SideResult, server: SideResult) -> str:
    """One line: which side is cheaper per month, and what it costs in latency or failures."""
    if lam.requests == 0:
        return "no requests: nothing to compare"
    cheaper, dearer = (lam, server) if lam.cost_per_month_usd <= server.cost_per_month_usd else (server, lam)
    ratio = dearer.cost_per_month_usd / cheaper.cost_per_month_usd if cheaper.cost_per_month_usd > 0 else float("inf")
    name = {"lambda": "Lambda", "server": "the server fleet"}
    line = (f"{name[cheaper.side].capitalize()} is {ratio:.1f}x cheaper ({money(cheaper.cost_per_month_usd)} against "
            f"{money(dearer.cost_per_month_usd)} a month)")
    worse_tail = (cheaper.p99_ms or 0) > 1.5 * (dearer.p99_ms or 0) and (cheaper.p99_ms or 0) - (dearer.p99_ms or 0) > 50
    failures = failed(cheaper) / cheaper.requests
    if worse_tail or failures > 0.001:
        costs = []
        if worse_tail:
            costs.append(f"p99 {ms_text(cheaper.p99_ms)} against {ms_text(dearer.p99_ms)}")
        if cheaper.side == "lambda" and cheaper.cold_starts:
            costs.append(f"{cheaper.cold_start_pct:.2g} % cold starts")
        if failures > 0.001:
            costs.append(f"{failures:.1%} of requests refused")
        return line + " but pays with " + ", ".join(costs) + "."
    if (cheaper.p99_ms or 0) <= (dearer.p99_ms or 0):
        return line + f" and no slower in the tail (p99 {ms_text(cheaper.p99_ms)} against {ms_text(dearer.p99_ms)})."
    return line + f" at a comparable tail (p99 {ms_text(cheaper.p99_ms)} against {ms_text(dearer.p99_ms)})."


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The ``q``-th percentile of values that each stand for ``weight`` requests."""
    order = np.argsort(values, kind="stable")
    sorted_values, cumulative = values[order], np.cumsum(weights[order])
    return float(np.interp(q / 100.0 * cumulative[-1], cumulative, sorted_values))


def combine(parts: list[tuple[SideRun, float]], label: str, duration_s: float) -> SideResult:
    """One side over a long period from representative pieces, each standing for ``weight`` times
    itself: counts and costs add up weighted, percentiles are weighted, peaks are the highest seen."""
    summaries = [(summarise(run, label), weight) for run, weight in parts]
    served = [(run.latency_ms[run.counted & (run.status == OK)], weight) for run, weight in parts]
    values = np.concatenate([v for v, _ in served]) if served else np.zeros(0)
    weights = np.concatenate([np.full(v.size, w) for v, w in served]) if served else np.zeros(0)

    def total(key: str) -> int:
        return int(round(sum(getattr(s, key) * w for s, w in summaries)))

    def pct(q: float) -> float | None:
        return round(weighted_percentile(values, weights, q), 2) if values.size else None

    cost_items: dict[str, float] = {}
    for s, w in summaries:
        for key, usd in s.cost_breakdown.items():
            cost_items[key] = cost_items.get(key, 0.0) + usd * w
    usd = sum(cost_items.values())
    requests = total("requests")
    cold = total("cold_starts")
    notes = sorted({note for s, _ in summaries for note in s.notes})
    return SideResult(
        side=parts[0][0].side, label=label, requests=requests, served=total("served"), cold_starts=cold,
        throttled=total("throttled"), rejected=total("rejected"), timeouts=total("timeouts"), p50_ms=pct(50),
        p95_ms=pct(95), p99_ms=pct(99), mean_ms=round(float(np.average(values, weights=weights)), 2) if values.size else None,
        max_ms=round(float(values.max()), 2) if values.size else None,
        peak_concurrency=max(s.peak_concurrency for s, _ in summaries),
        peak_instances=max(s.peak_instances for s, _ in summaries), cost_usd=round(usd, 6),
        cost_per_month_usd=round(usd * MONTH_S / duration_s, 4), cost_breakdown={k: round(v, 6) for k, v in cost_items.items()},
        cold_start_pct=round(100.0 * cold / requests, 3) if requests else 0.0, notes=notes)
