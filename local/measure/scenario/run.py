"""A scenario from end to end: plan what to simulate, size the fleet, simulate both sides, summarise.

Month scale: a period longer than :data:`FULL_LIMIT_S` is simulated through representative days.

- A built-in shape whose days are alike (``Shape.daily``) is simulated for one day, after an hour
  of warm-up so the day starts with the environments and instances the previous evening left;
  every count and cost is then multiplied by the number of days. In expectation this is exact;
  what it costs: the day-to-day spread of the figures is not seen (counts vary by about
  1/sqrt(requests per day)), and an event rarer than once a day (a tail beyond the day's
  1/requests quantile) is not resolved.
- A file of arrivals longer than that is cut into days; the days are sorted by volume and split
  into ``representative_days`` groups; each group is simulated through one of its days (its
  median, the busiest for the top group, so the peak is always seen), with the hour before it as
  warm-up, and weighted so the group's requests add up. What it costs: days of a group are
  assumed to behave like their representative in everything but volume (a quiet day with one
  sharp burst looks like its group's median day), so cold starts and tails of unusual days are
  approximated; totals of requests are exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from local.measure import cost
from local.measure.scenario.calibrate import Calibration
from local.measure.scenario.deployment import FleetDeployment
from local.measure.scenario.fleet_sim import fleet_cost, load_balancer_cost, simulate_fleet
from local.measure.scenario.lambda_sim import simulate_lambda
from local.measure.scenario.params import (
    ACCOUNT_CONCURRENCY,
    API_GATEWAY_TIMEOUT_S,
    DEFAULT_BOOT_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_QUEUE_TIMEOUT_S,
    DEFAULT_REQUEST_BYTES,
    DEFAULT_RESPONSE_BYTES,
    DEFAULT_SMT_GAIN,
    IDLE_TIMEOUT_SOURCE,
    PLATFORMS,
    SCALING_SOURCE,
    SMT_GAIN_SOURCE,
    FleetParams,
    LambdaParams,
    for_option,
)
from local.measure.scenario.results import ScenarioResult, SideRun, combine, summarise, time_series, verdict
from local.measure.scenario.traffic import DAY_S, Arrivals, Shape, format_duration

FULL_LIMIT_S = 2 * DAY_S  # longer periods are simulated through representative days
WARMUP_S = 3600.0
DEFAULT_REPRESENTATIVE_DAYS = 3
PEAK_WINDOW_S = 60.0  # a fleet "sized for the peak" carries the busiest minute at the planned utilisation
Say = Callable[[str, "float | None"], None]


@dataclass(frozen=True)
class ScenarioConfig:
    """Everything a scenario needs besides the calibration. ``traffic`` is a built-in shape or a
    file's arrivals; ``duration_s`` is required for a shape, and cuts a file short if given."""

    traffic: Shape | Arrivals
    duration_s: float | None = None
    name: str = ""
    seed: int = 0
    # Lambda
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    reserved_concurrency: int | None = None  # None: the account's default limit
    provisioned: int = 0
    lambda_option: cost.LambdaOption | None = None  # None: the image, prices.architecture, ``provisioned``
    api_gateway: bool = True
    # the fleet
    instances: int | None = None  # None: sized for the peak (the autoscaler's start when autoscaling)
    workers: int | None = None  # None: the lanes local serve runs on the instance type's vCPUs
    instance_type: str = cost.DEFAULT_INSTANCE_TYPE
    server_hourly_usd: float | None = None  # None: the instance type's on-demand price
    smt_gain: float = DEFAULT_SMT_GAIN
    platform: str = "auto"  # "ec2", "fargate", or "auto": the cheaper of the two for this traffic
    load_balancer: bool = True
    request_bytes: int = DEFAULT_REQUEST_BYTES
    response_bytes: int = DEFAULT_RESPONSE_BYTES
    queue: int = 16
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S
    autoscale: bool = False
    target_utilisation: float = field(default_factory=lambda: cost.CostInputs().server_utilisation)
    boot_s: float = DEFAULT_BOOT_S
    max_instances: int = 100
    prices: cost.CostInputs = field(default_factory=cost.CostInputs)
    representative_days: int = DEFAULT_REPRESENTATIVE_DAYS

    def __post_init__(self) -> None:
        if isinstance(self.traffic, Shape) and self.duration_s is None:
            raise ValueError("a built-in shape needs a duration")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"the duration must be positive, got {self.duration_s}")
        if self.representative_days < 1:
            raise ValueError("at least one representative day")
        cost.instance_type(self.instance_type)  # an unknown type is refused now
        if self.platform not in ("auto", *PLATFORMS):
            raise ValueError(f"platform must be auto, {' or '.join(PLATFORMS)}, got {self.platform!r}")

    @property
    def period_s(self) -> float:
        if isinstance(self.traffic, Shape):
            return float(self.duration_s or 0.0)
        span = max(self.traffic.duration_s, 1.0)
        return min(span, self.duration_s) if self.duration_s else span

    def describe(self) -> str:
        what = self.traffic.describe()
        return f"{what}, {format_duration(self.period_s)}" if isinstance(self.traffic, Shape) else what


