"""Linux control groups that size one emulated Lambda function the way Lambda sizes it.

Lambda gives a function CPU in proportion to its memory: 1,769 MB is one vCPU, 10,240 MB six
(https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html), and no swap. A
:class:`LambdaCgroup` for ``memory_mb`` applies the same two limits to a local process:

- a CFS bandwidth quota of ``memory_mb / 1769`` CPUs per period, capped at the CPUs this machine
  can give (:attr:`CpuMemoryLimits.capped` says when the cap binds)
  (https://docs.kernel.org/scheduler/sched-bwc.html);
- a memory limit of ``memory_mb`` MiB with swap forbidden (v1 ``memory.memsw.limit_in_bytes``,
  v2 ``memory.swap.max = 0``); going over it wakes the kernel's OOM killer, as on Lambda
  (https://docs.kernel.org/admin-guide/cgroup-v1/memory.html,
  https://docs.kernel.org/admin-guide/cgroup-v2.html#memory-interface-files).

cgroup v2 is used where its ``cpu`` and ``memory`` controllers are available to this process,
else v1's ``cpu`` and ``memory`` hierarchies. Cgroups are created under this process's own cgroup
in each hierarchy, so any limit the machine already puts on us still applies on top.

**Only the function process is confined**, not the emulator (:meth:`LambdaCgroup.wrapper` is a
command prefix the emulator puts before the runtime's command). In Lambda the Invoke API front end
runs outside the execution environment; inside it run the runtime and a small init process
(rapid, which the emulator also contains). Confining the function alone keeps the emulator
responsive to report an out-of-memory kill the way Lambda's service does, and makes the
throttling and memory counters the function's own. The cost is that rapid's few MB are not
charged against the limit here, as they are on Lambda.

A second difference cannot be removed: a cgroup is only charged for pages it faults in first.
Shared libraries already in the page cache (read by any earlier process) are not charged to it,
so the limit is more lenient than Lambda's, where the whole environment counts. The tuner
therefore also compares the function's own peak RSS with the memory size.

Where no cgroup can be created, :class:`CgroupUnavailableError` says why; nothing runs unconfined
in its place.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import re
import secrets
import shlex
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from lambda_onnx.errors import ClassifierError
from lambda_onnx.resources import LAMBDA_MIN_MB, available_cpus, lambda_vcpus

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
NAME_PREFIX = "rsls-tune"  # every cgroup made here: <prefix>-<creator pid>-<memory>mb-<random>
# The kernel's default CFS period. Lambda does not publish the period it uses; with a shorter one a
# throttled request waits in shorter, more frequent pauses, with the same average share.
CFS_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel refuses smaller quotas
REMOVE_TIMEOUT_S = 5.0
MIB = 1024 * 1024

log = logging.getLogger(__name__)


class CgroupUnavailableError(ClassifierError):
    """No cgroup with CPU and memory limits can be made here; the message says why."""

    status = 503
    code = "cgroup_unavailable"


class CgroupCleanupError(ClassifierError):
    """A cgroup made here could not be removed in time; the message names it."""

    code = "cgroup_cleanup_failed"


@dataclass(frozen=True)
class CpuMemoryLimits:
    """The limits Lambda would give ``memory_mb``, and what this machine can apply."""

    memory_mb: int
    lambda_cpus: float  # memory_mb / 1769, at most 6: the share Lambda gives
    machine_cpus: float  # the CPUs this process may use here (affinity and any quota on us)
    period_us: int = CFS_PERIOD_US

    @property
    def cpus(self) -> float:
        """The CPU share applied: Lambda's, unless this machine has fewer CPUs."""
        return min(self.lambda_cpus, self.machine_cpus)

    @property
    def capped(self) -> bool:
        """Lambda would give more CPU than this machine has: figures at this size are pessimistic."""
        return self.lambda_cpus > self.machine_cpus + 1e-9

    @property
    def quota_us(self) -> int:
        return max(MIN_QUOTA_US, round(self.cpus * self.period_us))

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * MIB  # Lambda's "MB" are MiB, like the handler's peak_rss_mb

    def describe(self) -> str:
        cpu = f"{self.cpus:.2f} vCPU"
        if self.capped:
            cpu += f" (Lambda gives {self.lambda_cpus:.2f}; capped at this machine's {self.machine_cpus:g} CPUs)"
        return f"{self.memory_mb} MB: CPU quota {cpu}, memory limit {self.memory_mb} MiB, no swap"


