"""The machine a measurement ran on: CPU and the instruction sets that decide speed and INT8
exactness, memory, platform, the versions of the runtimes, and how busy it was.

Busy has one meaning here (:func:`busy_cpu_s`): the CPU time the machine's processes and interrupts
used. Steal time is not in it: it is time the hypervisor gave to another machine, which no process
here used (Linux already counts guest time inside user and nice).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

from lambda_onnx.cpu import cpu_info
from lambda_onnx.resources import available_cpus, default_threads
from local.choice import cpu_identity


def machine() -> dict[str, Any]:
    """CPU model and the instruction sets that decide fp32/bf16/int8 speed, memory, versions."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(), **cpu_identity(),
                            "available_cpus": available_cpus(), "default_threads": default_threads(),
                            "load_average_before": _load()}
    info["vnni"] = cpu_info().vnni
    info["machine"] = cpu_info().machine
    try:
        mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
        info["memory_gb"] = round(int(mem.group(1)) / 2**20, 1) if mem else None
    except OSError:
        info["memory_gb"] = None
    for package in ("onnxruntime", "openvino", "torch", "numpy", "pillow"):
        try:
            info.setdefault("versions", {})[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info.setdefault("versions", {})[package] = "not installed"
    try:
        import torch

        info["torch_build"] = f"CUDA {torch.version.cuda} build, run on CPU" if torch.version.cuda else "CPU build"
    except ImportError:
        info["torch_build"] = "not installed"
    return info


def _load() -> float | None:
    """The 1-minute load average: other work on the machine inflates every number measured here."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def describe_machine(info: dict[str, Any]) -> str:
    """One line, e.g. ``AMD EPYC, 2 CPUs (avx2, fma; no VNNI), 23.5 GB, Linux …``."""
    vnni = "" if info.get("vnni") is None else ("; VNNI" if info["vnni"] else "; no VNNI")
    return (f"{info.get('cpu', '?')}, {info.get('cpus')} CPUs ({', '.join(info.get('isa', []))}{vnni}), "
            f"{info.get('memory_gb', '?')} GB, {info['platform']}, Python {info['python']}")


def busy_cpu_s() -> float:
    """CPU-seconds the machine's CPUs have been busy so far: user, nice, system, irq and softirq
    (not idle, iowait or steal)."""
    times = psutil.cpu_times()
    return times.user + times.system + sum(getattr(times, f, 0.0) for f in ("nice", "irq", "softirq"))


def busy_share(interval_s: float) -> float:
    """The share of all the machine's CPUs that was busy over the next ``interval_s`` (this call sleeps)."""
    wall, busy = time.monotonic(), busy_cpu_s()
    time.sleep(interval_s)
    return (busy_cpu_s() - busy) / (max(time.monotonic() - wall, 1e-9) * (psutil.cpu_count() or 1))


def process_cpu_s(processes: Iterable[psutil.Process], *, reaped: bool = False) -> dict[int, float]:
    """{pid: CPU-seconds (user and system) it has used so far} of the processes still there; with
    ``reaped``, each one's ended children's time too."""
    out = {}
    for process in processes:
        try:
            t = process.cpu_times()
            out[process.pid] = t.user + t.system + ((t.children_user + t.children_system) if reaped else 0.0)
        except psutil.Error:
            continue
    return out


def own_processes() -> list[psutil.Process]:
    """This process and its descendants."""
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


class OtherLoad:
    """CPUs that processes other than ``ours()`` used while a phase ran: a measurement taken while
    other work shares the CPUs is disturbed, and says so. ``cpus`` is set when the phase ends.

    A context manager, or :meth:`start` and :meth:`stop` where the phase does not fit a block.
    ``ours`` defaults to this process and its descendants (with their ended children's time).
    """

    def __init__(self, ours: Callable[[], Iterable[psutil.Process]] | None = None) -> None:
        self._ours = ours
        self.cpus: float | None = None

    def _now(self) -> tuple[float, float, float]:
        processes = own_processes() if self._ours is None else self._ours()
        return time.monotonic(), busy_cpu_s(), sum(process_cpu_s(processes, reaped=self._ours is None).values())

    def start(self) -> OtherLoad:
        self._began = self._now()
        self.cpus = None
        return self

    def stop(self) -> float | None:
        wall0, busy0, ours0 = self._began
        wall1, busy1, ours1 = self._now()
        wall = wall1 - wall0
        self.cpus = round(max(0.0, (busy1 - busy0) - (ours1 - ours0)) / wall, 2) if wall > 0 else None
        return self.cpus

    def __enter__(self) -> OtherLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
