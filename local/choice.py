"""The runtime x precision ``python -m local bench`` chose on this machine, for ``--runtime auto``.

The bench writes it (``fastest_choice`` in ``bench.json``); ``local serve`` reads it. A choice is
valid only on the CPU it was measured on (speed, and INT8 parity, depend on it): a file copied from
another machine is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lambda_onnx.cpu import cpu_info
from local.defaults import BENCH_OUT

FASTEST_FILE = BENCH_OUT / "bench.json"


def cpu_identity() -> dict[str, Any]:
    """What makes a speed (and INT8 parity) measurement valid elsewhere: CPU model, count and the
    instruction sets that decide speed and correctness (:mod:`lambda_onnx.cpu`)."""
    info = cpu_info()
    return {"cpus": os.cpu_count(), "cpu": info.model, "isa": list(info.flags)}


def load_fastest(path: Path = FASTEST_FILE) -> dict[str, Any] | None:
    """The fastest runtime x precision whose parity held, as a benchmark measured it on THIS machine, or None."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    here, there = cpu_identity(), data.get("machine", {})
    choice = data.get("fastest_choice") or None
    if not choice or any(there.get(key) != value for key, value in here.items()):
        return None
    return {**choice, "measured": data.get("created", ""), "skipped": data.get("skipped", [])}
