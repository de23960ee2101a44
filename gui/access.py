"""Who may do what, checked on the server: the two roles, each one's bounds, and what a viewer is told.

A shared app (``--share``, or any ``--host`` other than loopback) is built for the **viewer** role: its
``gr.Blocks`` registers only the events that read (compare, a cold start on the emulator, short monitors
on local backends, scenarios, cost, model facts). The **operator** role's ``gr.Blocks`` registers the
rest too (export, switch to any model, tune, AWS, long monitors). Events are registered per Blocks, so
an event a role lacks does not exist for it, through the page or through ``gradio_client`` alike.

Both roles are bounded (a typo is not a week-long run); the viewer's bounds are tighter, each of its
runs holds one of a visitor's work slots, and every error it sees is redacted of host details.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

log = logging.getLogger("gui.access")

VIEWER = "viewer"
OPERATOR = "operator"


@dataclass(frozen=True)
class Limits:
    """Bounds on every input an event takes, for one role (each checked where the event receives it)."""

    monitor_requests: int  # per backend
    monitor_duration_s: float
    monitor_min_interval_s: float  # 0 would be a busy loop
    monitor_max_interval_s: float
    monitor_concurrency: int
    scenario_period_s: float
    scenario_rate: float  # requests per second, mean
    scenario_requests: float  # rate x period: what the simulation walks through
    scenario_reserved: int
    scenario_instances: int
    scenario_workers: int
    breakeven_points: int  # rates in one break-even sweep (each one simulated for every option)
    arrivals_bytes: int  # the uploaded file, compressed or not
    arrivals_uncompressed_bytes: int  # a .gz file's content: no gzip bomb
    arrivals_lines: int
    tune_requests: int
    tune_sizes: int
    upload_bytes: int  # any one upload (Gradio refuses larger with 413)
    uploads_per_minute: int  # per visitor (address)
    work_per_visitor: int  # runs at once per visitor (address)
    calibrations: tuple[str, ...]  # the scenario's "measure now" is heavy work


VIEWER_LIMITS = Limits(
    monitor_requests=100, monitor_duration_s=300.0, monitor_min_interval_s=0.2, monitor_max_interval_s=60.0,
    monitor_concurrency=4, scenario_period_s=31 * 86_400.0, scenario_rate=50.0, scenario_requests=20e6,
    scenario_reserved=3_000, scenario_instances=200, scenario_workers=16, breakeven_points=25,
    arrivals_bytes=20 * 2**20, arrivals_uncompressed_bytes=100 * 2**20, arrivals_lines=1_000_000,
    tune_requests=0, tune_sizes=0, upload_bytes=20 * 2**20, uploads_per_minute=60, work_per_visitor=1,
    calibrations=("auto", "never"))

OPERATOR_LIMITS = Limits(
    monitor_requests=100_000, monitor_duration_s=24 * 3600.0, monitor_min_interval_s=0.01, monitor_max_interval_s=3600.0,
    monitor_concurrency=4, scenario_period_s=366 * 86_400.0, scenario_rate=1_000.0, scenario_requests=200e6,
    scenario_reserved=100_000, scenario_instances=10_000, scenario_workers=256, breakeven_points=200,
    arrivals_bytes=100 * 2**20, arrivals_uncompressed_bytes=2 * 2**30, arrivals_lines=20_000_000,
    tune_requests=10_000, tune_sizes=40, upload_bytes=100 * 2**20, uploads_per_minute=600, work_per_visitor=4,
    calibrations=("auto", "always", "never"))


class Busy:
    """Each visitor's runs at once, at most ``limit`` (the queue bounds everyone's together)."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, visitor: str, limit: int) -> bool:
        with self._lock:
            if self._running.get(visitor, 0) >= limit:
                return False
            self._running[visitor] = self._running.get(visitor, 0) + 1
            return True

    def leave(self, visitor: str) -> None:
        with self._lock:
            left = self._running.get(visitor, 1) - 1
            if left:
                self._running[visitor] = left
            else:
                self._running.pop(visitor, None)


