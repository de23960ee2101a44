"""The machine a measurement ran on: CPU and the instruction sets that decide speed and INT8
exactness, memory, platform, the versions of the runtimes, and how busy it was."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from pathlib import Path
from typing import Any

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
