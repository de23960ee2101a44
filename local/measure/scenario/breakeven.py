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

Each Lambda option is a :class:`local.measure.cost.LambdaOption`, turned into the simulation's
:class:`~.params.LambdaParams` as ``scenario --lambda-option`` turns it (:func:`~.run.lambda_params`:
:func:`~.params.for_option` with the calibration's restore figures), and costed by the simulation's one
cost (SnapStart's restores and cache included); a :class:`BreakevenOption` adds its name on the chart.
SnapStart is left out, saying why, when the model's zip package would not fit Lambda's limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lambda_onnx.canary import canary_path
from lambda_onnx.sidecar import sidecar_path
from local.measure import cost
from local.measure.scenario.calibrate import Calibration
from local.measure.scenario.fleet_sim import fleet_cost, simulate_fleet
from local.measure.scenario.lambda_sim import simulate_lambda
from local.measure.scenario.params import PLATFORMS, Distribution, FleetParams
from local.measure.scenario.results import MONTH_S, SideRun, failed, money, ms_text, summarise
from local.measure.scenario.run import ScenarioConfig, Segment, fleet_params, instance_for, lambda_params, peak_rate
from local.measure.scenario.traffic import DAY_S, Shape, format_duration

DEFAULT_RATES = "1/3600:500:25"  # one request an hour to the rate of tens of instances
DEFAULT_TARGET_REQUESTS = 20_000  # per point: p99 is then the 200th-slowest request
MIN_WINDOW_S = 600.0  # the fleet's sizing looks at the busiest minute: a window holds ten
MAX_WINDOW_S = 365 * DAY_S  # one request an hour: 8,760 simulated
FLEET_WARMUP_S = 60.0
FAILURE_LIMIT = 0.001  # an option refusing more than this share of requests is not offered as the cheapest
Say = Callable[[str, "float | None"], None]

ARM64_SPEED_ASSUMPTION = ("arm64's latencies are x86_64's as measured here (its speed is ASSUMED equal: nothing here "
                          "times a Graviton); only its price differs")
PROVISIONED_PER_RATE = "provisioned concurrency sized for each rate's busiest minute at the target utilisation"


@dataclass(frozen=True)
class BreakevenOption:
    """One curve of the chart: a Lambda option as ``scenario --lambda-option`` runs it
    (:class:`local.measure.cost.LambdaOption`, turned into the simulation's parameters by
    :func:`~.run.lambda_params`), its name on the chart and what it assumes. ``sized_per_rate``: the
    provisioned option's environments are sized for each rate's busiest minute (:func:`provisioned_for`)
    rather than ``option.provisioned``."""

    option: cost.LambdaOption
    label: str
    assumption: str = ""
    sized_per_rate: bool = False

    @property
    def key(self) -> str:
        return self.option.name

    def at(self, provisioned: int) -> cost.LambdaOption:
        """The option at one rate: with ``provisioned`` environments when sized per rate."""
        return replace(self.option, provisioned=provisioned) if self.sized_per_rate else self.option

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.label, "describe": self.option.describe(),
                "architecture": self.option.architecture, "package": "zip" if self.option.snapstart else "image",
                "snapstart": self.option.snapstart,
                "provisioned": None if self.sized_per_rate else self.option.provisioned, "assumption": self.assumption}


def default_options() -> tuple[BreakevenOption, ...]:
    """Every option of :data:`local.measure.cost.LAMBDA_OPTIONS`: the container image on x86_64 and arm64,
    SnapStart (zip, x86_64) and provisioned concurrency sized for each rate."""
    return (
        BreakevenOption(cost.lambda_option("x86-image"), "Lambda x86 image"),
        BreakevenOption(cost.lambda_option("arm64-image"), "Lambda arm64 image", ARM64_SPEED_ASSUMPTION),
        BreakevenOption(cost.lambda_option("zip-snapstart"), "Lambda SnapStart (zip)"),
        BreakevenOption(cost.lambda_option("provisioned"), "Lambda provisioned (image)", PROVISIONED_PER_RATE,
                        sized_per_rate=True),
    )


def zip_misfit(model: Path | str) -> str | None:
    """Why ``model`` cannot be the zip package's (too big unzipped), or None when it fits or its files are not
    here to weigh: the limit the zip package's build enforces (the Makefile's target; ``tests/helpers/taskroot.py``'s
    ``PackageSize`` shares it), with what the package holds beside the model as measured
    (:func:`local.measure.cost.zip_package_bytes`)."""
    model = Path(model)
    files = [model, sidecar_path(model), canary_path(model)]
    if not files[0].is_file():
        return None
    size = cost.zip_package_bytes(sum(f.stat().st_size for f in files if f.is_file()))
    if size <= cost.ZIP_UNZIPPED_LIMIT_BYTES:
        return None
    return (f"SnapStart left out: {model.name}'s zip package would be about {size / 1e6:.1f} MB unzipped, over "
            f"Lambda's {cost.ZIP_UNZIPPED_LIMIT_BYTES / 1e6:.1f} MB limit (SnapStart needs the zip package; use the "
            "container image, or an INT8 export, which fits)")


def provisioned_for(peak_rps: float, warm_ms: Distribution, utilisation: float) -> int:
    """Environments the busiest minute keeps busy (Little's law: rate x mean duration) at the target utilisation."""
    return max(1, math.ceil(peak_rps * warm_ms.mean_ms / 1000.0 / utilisation - 1e-9))


def restore_source(calibration: Calibration, base: ScenarioConfig, chosen: Sequence[BreakevenOption]) -> str | None:
    """What SnapStart's restore is taken to be, as :func:`~.params.for_option` states it (a real function's
    Restore Duration from the calibration, or the emulator-based estimate), with its prices' source."""
    snap = next((o for o in chosen if o.option.snapstart), None)
    if snap is None:
        return None
    params = lambda_params(replace(base, provisioned=0, lambda_option=snap.option), calibration)
    return (f"{snap.label}: a cold start is a restore ({params.cold_ms.source}; billed {params.init_ms:.0f} ms); the "
            f"zip's warm requests assumed as fast as the image's; {cost.SNAPSTART_PRICES_SOURCE}")


def month_of_cache(run: SideRun, memory_mb: int) -> None:
    """A window stands for its share of a month: SnapStart's cache is the month's (its 3-hour minimum is a
    month's, not a short window's), replacing the window's own charge rather than adding to it."""
    if "snapstart_cache" in run.cost:
        run.cost["snapstart_cache"] = cost.snapstart_cache_usd(memory_mb, MONTH_S) * run.duration_s / MONTH_S


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
          options: Sequence[BreakevenOption] | None = None, platforms: Sequence[str] = PLATFORMS,
          target_requests: int = DEFAULT_TARGET_REQUESTS, on_progress: Say | None = None) -> Sweep:
    """Every option at every rate for one kind of traffic. ``base`` holds the fleet's and the function's
    settings (instance type, SMT gain, load balancer, memory, API Gateway, prices) as ``scenario`` takes them;
    its traffic gives the bursts' length and spacing when it is a ``spikes`` shape."""
    say = on_progress or _quiet
    chosen = tuple(options) if options is not None else default_options()
    spikes = base.traffic if isinstance(base.traffic, Shape) and base.traffic.name == "spikes" else Shape("spikes")
    names = {o.key: o.label for o in chosen} | {p: f"the fleet on {'EC2' if p == 'ec2' else 'Fargate'}" for p in platforms}
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
        image = lambda_params(config, calibration)
        provisioned = min(provisioned_for(peak, image.warm_ms, base.target_utilisation), image.concurrency_limit)
        for o, option in enumerate(chosen):
            say(f"{traffic}, {rate_text(rate)}: {option.label} ({format_duration(window)} simulated)",
                (r * (len(chosen) + 1) + o) / steps)
            params = lambda_params(replace(config, lambda_option=option.at(provisioned)), calibration)
            run = simulate_lambda(arrivals, params, seed=base.seed, measure_from=0.0, end_s=window)
            month_of_cache(run, params.memory_mb)
            label = (f"{option.label}, {params.memory_mb} MB"
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
              rate: float | None = None, options: Sequence[BreakevenOption] | None = None,
              platforms: Sequence[str] = PLATFORMS, target_requests: int = DEFAULT_TARGET_REQUESTS,
              on_progress: Say | None = None) -> BreakevenResult:
    """The break-even sweep: steady Poisson, and with ``burstiness`` when it is over 1; ``rate`` (a user's)
    is simulated too, so its line reads from a point of its own. SnapStart is left out (the assumptions say
    why) when the calibration's model would not fit the zip package."""
    say = on_progress or _quiet
    began = time.perf_counter()
    grid = sorted({*rates, *((rate,) if rate else ())})
    chosen = tuple(options) if options is not None else default_options()
    misfit = zip_misfit(calibration.model) if any(o.option.snapstart for o in chosen) else None
    if misfit:
        chosen = tuple(o for o in chosen if not o.option.snapstart)
        say(misfit, None)
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
    if misfit:
        assumptions.append(misfit)
    restore = restore_source(calibration, base, chosen)
    if restore:
        assumptions.append(restore)
    fleet = {"instance_type": instance_for(base).describe(), "platforms": list(platforms),
             "target_utilisation": base.target_utilisation, "load_balancer": base.load_balancer, "smt_gain": base.smt_gain}
    return BreakevenResult(sweeps, [o.to_dict() for o in chosen], fleet, calibration.summary(), assumptions,
                           asked_rate=rate, wall_s=time.perf_counter() - began)
