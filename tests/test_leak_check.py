"""The suite's own leak check (conftest.pytest_sessionfinish), run on a small inner session.

It must fail a run that leaves a process it started alive, and must not fail one whose only live
helper is the test process's own multiprocessing resource tracker (started by spawning a child, as a
server run in process does with its lanes; it ends when the test process does).
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.helpers.process import run_module

pytestmark = pytest.mark.slow  # the failing case waits out the check's grace period

SPAWNS_A_CHILD = """
import multiprocessing

def test_spawns_a_child():
    process = multiprocessing.get_context("spawn").Process(target=print, args=("child",))
    process.start()
    process.join()
    assert process.exitcode == 0
"""

LEAVES_A_PROCESS = """
import subprocess
import sys

def test_leaves_a_process():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
"""


def run_inner_session(tmp_path: Path, source: str):
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(source)
    # The inner session loads the real conftest as a plugin; its own tag replaces this session's.
    return run_module("pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", "--rootdir", str(tmp_path),
                      str(test_file), timeout=120)


def test_own_resource_tracker_is_not_a_leak(tmp_path):
    result = run_inner_session(tmp_path, SPAWNS_A_CHILD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LEAKED PROCESSES" not in result.stdout


def test_a_process_left_running_fails_the_run(tmp_path):
    result = run_inner_session(tmp_path, LEAVES_A_PROCESS)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "LEAKED PROCESSES: 1" in result.stdout and "time.sleep(120)" in result.stdout
    # ... and it was killed: nothing of the inner session is left.
    assert [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[-1].endswith("time.sleep(120)")] == []
