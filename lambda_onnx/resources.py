"""What this process really has: CPUs (and so how inference divides them) and memory.

Two rules, stated here once for every runner: :func:`default_threads` for one request at a time
(the Lambda handler, in-process), :func:`server_split` for a server classifying many at once
(``local serve``); :func:`intra_op_spinning` says when ONNX Runtime's idle threads may spin.
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass
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


# ONNX Runtime's idle intra-op threads spin-wait for the next operator unless told not to (session
# option session.intra_op.allow_spinning). "0"/"1" here decides it; unset, the rule of intra_op_spinning.
SPINNING_ENV = "ORT_INTRA_OP_SPINNING"


def intra_op_spinning(cpus: float | None = None, *, server: bool = False) -> bool:
    """Whether ONNX Runtime's intra-op threads may spin between operators (``$ORT_INTRA_OP_SPINNING``
    decides when set; otherwise never in a ``server``, and for one request at a time only under whole CPUs).

    Spinning shortens each hand-off between operators when one request at a time owns every CPU (the
    Lambda handler). It is off under a fractional CPU quota (Lambda below 1,769 MB per vCPU), where the
    spinning threads burn the quota the computing ones need, and in a server, where other work (the
    next requests' decoding, the HTTP event loop) needs the core a spinning thread holds: measured with
    one request at a time and 2 threads on 2 vCPUs, the idle thread spun at 0.99 of a core while the
    request thread decoded.
    """
    setting = os.environ.get(SPINNING_ENV, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    if server:
        return False
    cpus = available_cpus() if cpus is None else cpus
    return not cpus % 1


@dataclass(frozen=True)
class ServerSplit:
    """How a server divides its CPUs between requests (see :func:`server_split`)."""

    workers: int  # HTTP front processes, each with lanes of its own
    lanes: int  # lane processes per front, each with its own copy of the model, classifying one request at a time
    threads: int  # ONNX Runtime intra-op threads per lane


def server_split(cpus: float | None = None, *, workers: int | None = None, lanes: int | None = None,
                 threads: int | None = None) -> ServerSplit:
    """The one place that decides how a server classifying many requests at once divides its CPUs;
    :func:`default_threads` stays the rule for one request at a time (the Lambda handler, in-process).

    One HTTP front and one lane per CPU (the CPUs rounded as :func:`default_threads` rounds them): a
    lane is a process that decodes, preprocesses and infers one request at a time with one intra-op
    thread, taking the next from the front's one queue, so one request's decoding overlaps another's
    inference and no CPU waits while a request does. Intra-op parallelism costs CPU while requests
    side by side cost none; lanes that are threads of one process contend for its interpreter lock;
    and lanes behind one queue, unlike worker processes that each accept their own connections, never
    leave a request waiting behind a busy lane while another is free. Measured on 2 vCPUs (AMD EPYC,
    AVX2) with EfficientNet-Lite0, 1 MP JPEGs and 8 connections, as a share of the in-process ceiling:
    one request at a time on 2 threads 0.44 (ONNX Runtime's threads spinning) and 0.57 (not spinning);
    two lanes as threads of one process 0.84-0.87; two worker processes of one lane 0.94 when the
    connections split evenly (p99 up to 1.5x higher when they did not; see :mod:`local.serve.lanes`).

    Given ``workers`` (fronts), the CPUs are shared evenly between them, each getting one lane per CPU
    of its share; given ``lanes`` (or ``threads``), each lane gets its share of the CPUs as threads (or
    a front as many lanes as its CPUs hold of those threads).
    """
    whole = default_threads(cpus)
    workers = workers or 1
    per_worker = max(1, whole // workers)
    if lanes is None and threads is None:
        return ServerSplit(workers=workers, lanes=per_worker, threads=1)
    if lanes is None:
        assert threads is not None
        return ServerSplit(workers=workers, lanes=max(1, per_worker // threads), threads=threads)
    return ServerSplit(workers=workers, lanes=lanes, threads=threads or max(1, per_worker // lanes))


def configured_memory_mb() -> int | None:
    """Memory this process is allowed: the Lambda setting, else its cgroup limit, else None."""
    memory = lambda_memory_mb()
    return memory if memory is not None else _cgroup_memory_limit_mb()


# ru_maxrss (kB) that this process inherited across exec, if more than its own peak was then; see peak_rss_mb.
_inherited_maxrss_kb: int | None = None


def _vmhwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process's own memory so far (VmHWM), cheaply enough for every request.

    ``getrusage``'s ``ru_maxrss`` is one system call, but Linux carries it across ``exec``: a process
    started from a large parent reports the parent's peak until its own exceeds it (``man 2
    getrusage``). ``VmHWM`` in ``/proc/self/status`` is always its own, but reading and parsing that
    file costs about 30 times more. So both are read once; afterwards ``ru_maxrss`` is used whenever
    it is above what was inherited (it then equals ``VmHWM``), and the file is read only while it is not.
    """
    global _inherited_maxrss_kb
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # first: a peak can only grow before VmHWM is read
    if _inherited_maxrss_kb is None:
        own = _vmhwm_kb()
        if own is None:  # no /proc (not Linux): ru_maxrss is all there is
            return maxrss / 1024.0
        _inherited_maxrss_kb = maxrss if maxrss > own else 0
        return own / 1024.0
    if maxrss > _inherited_maxrss_kb:
        return maxrss / 1024.0
    own = _vmhwm_kb()
    return (own if own is not None else maxrss) / 1024.0
