"""The one summary of a set of durations, shared by the monitor, the soaks, tune and the scenarios."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def duration_summary(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """p50, p90, p99 (linear interpolation), mean, min, max and n of some durations (ms), rounded to
    ``digits``; empty when there are none. The one summary the monitor, the soaks and tune share."""
    if not values:
        return {}
    array = np.asarray(values, dtype=float)
    summary = {f"p{q}": round(float(np.percentile(array, q)), digits) for q in (50, 90, 99)}
    return {**summary, "mean": round(float(array.mean()), digits), "min": round(float(array.min()), digits),
            "max": round(float(array.max()), digits), "n": len(values)}


def percent(share: float | None) -> str:
    """A share as a whole percentage (``"45 %"``), or ``"n/a"``."""
    return "n/a" if share is None else f"{100 * share:.0f} %"
