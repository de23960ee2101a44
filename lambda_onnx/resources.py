"""What this process really has: CPUs (and so the inference thread count) and memory."""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path

# Lambda allocates CPU in proportion to memory: 1,769 MB is one full vCPU.
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html
LAMBDA_MB_PER_VCPU = 1769
LAMBDA_MAX_VCPUS = 6

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def lambda_memory_mb() -> int | None:
    """The function's configured memory (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``), or None off Lambda."""
    value = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _cgroup_cpu_quota(root: Path = _CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs granted by the cgroup CPU quota of this process (v2 ``cpu.max`` or v1 CFS), if any."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2 unified hierarchy
            candidates = [root / rel / "cpu.max", root / "cpu.max"]
            for file in candidates:
                try:
                    quota, period = file.read_text().split()
                except (OSError, ValueError):
                    continue
                if quota != "max":
                    return int(quota) / int(period)
        elif "cpu" in controllers.split(","):
            for base in (root / "cpu" / rel, root / "cpu,cpuacct" / rel, root / "cpu"):
                try:
                    quota = int((base / "cpu.cfs_quota_us").read_text())
                    period = int((base / "cpu.cfs_period_us").read_text())
                except (OSError, ValueError):
                    continue
                if quota > 0:
                    return quota / period
                break
    return None


def available_cpus() -> float:
    """CPUs this process can use: on Lambda from the memory size (no quota is visible there),
    elsewhere the smaller of the CPU affinity and the cgroup quota."""
    memory = lambda_memory_mb()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if memory is not None:
        return min(memory / LAMBDA_MB_PER_VCPU, LAMBDA_MAX_VCPUS, affinity)
    quota = _cgroup_cpu_quota()
    return min(float(affinity), quota) if quota else float(affinity)


def default_threads(cpus: float | None = None) -> int:
    """The one place that decides ONNX Runtime's intra-op thread count, for every runner.

    A thread per whole CPU, rounding a fractional share down: on a fractional CPU quota, an extra
    thread only waits for quota (measured here with a half-CPU quota on INT8 ResNet-50: 45.3 ms with
    1 thread against 54.6 ms with 2).
    """
    cpus = available_cpus() if cpus is None else cpus
    return max(1, math.floor(cpus + 1e-6))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident set size now, from /proc (falls back to the peak where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()
