"""Running the project as a user does: ``python -m ...`` from the repository root, and waiting for a server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait_until_answers(url: str, process, timeout: float = 90, output=lambda: "") -> None:
    """Poll ``url`` until it answers 200; fail with the process's output if it exits or times out."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not come up: {output()}")
        time.sleep(0.2)


def run_module(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    """Run ``python -m <args>`` from the repository root, as a user would."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
