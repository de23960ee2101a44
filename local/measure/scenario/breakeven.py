"""Which option at which rate: every way to run the model on Lambda and the fleet, simulated at request rates
from one an hour to hundreds a second, steady and bursty, with where the cheapest one changes (issue 22,
point 4).

Each point is the scenario's own simulation (:func:`~.lambda_sim.simulate_lambda`,
:func:`~.fleet_sim.simulate_fleet`, the fleet sized and priced by :mod:`.run`), run for a representative
window and scaled to a month as ``scenario --duration 30d`` scales a day:

- the window holds about ``target_requests`` arrivals (a stable p99), at least :data:`MIN_WINDOW_S` and
  whole spike cycles, at most :data:`MAX_WINDOW_S`; one request an hour is simulated over a year;
- Lambda's side starts ``idle timeout + 60 s`` early: an environment idle longer is gone, so the window
  starts with the environments the traffic keeps; the fleet (a fixed size) a minute early;
- costs are the window's times a month over the window: exact in expectation for a steady or periodic
  load; the month's spread is not seen.

Bursty traffic is the ``spikes`` shape scaled to the mean rate: bursts of ``spike_length_s`` every
``spike_every_s`` whose rate over the baseline makes the busiest rate ``burstiness`` times the mean.

Each Lambda option is a :class:`LambdaOption` record (architecture, package, provisioned concurrency,
SnapStart, its cold start's latency and prices) turned into the one simulation's
:class:`~.params.LambdaParams` by :func:`lambda_params_for`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np

from local.measure import cost
from local.measure.scenario.calibrate import Calibration
from local.measure.scenario.fleet_sim import fleet_cost, simulate_fleet
from local.measure.scenario.lambda_sim import simulate_lambda
from local.measure.scenario.params import PLATFORMS, Distribution, FleetParams, LambdaParams
from local.measure.scenario.results import MONTH_S, SideRun, failed, summarise
from local.measure.scenario.run import ScenarioConfig, Segment, fleet_params, instance_for, lambda_params, peak_rate
from local.measure.scenario.traffic import DAY_S, Shape, format_duration

DEFAULT_RATES = "1/3600:500:25"  # one request an hour to the rate of tens of instances
DEFAULT_TARGET_REQUESTS = 20_000  # per point: p99 is then the 200th-slowest request
MIN_WINDOW_S = 600.0  # the fleet's sizing looks at the busiest minute: a window holds ten
MAX_WINDOW_S = 365 * DAY_S  # one request an hour: 8,760 simulated
FLEET_WARMUP_S = 60.0
FAILURE_LIMIT = 0.001  # an option refusing more than this share of requests is not offered as the cheapest
Say = Callable[[str, "float | None"], None]

# --- SnapStart: PLACEHOLDERS until the zip branch's figures are wired in ----------------------------------------
# The zip branch measures the restore on the emulator (and takes a real function's REPORT "Restore Duration")
# and states SnapStart's cache and restore charges in local/measure/cost.py with their sources. Until it is
# merged these stand in, named so the lead can replace each with its figure:
# - what a client waits for a restore before its request runs (AWS: "as low as sub-second" for Python);
SNAPSTART_RESTORE_MS_PLACEHOLDER = 500.0
# - the restore's billed duration (Python's REPORT line bills "Restore Duration" like INIT);
SNAPSTART_RESTORE_BILLED_MS_PLACEHOLDER = 500.0
# - the snapshot cache, per GB of memory per second the published version is active (us-east-1, x86 and arm64);
SNAPSTART_CACHE_USD_PER_GB_S_PLACEHOLDER = 0.0000015046
# - each restore, per GB of memory restored (us-east-1).
SNAPSTART_RESTORE_USD_PER_GB_PLACEHOLDER = 0.0001397998
SNAPSTART_SOURCE = ("PLACEHOLDERS (local/measure/scenario/breakeven.py, SNAPSTART_*_PLACEHOLDER): restore 500 ms, "
                    "cache $0.0000015046/GB-s, restore $0.0001397998/GB as read from AWS's Lambda pricing page, not "
                    "yet the zip branch's measured restore and sourced charges; the zip's warm requests assumed as "
                    "fast as the image's")
ARM64_SPEED_ASSUMPTION = ("arm64's latencies are x86_64's as measured here (its speed is ASSUMED equal: nothing here "
                          "times a Graviton); only its price differs")


@dataclass(frozen=True)
class LambdaOption:
    """One way to run the function: a small record the one Lambda simulation is parameterised by.

    ``provisioned``: environments kept initialised (0: none; None: sized for each rate's busiest minute at
    the fleet's target utilisation, Little's law). ``cold_ms``: what a cold start's request takes (None: the
    calibration's; with SnapStart, a warm request plus ``restore_ms``). ``init_billed_ms``: what a cold
    start bills besides its request (None: the calibration's INIT, which container images are billed; with
    SnapStart, the restore). ``gb_second_usd``: None for the architecture's price."""

    key: str
    name: str
    architecture: str = "x86_64"
    package: str = "image"  # "image" (container) or "zip"
    provisioned: int | None = 0
    snapstart: bool = False
    cold_ms: Distribution | None = None
    init_billed_ms: float | None = None
    restore_ms: Distribution | None = None  # SnapStart: a restore's latency before the request runs
    gb_second_usd: float | None = None
    snapstart_cache_usd_per_gb_s: float = 0.0
    snapstart_restore_usd_per_gb: float = 0.0
    assumption: str = ""

    def __post_init__(self) -> None:
        if self.package not in ("image", "zip"):
            raise ValueError(f"package must be image or zip, got {self.package!r}")
        if self.architecture not in cost.LAMBDA_GB_SECOND_USD:
            raise ValueError(f"architecture must be one of {sorted(cost.LAMBDA_GB_SECOND_USD)}, got {self.architecture!r}")
        # https://docs.aws.amazon.com/lambda/latest/dg/snapstart.html: not with provisioned concurrency
        if self.snapstart and self.provisioned != 0:
            raise ValueError("SnapStart cannot be combined with provisioned concurrency")
        if self.snapstart and self.restore_ms is None and self.cold_ms is None:
            raise ValueError("a SnapStart option needs its restore latency (restore_ms) or its cold start (cold_ms)")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("cold_ms", "restore_ms"):
            value = getattr(self, key)
            data[key] = value.to_dict() if value is not None else None
        return data


