"""Traffic: when requests arrive. Built-in shapes, and a user's own arrivals from a file.

Shapes (all Poisson processes unless said otherwise, so bursts happen as they do in real traffic):

- ``steady``: a constant rate;
- ``diurnal``: a day's curve, ``rate`` on average, the peak ``peak_to_trough`` times the trough, the
  trough at the start of each ``period`` (a day by default; shorter for replays);
- ``spikes``: a baseline ``rate`` plus bursts of ``spike_multiplier`` x the rate lasting
  ``spike_length_s``, every ``spike_every_s`` (the first half a period in);
- ``sparse``: one request every ``every_s`` seconds (the PyTorch-on-Lambda project's 1-hour monitor
  sent one every 30 s), optionally jittered by up to ``jitter`` x ``every_s`` either way.

Files (:func:`read_arrivals`): a CSV with one arrival time in seconds per line (header optional;
epoch or relative seconds, the first column if there are several), an API Gateway access log (the
JSON, CLF, CSV or XML formats AWS documents: ``requestTimeEpoch`` or ``requestTime``), or an
Application (or Classic) Load Balancer access log (``request_creation_time``, else ``time``).
Times come back sorted, in seconds from the first arrival.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SHAPES = ("steady", "diurnal", "spikes", "sparse")
DAY_S = 86_400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def parse_duration(text: str | float) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"30d"``, ``"1h30m"`` -> seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        cleaned = str(text).strip().lower().replace(" ", "")
        parts = _DURATION.findall(cleaned)
        if not cleaned or "".join(f"{n}{u}" for n, u in parts) != cleaned:
            raise ValueError(f"{text!r} is not a duration: use seconds or a number with s, m, h or d (e.g. 90s, 15m, 2h, 30d)")
        seconds = sum(float(n) * _UNITS[u or "s"] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """3600 -> ``1 h``; 93 -> ``93 s``; 2.5 days -> ``2.5 d``."""
    for unit, size in (("d", DAY_S), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and (seconds % size == 0 or seconds >= 10 * size or unit == "d"):
            value = seconds / size
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class Shape:
    """A built-in traffic shape and its parameters (rates in requests per second)."""

    name: str = "steady"
    rate: float = 1.0
    peak_to_trough: float = 4.0  # diurnal
    period_s: float = DAY_S  # diurnal
    spike_every_s: float = 3600.0  # spikes
    spike_length_s: float = 60.0
    spike_multiplier: float = 20.0
    every_s: float = 30.0  # sparse
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in SHAPES:
            raise ValueError(f"unknown traffic shape {self.name!r}; built in: {', '.join(SHAPES)}")
        if self.name != "sparse" and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"the rate must be a positive number of requests per second, got {self.rate}")
        if self.peak_to_trough < 1 or self.spike_multiplier < 1:
            raise ValueError("the peak-to-trough ratio and the spike multiplier must be at least 1")
        if min(self.period_s, self.spike_every_s, self.spike_length_s, self.every_s) <= 0:
            raise ValueError("periods and lengths must be positive")
        if self.spike_length_s > self.spike_every_s:
            raise ValueError(f"a spike ({self.spike_length_s:g} s) cannot last longer than the time between spikes "
                             f"({self.spike_every_s:g} s)")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a fraction of the interval between 0 and 1, got {self.jitter}")

    @property
    def mean_rate(self) -> float:
        """The long-run average requests per second."""
        if self.name == "sparse":
            return 1.0 / self.every_s
        if self.name == "spikes":
            return self.rate * (1 + (self.spike_multiplier - 1) * self.spike_length_s / self.spike_every_s)
        return self.rate

    @property
    def peak_rate(self) -> float:
        if self.name == "diurnal":
            return self.rate * 2 * self.peak_to_trough / (self.peak_to_trough + 1)
        if self.name == "spikes":
            return self.rate * self.spike_multiplier
        return self.mean_rate

    @property
    def daily(self) -> bool:
        """Whether one day of it is like any other (so a month can be simulated as a day)."""
        if self.name == "diurnal":
            return DAY_S % self.period_s == 0
        if self.name == "spikes":
            return DAY_S % self.spike_every_s == 0
        return True

    def describe(self) -> str:
        if self.name == "steady":
            return f"steady {self.rate:g} req/s (Poisson)"
        if self.name == "diurnal":
            return (f"diurnal {self.rate:g} req/s on average, peak {self.peak_rate:.3g} req/s ({self.peak_to_trough:g}x the "
                    f"trough), period {format_duration(self.period_s)}")
        if self.name == "spikes":
            return (f"spikes: {self.rate:g} req/s, x{self.spike_multiplier:g} for {format_duration(self.spike_length_s)} "
                    f"every {format_duration(self.spike_every_s)}")
        jitter = f" ± {self.jitter * 100:.0f} %" if self.jitter else ""
        return f"sparse: one request every {format_duration(self.every_s)}{jitter}"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "mean_rate": self.mean_rate, "peak_rate": self.peak_rate, "description": self.describe()}

    def arrivals(self, duration_s: float, seed: int = 0, start_s: float = 0.0) -> np.ndarray:
        """Sorted arrival times in [``start_s``, ``duration_s``) (a negative start makes a warm-up)."""
        rng = np.random.default_rng(seed)
        span = duration_s - start_s
        if span <= 0:
            return np.empty(0)
        if self.name == "steady":
            return _poisson(rng, self.rate, start_s, duration_s)
        if self.name == "diurnal":
            a = (self.peak_to_trough - 1) / (self.peak_to_trough + 1)
            candidates = _poisson(rng, self.rate * (1 + a), start_s, duration_s)
            intensity = 1 - a * np.cos(2 * np.pi * candidates / self.period_s)  # trough at t = 0
            return candidates[rng.random(candidates.size) * (1 + a) < intensity]
        if self.name == "spikes":
            base = _poisson(rng, self.rate, start_s, duration_s)
            first = math.floor((start_s - self.spike_every_s / 2) / self.spike_every_s)
            extra = []
            k = first
            while (begin := self.spike_every_s / 2 + k * self.spike_every_s) < duration_s:
                lo, hi = max(begin, start_s), min(begin + self.spike_length_s, duration_s)
                if hi > lo:
                    extra.append(_poisson(rng, self.rate * (self.spike_multiplier - 1), lo, hi))
                k += 1
            return np.sort(np.concatenate([base, *extra]))
        # sparse: deterministic like the monitor, optionally jittered
        first = math.ceil(start_s / self.every_s)
        times = np.arange(first, math.ceil(duration_s / self.every_s)) * self.every_s
        if self.jitter:
            times = times + rng.uniform(-self.jitter, self.jitter, times.size) * self.every_s / 2
        return np.sort(times[(times >= start_s) & (times < duration_s)])


def _poisson(rng: np.random.Generator, rate: float, start: float, end: float) -> np.ndarray:
    """A Poisson process on [start, end): a Poisson count of sorted uniform times (vectorised)."""
    return np.sort(rng.uniform(start, end, rng.poisson(rate * (end - start))))


# --- arrivals from a file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrivals:
    """Arrival times read from a file, seconds from the first one, sorted."""

    times: np.ndarray
    source: str
    format: str  # "csv", "api-gateway-json", "api-gateway-clf", "alb", "elb"
    lines: int
    skipped: int  # lines that held no arrival time (headers, blanks, unparseable)
    first_epoch_s: float | None = None  # wall-clock time of the first arrival, when the file gave one

    @property
    def duration_s(self) -> float:
        return float(self.times[-1]) if self.times.size else 0.0

    def describe(self) -> str:
        rate = self.times.size / self.duration_s if self.duration_s > 0 else float("nan")
        when = ""
        if self.first_epoch_s is not None:
            when = " from " + dt.datetime.fromtimestamp(self.first_epoch_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (f"{self.times.size:,} arrivals over {format_duration(max(self.duration_s, 1))}{when} "
                f"({rate:.3g} req/s on average) from {Path(self.source).name} ({self.format}"
                + (f", {self.skipped} line(s) skipped" if self.skipped else "") + ")")


class ArrivalsFormatError(ValueError):
    """The file holds no arrival time this module can read."""


_CLF_TIME = re.compile(r"(\d{2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})")
_EPOCH_FIELD = re.compile(r'"?requestTimeEpoch"?\s*[:=,]?\s*"?(\d{9,13}(?:\.\d+)?)')
_LB_TYPES = {"http", "https", "h2", "grpcs", "ws", "wss"}
_TOKENS = re.compile(r'"[^"]*"|\S+')  # ALB fields: space-separated, some quoted
# https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-access-logs.html
ALB_TIME, ALB_PROCESSING, ALB_REQUEST_CREATION_TIME = 1, (5, 6, 7), 21


def _iso(text: str) -> float | None:
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def _clf(text: str) -> float:
    return dt.datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").timestamp()


def _epoch(value: float) -> float:
    """``requestTimeEpoch`` is milliseconds (REST APIs); some HTTP API setups log seconds."""
    return value / 1000.0 if value > 1e11 else value


def _from_json(line: str) -> float | None:
    start = line.find("{")
    if start < 0:
        return None
    try:
        record = json.loads(line[start:])
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    for key in ("requestTimeEpoch", "timeEpoch", "requestTimeEpochMs"):
        if key in record:
            try:
                return _epoch(float(record[key]))
            except (TypeError, ValueError):
                pass
    if isinstance(record.get("requestTime"), str):
        found = _CLF_TIME.search(record["requestTime"])
        if found:
            return _clf(found[1])
        return _iso(record["requestTime"])
    return None


def _from_lb(line: str) -> tuple[float | None, str]:
    tokens = _TOKENS.findall(line)
    if len(tokens) > ALB_TIME and tokens[0] in _LB_TYPES:
        if len(tokens) > ALB_REQUEST_CREATION_TIME and (created := _iso(tokens[ALB_REQUEST_CREATION_TIME].strip('"'))):
            return created, "alb"
        sent = _iso(tokens[ALB_TIME])
        if sent is None:
            return None, "alb"
        # ``time`` is when the response went out: take the processing times off (-1 means none)
        spent = sum(max(0.0, float(tokens[i])) for i in ALB_PROCESSING if i < len(tokens) and _number(tokens[i]))
        return sent - spent, "alb"
    if tokens and (stamp := _iso(tokens[0])) is not None and len(tokens) > 3:
        return stamp, "elb"  # Classic Load Balancer: the time the request arrived comes first
    return None, ""


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse_lines(lines: Iterable[str], source: str = "<lines>") -> Arrivals:
    """Arrival times from log or CSV lines (see the module docstring for the formats)."""
    times: list[float] = []
    formats: dict[str, int] = {}
    total = skipped = 0
    for raw in lines:
        total += 1
        line = raw.strip()
        if not line or line.startswith("#"):
            skipped += 1
            continue
        value, kind = None, ""
        if "{" in line:
            value, kind = _from_json(line), "api-gateway-json"
        if value is None:
            value, kind = _from_lb(line)
        if value is None and (found := _CLF_TIME.search(line)):
            value, kind = _clf(found[1]), "api-gateway-clf"
        if value is None and (found := _EPOCH_FIELD.search(line)):
            value, kind = _epoch(float(found[1])), "api-gateway-json"
        if value is None:
            first = line.split(",")[0].strip().strip('"')
            if _number(first) and math.isfinite(float(first)):
                value, kind = float(first), "csv"
        if value is None:
            skipped += 1
            continue
        formats[kind] = formats.get(kind, 0) + 1
        times.append(value)
    if not times:
        raise ArrivalsFormatError(
            f"{source}: no arrival times found in {total} line(s). Expected one number of seconds per line (CSV, header "
            "optional), an API Gateway access log (JSON with requestTimeEpoch or requestTime, or CLF/CSV/XML with "
            "[dd/Mon/yyyy:HH:MM:SS +zzzz]) or an ALB access log")
    array = np.sort(np.asarray(times, dtype=float))
    kind = max(formats, key=lambda name: formats[name])
    absolute = kind != "csv" or array[0] > 1e9  # a CSV of epoch seconds keeps its wall clock too
    origin = float(array[0])
    return Arrivals(array - origin, source, kind, total, skipped, origin if absolute else None)


def read_arrivals(path: str | Path) -> Arrivals:
    """Arrival times from a file (``.gz`` too); :class:`ArrivalsFormatError` says what was expected."""
    import gzip

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            return parse_lines(handle, str(path))
    except OSError as exc:
        raise ArrivalsFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