def lambda_limits(memory_mb: int, machine_cpus: float | None = None, period_us: int = CFS_PERIOD_US) -> CpuMemoryLimits:
    """The CPU share and memory limit of a Lambda function of ``memory_mb``, on this machine."""
    if memory_mb < LAMBDA_MIN_MB:
        raise ValueError(f"Lambda memory sizes start at {LAMBDA_MIN_MB} MB, got {memory_mb}")
    machine = available_cpus() if machine_cpus is None else machine_cpus
    return CpuMemoryLimits(memory_mb, lambda_vcpus(memory_mb), float(machine), period_us)


@dataclass(frozen=True)
class CgroupCounters:
    """The cgroup's own counters (the truth; the emulator's REPORT memory figure is not).

    ``None`` where this kernel does not keep the counter.
    """

    nr_periods: int = 0  # CFS periods in which the cgroup was runnable
    nr_throttled: int = 0  # periods in which it used up its quota and had to wait
    throttled_ms: float = 0.0
    memory_current_mb: float = 0.0
    memory_peak_mb: float | None = None  # v1 memory.max_usage_in_bytes, v2 memory.peak (kernel 5.19+)
    memory_limit_hits: int | None = None  # v1 memory.failcnt, v2 memory.events "max"
    oom_kills: int | None = None  # v1 memory.oom_control "oom_kill" (4.13+), v2 memory.events "oom_kill"

    def since(self, earlier: CgroupCounters) -> CgroupCounters:
        """Counts between ``earlier`` and this reading; levels (current, peak) stay as read now."""
        def delta(now: int | None, then: int | None) -> int | None:
            return None if now is None or then is None else now - then

        return CgroupCounters(
            nr_periods=self.nr_periods - earlier.nr_periods, nr_throttled=self.nr_throttled - earlier.nr_throttled,
            throttled_ms=self.throttled_ms - earlier.throttled_ms, memory_current_mb=self.memory_current_mb,
            memory_peak_mb=self.memory_peak_mb, memory_limit_hits=delta(self.memory_limit_hits, earlier.memory_limit_hits),
            oom_kills=delta(self.oom_kills, earlier.oom_kills))

    def to_dict(self) -> dict[str, float | int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_keyed(text: str) -> dict[str, int]:
    """A flat-keyed cgroup file (``cpu.stat``, ``memory.events``, ``memory.oom_control``) as a dict."""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
            values[parts[0]] = int(parts[1])
    return values


@dataclass(frozen=True)
class Hierarchy:
    """Where this process may create cgroups: one v2 directory, or v1's cpu and memory directories."""

    version: int
    parents: dict[str, Path]  # controller ("cpu", "memory") -> the directory children are made in

    def describe(self) -> str:
        if self.version == 2:
            return f"cgroup v2 ({self.parents['cpu']})"
        return f"cgroup v1 (cpu: {self.parents['cpu']}, memory: {self.parents['memory']})"


_V1_PROBE = {"cpu": "cpu.cfs_quota_us", "memory": "memory.limit_in_bytes"}


def find_hierarchy(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> Hierarchy:
    """The cgroup directories under which this process can confine a child, v2 preferred.

    Raises :class:`CgroupUnavailableError` naming what was looked for and why each failed.
    """
    try:
        lines = [line.split(":", 2) for line in proc_cgroup.read_text().splitlines() if line.count(":") >= 2]
    except OSError as exc:
        raise CgroupUnavailableError(f"cannot read {proc_cgroup} ({exc.strerror or exc}): not Linux, or no cgroups") from None
    reasons = []
    unified = next((path for hid, controllers, path in lines if hid == "0" and controllers == ""), None)
    if unified is not None:
        mounts = [m for m in (root, root / "unified") if (m / "cgroup.controllers").is_file()]
        if not mounts:
            reasons.append(f"no cgroup v2 hierarchy at {root} or {root / 'unified'}")
        for mount in mounts[:1]:
            parent = _existing(mount, unified)
            available = _words(parent / "cgroup.controllers")
            if {"cpu", "memory"} <= available:
                return Hierarchy(2, {"cpu": parent, "memory": parent})
            reasons.append(f"cgroup v2 at {parent} offers the controllers {sorted(available) or 'none'}, "
                           "not both cpu and memory")
    parents = {}
    for controller, probe in _V1_PROBE.items():
        line = next(((c, p) for hid, c, p in lines if hid != "0" and controller in c.split(",")), None)
        if line is None:
            reasons.append(f"no cgroup v1 {controller} hierarchy in {proc_cgroup}")
            continue
        controllers, path = line
        found = [parent for mount in (root / controller, root / controllers) if mount.is_dir()
                 for parent in (_existing(mount, path),) if (parent / probe).is_file()]
        if found:
            parents[controller] = found[0]
        else:
            reasons.append(f"no cgroup v1 {controller} hierarchy mounted at {root / controller}")
    if len(parents) == 2:
        return Hierarchy(1, parents)
    raise CgroupUnavailableError("no cgroup with the cpu and memory controllers is available, so Lambda's CPU share and "
                                 "memory limit cannot be emulated: " + "; ".join(reasons))


def _existing(mount: Path, path: str) -> Path:
    """This process's cgroup directory in a mounted hierarchy; in a container that sees only its
    own cgroup mounted at the top, ``/proc/self/cgroup`` names a path that is not there."""
    directory = mount / path.lstrip("/")
    return directory if directory.is_dir() else mount


def _words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def machine_has_swap() -> bool:
    """Whether any swap device is active (``/proc/swaps`` lists more than its header)."""
    try:
        return len(Path("/proc/swaps").read_text().strip().splitlines()) > 1
    except OSError:
        return False


# --- writing the limits (separate from discovery so that they can be checked on a plain directory) ---------


def configure_v2(directory: Path, limits: CpuMemoryLimits, swap_present: bool) -> list[str]:
    """Write the limits into a v2 cgroup; returns notes on what could not be applied harmlessly.

    ``memory.oom.group`` makes an OOM kill take the whole function (its children too), as Lambda
    ends the whole environment; it is skipped on kernels without it.
    """
    _write(directory / "cpu.max", f"{limits.quota_us} {limits.period_us}")
    _write(directory / "memory.max", str(limits.memory_bytes))
    notes = _write_swap_limit(directory / "memory.swap.max", "0", swap_present)
    if (directory / "memory.oom.group").exists():
        _write(directory / "memory.oom.group", "1")
    return notes


def enable_v2_controllers(parent: Path) -> None:
    """Delegate cpu and memory to ``parent``'s children (``cgroup.subtree_control``).

    cgroup v2 refuses this (EBUSY) when ``parent`` itself holds processes and is not the root
    ("no internal processes", https://docs.kernel.org/admin-guide/cgroup-v2.html#no-internal-process-constraint).
    """
    enabled = _words(parent / "cgroup.subtree_control")
    missing = [c for c in ("cpu", "memory") if c not in enabled]
    if not missing:
        return
    try:
        (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
    except OSError as exc:
        hint = (" (this process's cgroup holds processes, and cgroup v2 only delegates controllers from a cgroup "
                "without any: run the tuner in a delegated cgroup, e.g. `systemd-run --user --scope -p Delegate=yes`)"
                if exc.errno == errno.EBUSY else "")
        raise CgroupUnavailableError(f"cannot enable the {' and '.join(missing)} controller(s) in "
                                     f"{parent / 'cgroup.subtree_control'}: {exc.strerror or exc}{hint}") from None


def configure_v1(cpu_dir: Path, memory_dir: Path, limits: CpuMemoryLimits, swap_present: bool) -> list[str]:
    """Write the limits into a v1 cpu and memory cgroup pair; returns notes (see :func:`configure_v2`)."""
    _write(cpu_dir / "cpu.cfs_period_us", str(limits.period_us))
    _write(cpu_dir / "cpu.cfs_quota_us", str(limits.quota_us))
    # memory+swap may never be below memory: set memory first (both start unlimited).
    _write(memory_dir / "memory.limit_in_bytes", str(limits.memory_bytes))
    notes = _write_swap_limit(memory_dir / "memory.memsw.limit_in_bytes", str(limits.memory_bytes), swap_present)
    # A child inherits oom_kill_disable from its parent; disabled, a function over its limit
    # would hang instead of being killed.
    _write(memory_dir / "memory.oom_control", "0")
    return notes


def _write_swap_limit(path: Path, value: str, swap_present: bool) -> list[str]:
    """Forbid swap. Kernels without swap accounting have no such file: harmless without swap, a
    refusal with it (the function could swap where Lambda cannot)."""
    try:
        path.write_text(value)
        return []
    except OSError as exc:
        if swap_present:
            raise CgroupUnavailableError(f"cannot forbid swap ({path}: {exc.strerror or exc}) and this machine has swap: "
                                         "the function could swap where Lambda cannot (enable swap accounting, or "
                                         "turn swap off)") from None
        return [f"swap is not limited ({path.name}: {exc.strerror or exc}); this machine has no swap, so none is used"]


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupUnavailableError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from None


# --- reading counters --------------------------------------------------------------------------------


def read_counters(version: int, cpu_dir: Path, memory_dir: Path) -> CgroupCounters:
    """The counters of a v1 pair or of one v2 cgroup (``cpu_dir == memory_dir``)."""
    cpu = parse_keyed(_read(cpu_dir / "cpu.stat") or "")
    if version == 2:
        events = parse_keyed(_read(memory_dir / "memory.events") or "")
        return CgroupCounters(
            nr_periods=cpu.get("nr_periods", 0), nr_throttled=cpu.get("nr_throttled", 0),
            throttled_ms=cpu.get("throttled_usec", 0) / 1e3,
            memory_current_mb=_mb(_read(memory_dir / "memory.current")) or 0.0,
            memory_peak_mb=_mb(_read(memory_dir / "memory.peak")), memory_limit_hits=events.get("max"),
            oom_kills=events.get("oom_kill"))
    oom = parse_keyed(_read(memory_dir / "memory.oom_control") or "")
    failcnt = _read(memory_dir / "memory.failcnt")
    return CgroupCounters(
        nr_periods=cpu.get("nr_periods", 0), nr_throttled=cpu.get("nr_throttled", 0),
        throttled_ms=cpu.get("throttled_time", 0) / 1e6, memory_current_mb=_mb(_read(memory_dir / "memory.usage_in_bytes")) or 0.0,
        memory_peak_mb=_mb(_read(memory_dir / "memory.max_usage_in_bytes")),
        memory_limit_hits=int(failcnt) if failcnt and failcnt.strip().isdigit() else None, oom_kills=oom.get("oom_kill"))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _mb(text: str | None) -> float | None:
    text = (text or "").strip()
    return int(text) / MIB if text.isdigit() else None


# --- one cgroup per emulated function ---------------------------------------------------------------------


class LambdaCgroup:
    """A cgroup (v2) or a cpu + memory pair (v1) sized like a Lambda function of ``memory_mb``.

    Use as a context manager: created on entry, its processes killed and its directories removed
    on exit (errors and Ctrl-C included; also at interpreter exit as a last resort). Cgroups left
    by a process that died without cleaning up are removed the next time one is created.

    ``root`` and ``proc_cgroup`` say where the cgroup filesystems are mounted and which cgroup this
    process is in; tests point them elsewhere.
    """

    def __init__(self, memory_mb: int, *, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP,
                 machine_cpus: float | None = None, period_us: int = CFS_PERIOD_US) -> None:
        self.limits = lambda_limits(memory_mb, machine_cpus, period_us)
        self.root, self.proc_cgroup = Path(root), Path(proc_cgroup)
        self.name = f"{NAME_PREFIX}-{os.getpid()}-{memory_mb}mb-{secrets.token_hex(3)}"
        self.hierarchy: Hierarchy | None = None
        self.dirs: dict[str, Path] = {}  # controller -> its cgroup directory, once configured
        self.notes: list[str] = []
        self._made: list[Path] = []  # every directory made, in order: what remove() removes

    @property
    def version(self) -> int | None:
        return self.hierarchy.version if self.hierarchy else None

    @property
    def created(self) -> bool:
        return bool(self.dirs)

    def create(self) -> LambdaCgroup:
        """Make the cgroup(s) and write the limits; raises :class:`CgroupUnavailableError` with the reason."""
        if self.created:
            return self
        self.hierarchy = find_hierarchy(self.root, self.proc_cgroup)
        remove_stale(self.hierarchy)
        try:
            if self.hierarchy.version == 2:
                parent = self.hierarchy.parents["cpu"]
                enable_v2_controllers(parent)  # left enabled: it changes nothing for the parent's other children
                directory = self._mkdir(parent)
                self.notes = configure_v2(directory, self.limits, machine_has_swap())
                self.dirs = {"cpu": directory, "memory": directory}
            else:
                cpu, memory = (self._mkdir(self.hierarchy.parents[c]) for c in ("cpu", "memory"))
                self.notes = configure_v1(cpu, memory, self.limits, machine_has_swap())
                self.dirs = {"cpu": cpu, "memory": memory}
        except BaseException:
            self.remove()
            raise
        atexit.register(self.remove)
        return self

    def _mkdir(self, parent: Path) -> Path:
        directory = parent / self.name
        try:
            directory.mkdir()
        except OSError as exc:
            raise CgroupUnavailableError(f"cannot create a cgroup in {parent}: {exc.strerror or exc} (it takes root, "
                                         "or a cgroup delegated to this user, on a writable cgroup filesystem)") from None
        self._made.append(directory)  # tracked at once, so a failure below still removes it
        if not (directory / "cgroup.procs").exists():  # the kernel fills a new cgroup with its interface files
            raise CgroupUnavailableError(f"{parent} is not a cgroup filesystem: a directory made there has no cgroup.procs, "
                                         "so no limit written there would be enforced")
        return directory

    def wrapper(self) -> list[str]:
        """A command prefix that moves the process into this cgroup, then execs the command after it.

        The emulator runs ``<prefix> python -m awslambdaric ...`` for each execution environment it
        starts (a new one after a crash too), so every function process is confined from its first
        instruction. ``exec`` keeps the process id that was moved. If the move fails the shell exits
        with an error, and the function does not run unconfined.
        """
        if not self.created:
            raise RuntimeError("create() the cgroup before asking for its wrapper")
        moves = " && ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self._made)
        return ["/bin/sh", "-c", f'{moves} && exec "$@"', "lambda-cgroup"]

    def counters(self) -> CgroupCounters:
        if not self.created or self.version is None:
            raise RuntimeError("create() the cgroup before reading its counters")
        return read_counters(self.version, self.dirs["cpu"], self.dirs["memory"])

    def remove(self, timeout_s: float = REMOVE_TIMEOUT_S) -> None:
        """Kill whatever still runs in the cgroup (only processes this tuner put there) and remove it.

        Idempotent. Raises :class:`CgroupCleanupError` if a directory is still there after ``timeout_s``.
        """
        atexit.unregister(self.remove)
        left, self._made, self.dirs = [d for d in self._made if d.exists()], [], {}
        stuck = [d for d in left if not _remove_dir(d, timeout_s)]
        if stuck:
            raise CgroupCleanupError("could not remove the cgroup(s) " + ", ".join(map(str, stuck)) +
                                     f" within {timeout_s:g} s; processes in them: {[_read(d / 'cgroup.procs') for d in stuck]}")

    def __enter__(self) -> LambdaCgroup:
        return self.create()

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            self.remove()
        except CgroupCleanupError:
            if error is None:
                raise
            log.exception("cleaning up after %r failed", error)  # do not hide the error that got us here


def _remove_dir(directory: Path, timeout_s: float) -> bool:
    """rmdir a cgroup once it is empty: kill its processes, then retry while the kernel reaps them."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = [int(p) for p in (_read(directory / "cgroup.procs") or "").split()]
        if pids:
            if (directory / "cgroup.kill").exists():  # v2, kernel 5.14+: one write kills them all
                try:
                    (directory / "cgroup.kill").write_text("1")
                except OSError:
                    pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                log.warning("cannot remove %s: %s", directory, exc.strerror or exc)
                return False
        time.sleep(0.02)


def remove_stale(hierarchy: Hierarchy, timeout_s: float = REMOVE_TIMEOUT_S) -> list[Path]:
    """Remove the cgroups of tuners that no longer exist (killed before they could clean up); returns them.

    A function process still inside one was put there by that dead tuner (only its wrapper moves
    processes into these cgroups) and is killed with it.
    """
    removed = []
    for parent in set(hierarchy.parents.values()):
        for directory in _ours(parent):
            pid = int(directory.name.split("-")[2])
            if pid == os.getpid() or _alive(pid):
                continue
            if _remove_dir(directory, timeout_s):
                removed.append(directory)
    return removed


def cgroups_of(pid: int, hierarchy: Hierarchy) -> list[Path]:
    """The cgroups this module made for process ``pid`` that still exist (for checks and tests)."""
    return sorted(d for parent in set(hierarchy.parents.values()) for d in _ours(parent)
                  if d.name.split("-")[2] == str(pid))


def _ours(parent: Path) -> Iterable[Path]:
    pattern = re.compile(rf"{re.escape(NAME_PREFIX)}-\d+-\d+mb-[0-9a-f]+")
    try:
        return [d for d in parent.iterdir() if d.is_dir() and pattern.fullmatch(d.name)]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