def default_options() -> tuple[LambdaOption, ...]:
    """The options priced today: the container image on x86_64 and arm64, SnapStart (zip, x86_64; its restore
    and charges are the placeholders above), and provisioned concurrency sized for each rate."""
    return (
        LambdaOption("x86-image", "Lambda x86 image"),
        LambdaOption("arm64-image", "Lambda arm64 image", architecture="arm64", assumption=ARM64_SPEED_ASSUMPTION),
        LambdaOption("snapstart", "Lambda SnapStart (zip)", package="zip", snapstart=True,
                     restore_ms=Distribution.constant(SNAPSTART_RESTORE_MS_PLACEHOLDER, "placeholder"),
                     init_billed_ms=SNAPSTART_RESTORE_BILLED_MS_PLACEHOLDER,
                     snapstart_cache_usd_per_gb_s=SNAPSTART_CACHE_USD_PER_GB_S_PLACEHOLDER,
                     snapstart_restore_usd_per_gb=SNAPSTART_RESTORE_USD_PER_GB_PLACEHOLDER, assumption=SNAPSTART_SOURCE),
        LambdaOption("provisioned", "Lambda provisioned (image)", provisioned=None,
                     assumption="provisioned concurrency sized for each rate's busiest minute at the target utilisation"),
    )


def shifted(distribution: Distribution, ms: Distribution, source: str) -> Distribution:
    """Every latency of ``distribution`` plus ``ms``'s median (a restore before a warm request)."""
    extra = ms.p50_ms
    if distribution.samples:
        return Distribution(samples=tuple(s + extra for s in distribution.samples), source=source)
    return Distribution(median_ms=(distribution.median_ms or 0.0) + extra,
                        p90_ms=(distribution.p90_ms or distribution.median_ms or 0.0) + extra, source=source)


def provisioned_for(peak_rps: float, warm_ms: Distribution, utilisation: float) -> int:
    """Environments the busiest minute keeps busy (Little's law: rate x mean duration) at the target utilisation."""
    return max(1, math.ceil(peak_rps * warm_ms.mean_ms / 1000.0 / utilisation - 1e-9))


