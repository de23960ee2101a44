"""One instance of the fleet: ``python -m local serve`` confined to its share of this machine's CPUs.

Each instance gets a cgroup of its own (:mod:`local.lambda_env.cgroups`, as the emulator's functions
do): a CFS quota of its CPUs and a memory limit (2 GiB per CPU, a c7i.large's 4 GiB for 2 vCPUs),
entered before the server's first instruction, so ``local serve`` sees the quota and runs one lane
per CPU of it, as it does in a container. Where no cgroup can be made (no root, no delegated cgroup),
the fallback is CPU affinity (``taskset``) to whole CPUs, said so; a fractional share without a cgroup
is refused.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from lambda_onnx.errors import BackendUnavailableError, ClassifierError
from local.lambda_env.cgroups import CGROUP_ROOT, PROC_CGROUP, CgroupUnavailableError, CpuMemoryLimits, LambdaCgroup
from local.serve.process import ServeProcess

MEMORY_MB_PER_CPU = 2048  # a c7i.large / c7a.large: 4 GiB for 2 vCPUs

BOOTING, UP, DRAINING, STOPPED, DEAD, FAILED = "booting", "up", "draining", "stopped", "dead", "failed"


class ConfinementError(ClassifierError):
    """The instances cannot be given their CPU share here; the message says why and what would."""

    code = "confinement_unavailable"


class InstanceCgroup(LambdaCgroup):
    """A cgroup with ``cpus`` CPUs of quota and ``memory_mb`` of memory (no swap), not Lambda's ratio."""

    def __init__(self, cpus: float, memory_mb: int, machine_cpus: float, **kwargs: object) -> None:
        super().__init__(memory_mb, **kwargs)  # type: ignore[arg-type]
        self.limits = CpuMemoryLimits(memory_mb, cpus, machine_cpus, self.limits.period_us)


@dataclass(frozen=True)
class Confinement:
    """How instances are held to their share: ``"cgroup"``, ``"affinity"`` or ``"none"``, and why."""

    kind: str
    cpus: float  # per instance
    memory_mb: int
    note: str


def choose_confinement(cpus: float, memory_mb: int, mode: str = "auto", *, root: Path = CGROUP_ROOT,
                       proc_cgroup: Path = PROC_CGROUP) -> Confinement:
    """Check that instances of ``cpus`` CPUs can be confined here (``mode``: auto, cgroup, affinity,
    none) by making one cgroup and removing it; :class:`ConfinementError` if they cannot. ``root``
    and ``proc_cgroup`` are where cgroups are looked for (tests point them elsewhere)."""
    if mode not in ("auto", "cgroup", "affinity", "none"):
        raise ValueError(f"confinement is auto, cgroup, affinity or none, not {mode!r}")
    machine = float(len(os.sched_getaffinity(0)))
    if mode in ("auto", "cgroup"):
        probe = InstanceCgroup(cpus, memory_mb, machine, root=root, proc_cgroup=proc_cgroup)
        try:
            probe.create()
            note = f"cgroup {probe.hierarchy.describe() if probe.hierarchy else ''}: {cpus:g} CPU quota, {memory_mb} MiB each"
            probe.remove()
            return Confinement("cgroup", cpus, memory_mb, note)
        except CgroupUnavailableError as exc:
            if mode == "cgroup":
                raise ConfinementError(f"no cgroup for the instances: {exc.message}") from None
            why = exc.message
    else:
        why = f"--confine {mode}"
    if mode == "none":
        return Confinement("none", cpus, memory_mb, "not confined: every instance may use every CPU (--confine none)")
    if cpus != math.floor(cpus) or shutil.which("taskset") is None:
        raise ConfinementError(f"cannot confine the instances: {why}; and CPU affinity (taskset) can only give whole CPUs "
                               f"(each instance's share is {cpus:g}). Run as root, in a delegated cgroup, or with "
                               "--confine none to share the CPUs unconfined")
    return Confinement("affinity", cpus, memory_mb, f"CPU affinity (taskset), {cpus:g} CPU(s) each, no memory limit: "
                                                    f"no cgroup here ({why})")