@dataclass(frozen=True)
class Access:
    """One ``gr.Blocks``' role and its bounds; the views ask it what to register and what to accept."""

    role: str = OPERATOR
    busy: Busy = field(default_factory=Busy, compare=False)

    @property
    def operator(self) -> bool:
        return self.role == OPERATOR

    @property
    def limits(self) -> Limits:
        return OPERATOR_LIMITS if self.operator else VIEWER_LIMITS

    def describe(self) -> str:
        """The line the page shows: which role this page has and what that means."""
        if self.operator:
            return "🔑 **Role: operator**: every action, including export, model switch, tuning and AWS."
        return ("👀 **Role: viewer**: compare, cold starts on the emulator, short monitors, scenarios, cost and reports. "
                "Exporting, switching to other models, tuning and AWS are the operator's.")

    @contextmanager
    def work(self, request: gr.Request | None, *, slot: bool = True) -> Iterator[None]:
        """Run one event for ``request``'s visitor: holds one of its work slots (``slot``), and turns what a
        viewer would see of an error into a redacted one-line reason (the full one goes to the log)."""
        visitor = visitor_of(request)
        if slot and not self.busy.enter(visitor, self.limits.work_per_visitor):
            raise gr.Error("you already have a run going: wait for it to finish (or stop it) first")
        try:
            yield
        except gr.Error as exc:
            if self.operator:
                raise
            log.warning("refused a viewer's request: %s", exc.message)
            raise gr.Error(redact(str(exc.message))) from None
        except Exception:
            if self.operator:
                raise
            log.exception("a viewer's request failed")
            raise gr.Error("the request failed on the host (its operator's log has the details)") from None
        finally:
            if slot:
                self.busy.leave(visitor)


def visitor_of(request: gr.Request | None) -> str:
    """Who is asking: the login and the address (the first forwarded one when a local proxy, such as
    Gradio's share tunnel, relays the request)."""
    if request is None:
        return "local"
    host = getattr(getattr(request, "client", None), "host", None) or "?"
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for") if host in ("127.0.0.1", "::1") else None
    if forwarded:
        host = forwarded.split(",")[0].strip()
    return f"{getattr(request, 'username', None) or ''}@{host}"


# ---- bounded inputs: each refusal is a one-line reason ------------------------------------------------


def number(value: Any, name: str, low: float, high: float, *, whole: bool = False) -> float:
    """``value`` as a finite number within [low, high] (whole if asked); a ``gr.Error`` naming the bounds otherwise."""
    kind = "a whole number" if whole else "a number"
    try:
        number_ = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be {kind} from {low:g} to {high:g}") from None
    if not math.isfinite(number_) or not low <= number_ <= high or (whole and number_ != int(number_)):
        raise gr.Error(f"{name} must be {kind} from {low:g} to {high:g}, not {_short(value)}")
    return number_


def whole(value: Any, name: str, low: int, high: int) -> int:
    return int(number(value, name, low, high, whole=True))


def one_of(value: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise gr.Error(f"{name} must be one of {', '.join(choices)}")
    return value


def some_of(values: Any, name: str, choices: Sequence[str]) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v in choices for v in values):
        raise gr.Error(f"{name} must be some of {', '.join(choices)}")
    return list(dict.fromkeys(values))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


# ---- what a viewer is told ----------------------------------------------------------------------------

_ARN = re.compile(r"arn:aws[a-z-]*:[^\s\"'`]+")
_ACCOUNT = re.compile(r"(?<!\d)\d{12}(?!\d)")
_PATH = re.compile(r"(?<![\w.:/])(?:~|\.{1,2})?/(?:[^\s\"'`()<>,;:]+/?)+")
_FILE_SIZE = re.compile(r"\b\d[\d,]*\s?bytes?\b")  # "is 1,234 bytes": a host file's size; limits say MB


def redact(text: str) -> str:
    """``text`` without the host's paths, file sizes, account ids or ARNs (what a viewer may see of an error)."""
    text = _ARN.sub("<arn>", text)
    text = _ACCOUNT.sub("<account>", text)
    text = _PATH.sub(lambda m: "<path>" if m.group(0).strip("/") else m.group(0), text)
    return _FILE_SIZE.sub("<size>", text)