def lambda_params_for(option: LambdaOption, base: LambdaParams, *, peak_rps: float, utilisation: float) -> LambdaParams:
    """The one simulation's parameters for this option (the calibration's latencies as ``base``)."""
    cold = option.cold_ms
    if cold is None and option.restore_ms is not None:
        cold = shifted(base.warm_ms, option.restore_ms, f"a warm request after a SnapStart restore ({option.restore_ms.source})")
    provisioned = option.provisioned if option.provisioned is not None else provisioned_for(peak_rps, base.warm_ms, utilisation)
    prices = replace(base.prices, architecture=option.architecture, gb_second_usd=option.gb_second_usd)
    return replace(base, cold_ms=cold or base.cold_ms,
                   init_ms=option.init_billed_ms if option.init_billed_ms is not None else base.init_ms,
                   provisioned=min(provisioned, base.concurrency_limit), prices=prices)


def snapstart_charges(option: LambdaOption, run: SideRun, memory_mb: int) -> dict[str, float]:
    """SnapStart's own charges for the run's measured period: the cache for every second, each restore per GB."""
    if not option.snapstart:
        return {}
    gb = memory_mb / 1024.0
    restores = int(run.cold[run.counted].sum())
    return {"snapstart_cache": gb * run.duration_s * option.snapstart_cache_usd_per_gb_s,
            "snapstart_restore": restores * gb * option.snapstart_restore_usd_per_gb}


# --- traffic ------------------------------------------------------------------------------------------------


def bursty_shape(mean_rps: float, burstiness: float, spike_every_s: float = 3600.0, spike_length_s: float = 60.0) -> Shape:
    """``spikes`` with the mean rate ``mean_rps`` and the busiest rate ``burstiness`` x it; 1: steady Poisson."""
    if burstiness < 1:
        raise ValueError(f"burstiness is the peak rate over the mean, at least 1, got {burstiness}")
    if burstiness == 1:
        return Shape("steady", rate=mean_rps)
    share = spike_length_s / spike_every_s
    if burstiness * share >= 1:
        raise ValueError(f"a burst of {format_duration(spike_length_s)} every {format_duration(spike_every_s)} can make "
                         f"the peak at most {1 / share:.3g}x the mean, not {burstiness:g}x: shorten the bursts or space them out")
    multiplier = burstiness * (1 - share) / (1 - burstiness * share)
    baseline = mean_rps / (1 + (multiplier - 1) * share)
    return Shape("spikes", rate=baseline, spike_every_s=spike_every_s, spike_length_s=spike_length_s,
                 spike_multiplier=multiplier)


def window_for(shape: Shape, target_requests: int) -> float:
    """Seconds to simulate at this shape's mean rate: about ``target_requests``, whole cycles of a bursty one."""
    cycle = shape.spike_every_s if shape.name == "spikes" else 0.0
    window = min(MAX_WINDOW_S, max(MIN_WINDOW_S, cycle, target_requests / shape.mean_rate))
    return math.ceil(window / cycle - 1e-9) * cycle if cycle else window


def parse_rates(text: str) -> list[float]:
    """``LOW:HIGH:N`` (each rate a number or a fraction like ``1/3600``) -> N rates evenly spaced on a log scale."""
    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        low, high, points = float(Fraction(parts[0].strip())), float(Fraction(parts[1].strip())), int(parts[2])
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"rates are LOW:HIGH:N, e.g. 1/3600:500:25 (requests per second), got {text!r}") from None
    if not 0 < low < high or not 2 <= points <= 200:
        raise ValueError(f"rates need 0 < LOW < HIGH and 2 to 200 points, got {text!r}")
    return [float(r) for r in np.geomspace(low, high, points)]


# --- results ------------------------------------------------------------------------------------------------


@dataclass
class Point:
    """One option at one rate."""

    rate_rps: float
    cost_per_month_usd: float
    p50_ms: float | None
    p99_ms: float | None
    label: str  # what runs: "2 x c7i.large", "Lambda arm64 image, 3008 MB", "... 4 provisioned"
    requests: int
    refused_pct: float
    cold_start_pct: float
    cost_breakdown: dict[str, float] = field(default_factory=dict)  # USD per month by item
    instances: int = 0  # the fleet's size (0 for Lambda)


@dataclass
class Crossover:
    """Where the cheapest option changes: ``below`` is cheapest under ``rate_rps``, ``above`` over it."""

    rate_rps: float
    below: str
    above: str
    between: tuple[float, float]  # the grid's rates on either side