@dataclass
class Segment:
    """A piece that is simulated: its arrivals (a warm-up before ``measure_from``), and how many
    times over it counts."""

    arrivals: np.ndarray
    weight: float
    measure_from: float
    end_s: float
    label: str


def plan(config: ScenarioConfig) -> tuple[list[Segment], str]:
    """What to simulate for the period, and how it stands for the whole (module docstring)."""
    period = config.period_s
    traffic = config.traffic
    if isinstance(traffic, Shape):
        if period <= FULL_LIMIT_S or not traffic.daily:
            how = "simulated in full" + ("" if period <= FULL_LIMIT_S else " (its days are not alike: no shortcut)")
            return [Segment(traffic.arrivals(period, config.seed), 1.0, 0.0, period, "all")], how
        day = traffic.arrivals(DAY_S, config.seed, start_s=-WARMUP_S)
        return ([Segment(day, period / DAY_S, 0.0, DAY_S, "a representative day")],
                f"one representative day (after a {format_duration(WARMUP_S)} warm-up) standing for "
                f"{period / DAY_S:g} days: every day of this shape is alike")
    times = traffic.times[traffic.times <= period]
    if period <= FULL_LIMIT_S:
        return [Segment(times, 1.0, 0.0, period, "all")], "simulated in full"
    offset = (traffic.first_epoch_s or 0.0) % DAY_S  # calendar days when the file has a wall clock
    day_of = np.floor((times + offset) / DAY_S).astype(int)
    days, volumes = np.unique(day_of, return_counts=True)
    order = np.argsort(volumes, kind="stable")
    groups = [g for g in np.array_split(order, min(config.representative_days, days.size)) if g.size]
    segments = []
    for rank, group in enumerate(groups):
        pick = group[-1] if rank == len(groups) - 1 else group[group.size // 2]  # the top group shows its peak day
        day = days[pick]
        start = day * DAY_S - offset
        inside = (times >= start - WARMUP_S) & (times < start + DAY_S)
        chosen = times[inside] - start
        weight = float(volumes[group].sum()) / float(volumes[pick])
        segments.append(Segment(chosen, weight, 0.0, DAY_S, f"day {int(day - days[0]) + 1} ({volumes[pick]:,} requests, "
                                                             f"stands for {group.size} day(s))"))
    return segments, (f"{len(segments)} representative day(s) of {days.size}, by volume (each with the hour before it "
                      "as warm-up), weighted so every day's requests count")


def _quiet(message: str, fraction: float | None = None) -> None:
    pass


def peak_rate(arrivals: np.ndarray, window_s: float = PEAK_WINDOW_S) -> float:
    """The busiest ``window_s`` seconds' rate (requests per second)."""
    if arrivals.size == 0:
        return 0.0
    edges = np.arange(arrivals.min(), arrivals.max() + window_s, window_s)
    counts, _ = np.histogram(arrivals, bins=edges if edges.size > 1 else 1)
    return float(counts.max()) / window_s


def size_for_peak(peak_rps: float, fleet: FleetParams) -> int:
    """Instances to carry the peak rate at the planned utilisation: the Cost module's sizing rule."""
    inputs = replace(fleet.prices, server_throughput_rps=fleet.capacity_rps, server_utilisation=fleet.target_utilisation)
    return cost.servers_needed(peak_rps * 3600 * cost.HOURS_PER_MONTH, inputs)


def lambda_params(config: ScenarioConfig, calibration: Calibration) -> LambdaParams:
    """The function as the config runs it; a Lambda option (:class:`local.measure.cost.LambdaOption`) sets its
    architecture, provisioned environments or SnapStart, with a real function's restore figures when the
    calibration has them."""
    limit = config.reserved_concurrency or ACCOUNT_CONCURRENCY
    params = calibration.lambda_params(idle_timeout_s=config.idle_timeout_s, concurrency_limit=limit,
                                       provisioned=config.provisioned,
                                       api_timeout_s=API_GATEWAY_TIMEOUT_S if config.api_gateway else None,
                                       prices=replace(config.prices, api_gateway=config.api_gateway))
    if config.lambda_option is None:
        return params
    return for_option(params, config.lambda_option, restore_ms=calibration.lambda_.restore_ms,
                      billed_restore_ms=calibration.lambda_.billed_restore_ms)


def instance_for(config: ScenarioConfig) -> cost.InstanceType:
    """The instance type chosen, at the price given if one was."""
    instance = cost.instance_type(config.instance_type)
    if config.server_hourly_usd is not None and config.server_hourly_usd != instance.hourly_usd:
        instance = replace(instance, hourly_usd=config.server_hourly_usd, source="given (--server-hourly-usd)")
    return instance


def fleet_params(config: ScenarioConfig, calibration: Calibration, segments: list[Segment]) -> tuple[FleetParams, str]:
    """The fleet, sized for the peak unless given (and where the autoscaler starts)."""
    base = calibration.fleet_params(instance=instance_for(config), smt_gain=config.smt_gain, workers=config.workers,
                                    queue=config.queue, queue_timeout_s=config.queue_timeout_s,
                                    target_utilisation=config.target_utilisation, boot_s=config.boot_s,
                                    max_instances=config.max_instances, prices=config.prices,
                                    platform="ec2" if config.platform == "auto" else config.platform,
                                    load_balancer=config.load_balancer, request_bytes=config.request_bytes,
                                    response_bytes=config.response_bytes)
    everything = np.concatenate([s.arrivals[s.arrivals >= s.measure_from] for s in segments])
    peak = peak_rate(everything)
    sized = size_for_peak(peak, base)
    if config.autoscale:
        first = everything[everything < everything.min() + 600] if everything.size else everything
        start = config.instances or max(1, size_for_peak(first.size / 600.0, base))
        fleet = replace(base, instances=start, autoscale=True, max_instances=max(config.max_instances, start))
        label = (f"autoscaled {base.instance.name} fleet (target {config.target_utilisation:.0%} busy, boot "
                 f"{config.boot_s:g} s), {base.lanes} lane(s) each")
        return fleet, label
    count = config.instances or sized
    why = "given" if config.instances else f"sized for the peak minute, {peak:.3g} req/s, at {config.target_utilisation:.0%} busy"
    return replace(base, instances=count), f"{count} x {base.instance.name}, {base.lanes} lane(s) each ({why})"


def price_platforms(fleet: FleetParams, parts: list[tuple[SideRun, float]], choice: str) -> tuple[str, dict[str, float]]:
    """Each simulated piece priced on EC2 and on Fargate (the same instance-seconds); every piece's
    ``cost`` set to the platform chosen (``choice``, or the cheaper when ``"auto"``). Returns it and
    each platform's USD for the pieces, weighted."""
    totals = {platform: sum(w * sum(fleet_cost(run, replace(fleet, platform=platform)).values()) for run, w in parts)
              for platform in PLATFORMS}
    chosen = min(PLATFORMS, key=lambda k: totals[k]) if choice == "auto" else choice
    for run, _ in parts:
        run.cost = fleet_cost(run, replace(fleet, platform=chosen))
    return chosen, totals


def minute_rates(segments: list[Segment]) -> tuple[float, float]:
    """The quietest and the busiest minute's rate (requests per second) over the measured periods."""
    lows, highs = [], []
    for segment in segments:
        counted = segment.arrivals[segment.arrivals >= segment.measure_from]
        minutes = max(1, int((segment.end_s - segment.measure_from) // PEAK_WINDOW_S))
        counts, _ = np.histogram(counted, bins=segment.measure_from + PEAK_WINDOW_S * np.arange(minutes + 1))
        lows.append(counts.min() / PEAK_WINDOW_S)
        highs.append(counts.max() / PEAK_WINDOW_S)
    return min(lows), max(highs)


def deployment_for(config: ScenarioConfig, calibration: Calibration, fleet: FleetParams, platform: str,
                   segments: list[Segment], peak_instances: int) -> FleetDeployment:
    """What to deploy for this traffic: the instance type (or a Fargate task of its size), at least what
    the quietest minute needs at the target and at most what the busiest needs (or the simulation used),
    target tracking at the planned utilisation, a drain as long as a request may wait."""
    low, high = minute_rates(segments)
    least = min(size_for_peak(low, fleet), config.max_instances)
    most = max(size_for_peak(high, fleet), peak_instances, least)
    instance = fleet.instance
    return FleetDeployment(platform=platform, instance_type=instance.name if platform == "ec2" else "fargate",
                           vcpus=instance.vcpus, memory_mib=instance.memory_mib, lanes=fleet.lanes,
                           min_instances=least, max_instances=most,
                           target_cpu_pct=round(100.0 * config.target_utilisation, 1),
                           drain_s=math.ceil(config.queue_timeout_s), boot_s=config.boot_s, max_queue=config.queue,
                           model=Path(calibration.model).name)


def run_scenario(config: ScenarioConfig, calibration: Calibration, *, on_progress: Say | None = None,
                 buckets: int = 240) -> ScenarioResult:
    """Simulate the traffic through Lambda and the fleet and summarise both (and the verdict)."""
    say = on_progress or _quiet
    began = time.perf_counter()
    segments, method = plan(config)
    lam = lambda_params(config, calibration)
    fleet, fleet_label = fleet_params(config, calibration, segments)
    total = sum(s.arrivals.size for s in segments) * 2
    done = [0]

    def progress(side: str, base: int) -> Callable[[int, int], None]:
        def update(i: int, n: int) -> None:
            say(f"{side}: {i:,} of {n:,} requests simulated", (base + i) / max(total, 1))
        return update

    runs: dict[str, list[tuple[SideRun, float]]] = {"lambda": [], "server": []}
    for segment in segments:
        for side in ("lambda", "server"):
            tell = progress(side, done[0])
            if side == "lambda":
                run = simulate_lambda(segment.arrivals, lam, seed=config.seed, measure_from=segment.measure_from,
                                      end_s=segment.end_s, on_progress=tell)
            else:
                run = simulate_fleet(segment.arrivals, fleet, seed=config.seed, measure_from=segment.measure_from,
                                     end_s=segment.end_s, on_progress=tell)
            done[0] += segment.arrivals.size
            runs[side].append((run, segment.weight))
    option = config.lambda_option
    lambda_label = (f"Lambda {lam.memory_mb} MB, " + (option.describe() if option else config.prices.architecture)
                    + (f", {config.provisioned} provisioned" if config.provisioned and not option else "")
                    + (f", reserved concurrency {config.reserved_concurrency}" if config.reserved_concurrency else ""))
    platform, platform_usd = price_platforms(fleet, runs["server"], config.platform)
    if platform == "fargate":
        fleet_label = fleet_label.replace(f"x {fleet.instance.name},", f"x Fargate task ({fleet.instance.vcpus} vCPU, "
                                          f"{fleet.instance.memory_mib // 1024} GB),")
    single = len(segments) == 1 and segments[0].weight == 1.0
    sides = {side: (summarise(parts[0][0], label) if single else combine(parts, label, config.period_s))
             for side, parts, label in (("lambda", runs["lambda"], lambda_label), ("server", runs["server"], fleet_label))}
    simulated = sum(s.end_s - s.measure_from for s in segments)
    traffic = config.traffic.to_dict() if isinstance(config.traffic, Shape) else {
        "source": config.traffic.source, "format": config.traffic.format, "description": config.traffic.describe()}
    assumptions = {"idle_timeout_s": config.idle_timeout_s, "idle_timeout_source": IDLE_TIMEOUT_SOURCE,
                   "concurrency_limit": lam.concurrency_limit, "scaling": SCALING_SOURCE,
                   "api_timeout_s": lam.api_timeout_s, "provisioned": lam.provisioned,
                   "lambda_option": option.name if option else None, "snapstart": lam.snapstart,
                   "snapstart_prices": cost.SNAPSTART_PRICES_SOURCE if lam.snapstart else None,
                   "provisioned_prices": cost.PROVISIONED_PRICES_DATE, "prices": cost.PRICES_DATE,
                   "server_hourly_usd": fleet.instance.hourly_usd, "instance_type": fleet.instance.describe(),
                   "instance_price_source": fleet.instance.source, "cpu_layout": cost.CPU_LAYOUT_SOURCE,
                   "smt_gain": config.smt_gain, "smt_gain_source": SMT_GAIN_SOURCE,
                   "fleet_prices": cost.FLEET_PRICES_DATE, "fargate_prices": cost.FARGATE_PRICES_SOURCE,
                   "load_balancer_prices": cost.ALB_PRICES_SOURCE,
                   "request_bytes": config.request_bytes, "response_bytes": config.response_bytes}
    server = sides["server"]
    month = results_month(config.period_s)
    dominant = [load_balancer_cost(run, fleet)["dominant"] for run, _ in runs["server"]] if config.load_balancer else []
    server_cost = {"platform": platform,
                   "instances": round(server.cost_breakdown.get("instances", 0.0) * month, 4),
                   "load_balancer": round(server.cost_breakdown.get("load_balancer", 0.0) * month, 4),
                   "total": server.cost_per_month_usd,
                   **{f"{k}_per_month_usd": round(v * month, 4) for k, v in platform_usd.items()},
                   "load_balancer_dominant": max(set(dominant), key=dominant.count) if dominant else "none"}
    deployment = deployment_for(config, calibration, fleet, platform, segments, server.peak_instances)
    lambda_deployment = {"memory_mb": lam.memory_mb, "architecture": config.prices.architecture,
                         "precision": "int8" if Path(calibration.model).name.endswith(".int8.onnx") else "fp32",
                         "provisioned": config.provisioned, "reserved_concurrency": config.reserved_concurrency,
                         "api_gateway": config.api_gateway, "peak_concurrency": sides["lambda"].peak_concurrency}
    result = ScenarioResult(
        name=config.name or (config.traffic.name if isinstance(config.traffic, Shape) else Path(config.traffic.source).name),
        traffic={**traffic, "description": config.describe()}, duration_s=config.period_s, simulated_s=simulated,
        method=method, lambda_=sides["lambda"], server=sides["server"],
        calibration={**calibration.summary(), "assumptions": assumptions},
        verdict=verdict(sides["lambda"], sides["server"]), deployment=asdict(deployment),
        lambda_deployment=lambda_deployment, server_cost=server_cost)
    biggest = max(range(len(segments)), key=lambda k: segments[k].weight * segments[k].arrivals.size)
    result.series = {side: time_series(runs[side][biggest][0], buckets) for side in ("lambda", "server")}
    result.wall_s = time.perf_counter() - began
    say(f"simulated {total // 2:,} requests per side in {result.wall_s:.1f} s", 1.0)
    return result


# --- the built-in shapes side by side -------------------------------------------------------------

# A month of each: what the reference project called sporadic, bursty, daily and consistently high.
COMPARE = (
    ("sparse", Shape("sparse", every_s=30.0), "one request every 30 s (the reference project's monitor)"),
    ("spikes", Shape("spikes", rate=0.5, spike_every_s=7200.0, spike_length_s=120.0, spike_multiplier=40.0),
     "0.5 req/s with 2-minute bursts of 20 req/s every 2 hours"),
    ("diurnal", Shape("diurnal", rate=2.0, peak_to_trough=8.0), "2 req/s on average, the peak 8x the trough"),
    ("steady", Shape("steady", rate=20.0), "20 req/s around the clock"),
)
MONTH_DAYS = 30


def compare_shapes(calibration: Calibration, base: ScenarioConfig | None = None, *,
                   on_progress: Say | None = None) -> list[ScenarioResult]:
    """Every built-in shape for a month, with the same calibration and settings."""
    say = on_progress or _quiet
    results = []
    for index, (name, shape, _) in enumerate(COMPARE):
        config = replace(base or ScenarioConfig(traffic=shape, duration_s=MONTH_DAYS * DAY_S), traffic=shape, name=name,
                         duration_s=MONTH_DAYS * DAY_S)
        def step(message: str, fraction: float | None = None, i: int = index) -> None:
            say(f"{COMPARE[i][0]}: {message}", None if fraction is None else (i + fraction) / len(COMPARE))

        result = run_scenario(config, calibration, on_progress=step)
        result.traffic["summary"] = COMPARE[index][2]
        results.append(result)
    return results


def results_month(period_s: float) -> float:
    """Months in ``period_s`` to the Cost module's month, inverted: a period's USD times this is a month's."""
    return cost.HOURS_PER_MONTH * 3600.0 / period_s if period_s else 0.0


def month_requests(result: ScenarioResult) -> float:
    return result.lambda_.requests * cost.HOURS_PER_MONTH * 3600 / result.duration_s if result.duration_s else math.nan
