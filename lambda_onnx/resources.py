"""What this process really has: CPUs (and so the inference thread count) and memory."""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Iterator
from pathlib import Path

# Lambda allocates CPU in proportion to memory: 1,769 MB is one full vCPU, 6 vCPUs at most.
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html
LAMBDA_MB_PER_VCPU = 1769
LAMBDA_MAX_VCPUS = 6
LAMBDA_MIN_MB = 128

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


def lambda_memory_mb() -> int | None:
    """The function's configured memory (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``), or None off Lambda."""
    value = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _cgroup_dirs(controller: str, root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP) -> Iterator[tuple[int, Path]]:
    """(cgroup version, directory) candidates holding ``controller``'s files for this process."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # v2 unified hierarchy
            yield 2, root / rel
            yield 2, root
        elif controller in controllers.split(","):
            for mount in (controller, controllers):
                yield 1, root / mount / rel
            yield 1, root / controller


def _cgroup_cpu_quota(root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP) -> float | None:
    """CPUs granted by this process's cgroup CPU quota (v2 ``cpu.max`` or v1 CFS), if any."""
    for version, directory in _cgroup_dirs("cpu", root, proc_cgroup):
        try:
            if version == 2:
                quota, period = (directory / "cpu.max").read_text().split()
                if quota == "max":
                    return None
            else:
                quota = (directory / "cpu.cfs_quota_us").read_text().strip()
                period = (directory / "cpu.cfs_period_us").read_text().strip()
                if int(quota) <= 0:
                    return None
        except (OSError, ValueError):
            continue
        return int(quota) / int(period)
    return None


def _cgroup_memory_limit_mb(root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP) -> int | None:
    for version, directory in _cgroup_dirs("memory", root, proc_cgroup):
        try:
            value = (directory / ("memory.max" if version == 2 else "memory.limit_in_bytes")).read_text().strip()
        except OSError:
            continue
        # "max" (v2) or a page-rounded 2^63 (v1) mean no limit
        return int(value) // (1024 * 1024) if value.isdigit() and int(value) < (1 << 50) else None
    return None


def lambda_vcpus(memory_mb: float) -> float:
    """The vCPU share Lambda gives a function of ``memory_mb``: one per 1,769 MB, at most six."""
    return min(memory_mb / LAMBDA_MB_PER_VCPU, LAMBDA_MAX_VCPUS)


def available_cpus() -> float:
    """CPUs this process can use: on Lambda from the memory size (no quota is visible there),
    elsewhere the smaller of the CPU affinity and the cgroup quota."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    memory = lambda_memory_mb()
    if memory is not None:
        return min(lambda_vcpus(memory), affinity)
    quota = _cgroup_cpu_quota()
    return min(float(affinity), quota) if quota else float(affinity)


def default_threads(cpus: float | None = None) -> int:
    """The one place that decides ONNX Runtime's intra-op thread count, for every runner.

    One thread per CPU, rounding a fractional share to the nearest whole CPU (at least one).
    Below one CPU an extra thread only waits for quota (measured here with a half-CPU quota on
    INT8 ResNet-50: 45.3 ms with 1 thread against 54.6 ms with 2). From 1.5 CPUs up the second
    thread pays: under Lambda's 3,008 MB share (1.7 vCPU) the emulated sweep measured INT8 ResNet-50
    at p50 24.0 ms with 2 threads against 32.5 ms with 1, fp32 56 ms against 86 ms
    (``python -m local tune``). At 1.16 CPUs (2,048 MB) the quota binds too often for it.
    """
    cpus = available_cpus() if cpus is None else cpus
    return max(1, math.floor(cpus + 0.5))


def configured_memory_mb() -> int | None:
    """Memory this process is allowed: the Lambda setting, else its cgroup limit, else None."""
    memory = lambda_memory_mb()
    return memory if memory is not None else _cgroup_memory_limit_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process's own memory so far.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ru_maxrss across ``exec``, so a process
    started from a large parent would report the parent's peak (``man 2 getrusage``).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