@dataclass
class Sweep:
    """Every option over the rates for one kind of traffic (steady, or with the chosen burstiness)."""

    traffic: str
    burstiness: float
    rates: list[float]
    names: dict[str, str]  # option key -> its name
    points: dict[str, list[Point]]  # option key -> one point per rate
    cheapest: list[str]  # option key per rate
    crossovers: list[Crossover]
    words: str
    windows_s: list[float] = field(default_factory=list)

    def point(self, key: str, rate: float) -> Point:
        return self.points[key][_index(self.rates, rate)]

    def line_at(self, rate: float) -> str:
        """One line for a user's rate: the cheapest option there, its month and its p99, and the runner-up."""
        i = _index(self.rates, rate)
        best = self.cheapest[i]
        ranked = sorted((k for k in self.points if k != best and _eligible(self.points[k][i])),
                        key=lambda k: self.points[k][i].cost_per_month_usd)
        line = f"At {rate_text(self.rates[i])} ({self.traffic}): {self._say(best, i)} is cheapest"
        if ranked:
            line += f"; next {self._say(ranked[0], i)}"
        return line + "."

    def _say(self, key: str, i: int) -> str:
        p = self.points[key][i]
        who = self.names[key] + (f" ({p.label})" if p.instances else "")
        return f"{who}, {money(p.cost_per_month_usd)} a month, p99 {ms_text(p.p99_ms)}"

    def to_dict(self) -> dict[str, Any]:
        return {"traffic": self.traffic, "burstiness": self.burstiness, "rates_rps": self.rates, "names": self.names,
                "points": {k: [asdict(p) for p in v] for k, v in self.points.items()}, "cheapest": self.cheapest,
                "crossovers": [asdict(c) for c in self.crossovers], "words": self.words, "windows_s": self.windows_s}


@dataclass
class BreakevenResult:
    sweeps: list[Sweep]  # steady first, then bursty when a burstiness over 1 was asked
    options: list[dict[str, Any]]
    fleet: dict[str, Any]
    calibration: dict[str, Any]
    assumptions: list[str]
    asked_rate: float | None = None
    wall_s: float = 0.0

    def lines_at(self, rate: float) -> list[str]:
        return [sweep.line_at(rate) for sweep in self.sweeps]

    def to_dict(self) -> dict[str, Any]:
        data = {"sweeps": [s.to_dict() for s in self.sweeps], "options": self.options, "fleet": self.fleet,
                "calibration": self.calibration, "assumptions": self.assumptions, "wall_s": round(self.wall_s, 2)}
        if self.asked_rate is not None:
            data["asked_rate_rps"] = self.asked_rate
            data["at_asked_rate"] = self.lines_at(self.asked_rate)
        return data


