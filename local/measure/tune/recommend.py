"""The recommendation (pure): the cheapest configuration whose latency is within the budget, and why."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from local.measure.tune.config import LAMBDA_MAX_MB
from local.measure.tune.results import Recommendation, SizeResult


@dataclass(frozen=True)
class _Usable:
    """A configuration that may be recommended, with the two numbers it is judged by (both measured)."""

    result: SizeResult
    latency_ms: float  # its ``percentile`` of ``metric``
    cost: float  # USD per million requests

    @property
    def key(self) -> str:
        return self.result.key


def recommend(results: Sequence[SizeResult], budget_ms: float | None, percentile: str = "p90",
              metric: str = "duration", max_memory_mb: int | None = None) -> Recommendation:
    """The cheapest configuration whose ``percentile`` of ``metric`` is within ``budget_ms``.

    Not eligible: a configuration that failed (out of memory, timeout, errors) or whose handler's
    peak RSS exceeded its memory size when emulated (shared libraries are not charged to a cgroup
    but count on Lambda: it would likely run out of memory there). Ties in cost go to the faster,
    then the smaller. Without a budget: the cheapest overall. ``max_memory_mb`` (the largest size
    this machine can give its full CPU share) only shapes the advice when nothing fits.
    """
    source = results[0].source if results else "emulated"
    excluded: dict[str, str] = {}
    usable: list[_Usable] = []
    for r in results:
        latency = r.latency(percentile, metric)
        if r.status != "ok":
            excluded[r.key] = f"{r.status}: {r.message}" if r.message else r.status
        elif r.requests_ok < r.requests:
            excluded[r.key] = f"only {r.requests_ok} of {r.requests} warm requests succeeded"
        elif latency is None or r.cost_per_million_usd is None:
            excluded[r.key] = f"no {percentile} {metric} measured"
        elif r.canary == "failed":
            excluded[r.key] = f"its canary failed on {r.cpu or 'this CPU'}: its answers are not the model's"
        elif r.outgrows_its_memory:
            excluded[r.key] = (f"peak RSS {r.peak_rss_mb:.0f} MB above its {r.memory_mb} MB: shared libraries count on "
                               "Lambda (not in a cgroup here), so it would likely run out of memory there")
        else:
            usable.append(_Usable(r, latency, r.cost_per_million_usd))
    within = [u for u in usable if budget_ms is None or u.latency_ms <= budget_ms]
    for u in usable:
        if u not in within:
            excluded[u.key] = f"{percentile} {u.latency_ms:.1f} ms over the {budget_ms:g} ms budget"
    order = sorted(within, key=lambda u: (round(u.cost, 9), u.latency_ms, u.result.memory_mb))
    if not order:
        return Recommendation(source=source, percentile=percentile, metric=metric, budget_ms=budget_ms, choice=None,
                              memory_mb=None, precision=None,
                              text=_nothing_fits(results, usable, budget_ms, percentile, max_memory_mb),
                              within_budget=(), excluded=excluded)
    best = order[0].result
    return Recommendation(source=source, percentile=percentile, metric=metric, budget_ms=budget_ms, choice=best.key,
                          memory_mb=best.memory_mb, precision=best.precision,
                          text=_why(order, usable, budget_ms, percentile, metric),
                          within_budget=tuple(u.key for u in order), excluded=excluded)


def _why(order: list[_Usable], usable: list[_Usable], budget_ms: float | None, percentile: str, metric: str) -> str:
    """Why ``order[0]`` (the cheapest within budget) wins, against the runner-up and the fastest."""
    chosen = order[0]
    best, latency = chosen.result, chosen.latency_ms
    lines = []
    if budget_ms is None:
        lines.append(f"**{best.memory_mb} MB, {best.precision}**: ${chosen.cost:.2f} per million requests, "
                     f"{percentile} {latency:.1f} ms, the cheapest of {len(order)} working configurations "
                     "(no latency budget was given).")
    else:
        lines.append(f"**{best.memory_mb} MB, {best.precision}**: {percentile} {latency:.1f} ms within the {budget_ms:g} ms "
                     f"budget at ${chosen.cost:.2f} per million requests, the cheapest of {len(order)} "
                     f"configuration(s) within budget.")
    if len(order) > 1:
        runner = order[1]
        dearer = (runner.cost / chosen.cost - 1) * 100 if chosen.cost else 0.0
        lines.append(f"Next cheapest: {runner.key} at ${runner.cost:.2f}, {dearer:.0f}% more ({percentile} "
                     f"{runner.latency_ms:.1f} ms).")
    fastest = min(usable, key=lambda u: u.latency_ms)
    if fastest.result is not best:
        lines.append(f"Fastest: {fastest.key} at {percentile} {fastest.latency_ms:.1f} ms for "
                     f"${fastest.cost:.2f} per million.")
    if best.cpu_capped:
        lines.append(f"Caution: this machine gave {best.key} only {best.cpus:.2f} of Lambda's {best.lambda_cpus:.2f} vCPU, "
                     "so Lambda would be faster at this size.")
    if best.precision == "int8":
        lines.append("INT8 changes the numbers the model computes: check its agreement with fp32 (its sidecar's parity "
                     "report, `python -m local bench`) before deploying it.")
    n = best.warm.get(metric, {}).get("n", 0)
    if percentile == "p99" and n < 100:
        lines.append(f"p99 from {n} requests is close to their maximum: use more requests for a stable p99.")
    return " ".join(lines)


def _nothing_fits(results: Sequence[SizeResult], usable: list[_Usable], budget_ms: float | None, percentile: str,
                  max_memory_mb: int | None) -> str:
    if not usable:
        return ("No configuration completed its requests, so none can be recommended: see each one's status "
                "(a size below the model's need ends out of memory; give it more memory).")
    fastest = min(usable, key=lambda u: u.latency_ms)
    latency = fastest.latency_ms
    advice = [f"No configuration's {percentile} is within {budget_ms:g} ms. The fastest is {fastest.key} at "
              f"{latency:.1f} ms (${fastest.cost:.2f} per million). What to do:",
              f"relax the budget to at least {math.ceil(latency)} ms;"]
    largest = max(r.memory_mb for r in results)
    if fastest.result.memory_mb == largest and largest < LAMBDA_MAX_MB:
        more = "sweep larger sizes (Lambda gives up to 6 vCPUs at 10,240 MB)"
        if max_memory_mb is not None and largest >= max_memory_mb:
            more += (f", but this machine cannot give more CPU than at {max_memory_mb} MB: measure larger sizes on AWS "
                     "(--function)")
        advice.append(more + ";")
    if "int8" not in {r.precision for r in results}:
        advice.append("try the INT8 model (`python -m export --int8`);")
    advice.append("or use a smaller model (e.g. `python -m export --arch efficientnet_lite0`).")
    return " ".join(advice)