class Instance:
    """One ``local serve`` process of the fleet, its confinement and its life: booting -> up ->
    draining -> stopped, or dead (it exited by itself) / failed (it never answered)."""

    def __init__(self, index: int, model: Path, serve_args: list[str], confinement: Confinement, slot: int) -> None:
        self.index, self.name, self.confinement, self.slot = index, f"i{index}", confinement, slot
        self.state = BOOTING
        self.cancelled = False  # stop() came first: a boot still under way stops its server itself
        self.spawned = time.monotonic()
        self.healthy_at: float | None = None  # the first /health answer
        self.up_at: float | None = None  # taking traffic (after any --boot-delay padding)
        self.ended_at: float | None = None
        self.error = ""
        self.exit_code: int | None = None
        self.final_stats: dict[str, str] = {}  # HAProxy's counters for it, read just before it was deleted there
        self._cgroup: InstanceCgroup | None = None
        self._lock = threading.Lock()
        # A session of its own: a terminal's Ctrl-C reaches the fleet, which stops its instances in
        # order, instead of every instance at once (which the fleet would take for deaths).
        wrapper = ["setsid"]
        if confinement.kind == "cgroup":
            self._cgroup = InstanceCgroup(confinement.cpus, confinement.memory_mb, float(len(os.sched_getaffinity(0))))
            wrapper += self._cgroup.create().wrapper()
        elif confinement.kind == "affinity":
            cpus = sorted(os.sched_getaffinity(0))
            share = int(confinement.cpus)
            mine = [cpus[(slot * share + k) % len(cpus)] for k in range(share)]
            wrapper += ["taskset", "-c", ",".join(map(str, mine))]
        self.server = ServeProcess(model, *serve_args, wrapper=wrapper)

    @property
    def boot_s(self) -> float | None:
        """Spawn to first healthy answer."""
        return None if self.healthy_at is None else self.healthy_at - self.spawned

    @property
    def address(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def boot(self) -> None:
        """Start the server and wait for its first healthy answer (raises
        :class:`~lambda_onnx.errors.BackendUnavailableError` with its last line if it never answers)."""
        if self.cancelled:
            raise BackendUnavailableError(f"{self.name} was stopped before it started")
        self.spawned = time.monotonic()
        self.server.start()
        if self.cancelled:
            self.server.stop()
            raise BackendUnavailableError(f"{self.name} was stopped while it booted")
        self.healthy_at = time.monotonic()

    def cpu_seconds(self) -> float:
        """CPU time the instance has used: its cgroup's counter where it keeps one (v2 ``cpu.stat``
        ``usage_usec``, v1 ``cpuacct.usage`` when cpuacct is mounted with cpu), else the process tree's."""
        directory = self._cgroup.dirs.get("cpu") if self._cgroup else None
        if directory is not None:
            try:
                if self._cgroup and self._cgroup.version == 2:
                    for line in (directory / "cpu.stat").read_text().splitlines():
                        if line.startswith("usage_usec "):
                            return int(line.split()[1]) / 1e6
                elif (directory / "cpuacct.usage").is_file():
                    return int((directory / "cpuacct.usage").read_text()) / 1e9
            except (OSError, ValueError):
                pass
        return _tree_cpu_seconds(self.server.pid)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the server process (only that one: its lanes are orphaned, as in a crash)."""
        if self.server.pid is not None and self.server.alive():
            os.kill(self.server.pid, sig)

    def exited(self) -> bool:
        """The server process ended (by itself or by a signal) without being stopped here."""
        return self.server.pid is not None and not self.server.alive()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (the server drains), SIGKILL after ``timeout_s``; then the cgroup goes, killing
        whatever is left in it (a dead server's orphaned lanes). Idempotent."""
        self.cancelled = True
        with self._lock:
            if self.exit_code is None:
                self.exit_code = self.server.returncode
            self.server.stop(timeout_s)
            self.server.close()
            if self._cgroup is not None:
                self._cgroup.remove()
            self.ended_at = self.ended_at or time.monotonic()


def _tree_cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            pass
    return total