def money(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 0.995 else f"${usd:.3f}" if usd >= 0.001 else f"${usd:.5f}"


def ms_text(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def rate_text(rps: float) -> str:
    """0.000278 -> ``1 req/h``; 0.05 -> ``3 req/min``; 14.2 -> ``14 req/s``."""
    if rps < 1 / 60:
        return f"{rps * 3600:.2g} req/h"
    if rps < 1:
        return f"{rps * 60:.2g} req/min"
    return f"{rps:.3g} req/s"


def _index(rates: Sequence[float], rate: float) -> int:
    return int(np.argmin([abs(math.log(r / rate)) for r in rates]))


def _eligible(point: Point) -> bool:
    return point.refused_pct <= 100 * FAILURE_LIMIT


def crossovers(rates: Sequence[float], points: dict[str, list[Point]], cheapest: Sequence[str]) -> list[Crossover]:
    """Where the cheapest option changes between two grid rates: the rate where the two options' costs meet,
    interpolated on the log-log chart between those rates."""
    found = []
    for i in range(len(rates) - 1):
        a, b = cheapest[i], cheapest[i + 1]
        if a == b:
            continue
        lo, hi = math.log(rates[i]), math.log(rates[i + 1])
        before, after = (math.log(max(points[a][j].cost_per_month_usd, 1e-12) / max(points[b][j].cost_per_month_usd, 1e-12))
                         for j in (i, i + 1))
        share = before / (before - after) if before != after else 0.5
        share = min(1.0, max(0.0, share))
        found.append(Crossover(math.exp(lo + share * (hi - lo)), a, b, (rates[i], rates[i + 1])))
    return found


def words(names: dict[str, str], rates: Sequence[float], points: dict[str, list[Point]], cheapest: Sequence[str],
          found: Sequence[Crossover]) -> str:
    """The crossovers written out: "below 14 req/s Lambda arm64 image is cheapest; above it the fleet on EC2 (2 x c7i.large)"."""
    if not cheapest:
        return "no rate simulated"
    runs: list[tuple[str, int, int]] = []  # (option, first index, last index)
    for i, key in enumerate(cheapest):
        if runs and runs[-1][0] == key:
            runs[-1] = (key, runs[-1][1], i)
        else:
            runs.append((key, i, i))

    def who(key: str, first: int, last: int) -> str:
        labels = [points[key][i] for i in range(first, last + 1)]
        if not labels[0].instances:
            return names[key]
        sizes = sorted({p.instances for p in labels})
        kind = labels[0].label.split(" x ", 1)[1]
        count = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}"
        return f"{names[key]} ({count} x {kind})"

    if len(runs) == 1:
        key, first, last = runs[0]
        return (f"from {rate_text(rates[0])} to {rate_text(rates[-1])} {who(key, first, last)} is cheapest at every "
                "rate simulated")
    parts = []
    for n, (key, first, last) in enumerate(runs):
        if n == 0:
            parts.append(f"below {rate_text(found[0].rate_rps)} {who(key, first, last)} is cheapest")
        elif n == len(runs) - 1:
            parts.append(f"above {rate_text(found[n - 1].rate_rps)} {who(key, first, last)}")
        else:
            parts.append(f"from {rate_text(found[n - 1].rate_rps)} to {rate_text(found[n].rate_rps)} {who(key, first, last)}")
    return "; ".join(parts)


# --- the loop -----------------------------------------------------------------------------------------------


def _quiet(message: str, fraction: float | None = None) -> None:
    pass


def _point(rate: float, run: SideRun, label: str, instances: int = 0) -> Point:
    side = summarise(run, label)
    month = MONTH_S / run.duration_s
    return Point(rate, side.cost_per_month_usd, side.p50_ms, side.p99_ms, label, side.requests,
                 round(100.0 * failed(side) / side.requests, 3) if side.requests else 0.0, side.cold_start_pct,
                 {k: round(v * month, 4) for k, v in run.cost.items()}, instances)


def sweep(calibration: Calibration, base: ScenarioConfig, rates: Sequence[float], *, burstiness: float = 1.0,
          options: Sequence[LambdaOption] | None = None, platforms: Sequence[str] = PLATFORMS,
          target_requests: int = DEFAULT_TARGET_REQUESTS, on_progress: Say | None = None) -> Sweep:
    """Every option at every rate for one kind of traffic. ``base`` holds the fleet's and the function's
    settings (instance type, SMT gain, load balancer, memory, API Gateway, prices) as ``scenario`` takes them;
    its traffic gives the bursts' length and spacing when it is a ``spikes`` shape."""
    say = on_progress or _quiet
    chosen = tuple(options) if options is not None else default_options()
    spikes = base.traffic if isinstance(base.traffic, Shape) and base.traffic.name == "spikes" else Shape("spikes")
    names = {o.key: o.name for o in chosen} | {p: f"the fleet on {'EC2' if p == 'ec2' else 'Fargate'}" for p in platforms}
    points: dict[str, list[Point]] = {key: [] for key in names}
    windows = []
    rates = sorted(rates)
    traffic = "steady Poisson" if burstiness == 1 else (
        f"burstiness {burstiness:g}: {format_duration(spikes.spike_length_s)} bursts every "
        f"{format_duration(spikes.spike_every_s)}, Poisson")
    steps = len(rates) * (len(chosen) + 1)
    for r, rate in enumerate(rates):
        shape = bursty_shape(rate, burstiness, spikes.spike_every_s, spikes.spike_length_s)
        window = window_for(shape, target_requests)
        windows.append(window)
        config = replace(base, traffic=shape, duration_s=window, provisioned=0)
        warmup = config.idle_timeout_s + 60.0
        arrivals = shape.arrivals(window, base.seed + r, start_s=-warmup)
        measured = arrivals[arrivals >= 0]
        peak = peak_rate(measured) if measured.size else rate
        lam = lambda_params(config, calibration)
        for o, option in enumerate(chosen):
            say(f"{traffic}, {rate_text(rate)}: {option.name} ({format_duration(window)} simulated)",
                (r * (len(chosen) + 1) + o) / steps)
            params = lambda_params_for(option, lam, peak_rps=peak, utilisation=base.target_utilisation)
            run = simulate_lambda(arrivals, params, seed=base.seed, measure_from=0.0, end_s=window)
            run.cost.update(snapstart_charges(option, run, params.memory_mb))
            label = (f"{option.name}, {params.memory_mb} MB"
                     + (f", {params.provisioned} provisioned" if params.provisioned else ""))
            points[option.key].append(_point(rate, run, label))
        say(f"{traffic}, {rate_text(rate)}: the fleet", (r * (len(chosen) + 1) + len(chosen)) / steps)
        segment = Segment(arrivals[arrivals >= -FLEET_WARMUP_S], 1.0, 0.0, window, "window")
        fleet, _ = fleet_params(config, calibration, [segment])
        run = simulate_fleet(segment.arrivals, fleet, seed=base.seed, measure_from=0.0, end_s=window)
        for platform in platforms:
            priced: FleetParams = replace(fleet, platform=platform)
            run.cost = fleet_cost(run, priced)
            kind = fleet.instance.name if platform == "ec2" else (
                f"Fargate task ({fleet.instance.vcpus} vCPU, {fleet.instance.memory_mib // 1024} GB)")
            points[platform].append(_point(rate, run, f"{fleet.instances} x {kind}", fleet.instances))
    cheapest = []
    for i in range(len(rates)):
        eligible = [k for k in points if _eligible(points[k][i])] or list(points)
        cheapest.append(min(eligible, key=lambda k: points[k][i].cost_per_month_usd))
    found = crossovers(rates, points, cheapest)
    say(f"{traffic}: {words(names, rates, points, cheapest, found)}", 1.0)
    return Sweep(traffic, burstiness, list(rates), names, points, cheapest, found,
                 words(names, rates, points, cheapest, found), windows)


def breakeven(calibration: Calibration, base: ScenarioConfig, rates: Sequence[float], *, burstiness: float | None = None,
              rate: float | None = None, options: Sequence[LambdaOption] | None = None,
              platforms: Sequence[str] = PLATFORMS, target_requests: int = DEFAULT_TARGET_REQUESTS,
              on_progress: Say | None = None) -> BreakevenResult:
    """The break-even sweep: steady Poisson, and with ``burstiness`` when it is over 1; ``rate`` (a user's)
    is simulated too, so its line reads from a point of its own."""
    say = on_progress or _quiet
    began = time.perf_counter()
    grid = sorted({*rates, *((rate,) if rate else ())})
    chosen = tuple(options) if options is not None else default_options()
    kinds = [1.0] + ([float(burstiness)] if burstiness and burstiness > 1 else [])
    sweeps = []
    for k, b in enumerate(kinds):
        def step(message: str, fraction: float | None = None, k: int = k) -> None:
            say(message, None if fraction is None else (k + fraction) / len(kinds))

        sweeps.append(sweep(calibration, base, grid, burstiness=b, options=chosen, platforms=platforms,
                            target_requests=target_requests, on_progress=step))
    assumptions = [f"prices: Lambda {cost.PRICES_DATE}; provisioned {cost.PROVISIONED_PRICES_DATE}; fleet "
                   f"{cost.FLEET_PRICES_DATE}",
                   f"each rate simulated for a window of about {target_requests:,} requests (at least "
                   f"{format_duration(MIN_WINDOW_S)}, whole burst cycles, at most {format_duration(MAX_WINDOW_S)}) and "
                   "scaled to a month; Lambda's side warmed up for its idle timeout first",
                   "the fleet sized for each rate's busiest minute at the target utilisation, as `scenario` sizes it",
                   f"options refusing more than {FAILURE_LIMIT:.1%} of requests are not called cheapest"]
    assumptions += sorted({o.assumption for o in chosen if o.assumption})
    fleet = {"instance_type": instance_for(base).describe(), "platforms": list(platforms),
             "target_utilisation": base.target_utilisation, "load_balancer": base.load_balancer, "smt_gain": base.smt_gain}
    return BreakevenResult(sweeps, [o.to_dict() for o in chosen], fleet, calibration.summary(), assumptions,
                           asked_rate=rate, wall_s=time.perf_counter() - began)
