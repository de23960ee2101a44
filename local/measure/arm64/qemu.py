"""qemu's user-mode emulator: which one to use, which arm64 CPUs it plays, and running the guest's Python.

User mode translates one arm64 process at a time; the guest's system calls go to this machine's
kernel, and its absolute paths are looked up in the root file system first (``-L``), then here.
Emulated arm64 code is tens of times slower than native: this is a correctness check, never a timing.

The emulator must show the guest an arm64 ``/proc/cpuinfo``, built from the emulated CPU's features,
as qemu 10.0 (Debian bookworm-backports: ``apt-get install -t bookworm-backports qemu-user``) does.
ONNX Runtime reads that file at import; under Debian bookworm's own qemu 7.2, which passes the host's
x86 file through, onnxruntime 1.32's import crashed (SIGSEGV, seen here). The guest checks the file
before it imports onnxruntime, so an emulator without it fails with that reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.measure.arm64 import guest
from local.measure.arm64.rootfs import ROOT, Arm64SetupError, guest_python

CANDIDATES = ("qemu-aarch64", "qemu-aarch64-static")
GUEST_SCRIPT = Path(guest.__file__).resolve()


@dataclass(frozen=True)
class ArmCpu:
    """An arm64 CPU qemu can play, what it stands for, and the flags :mod:`lambda_onnx.cpu` must read on it."""

    name: str  # qemu's -cpu
    stands_for: str
    flags: tuple[str, ...]  # expected CpuInfo.flags, in lambda_onnx.cpu.ARM_FLAGS order


# Lambda's arm64 functions run on AWS Graviton2 (Neoverse N1: dot product, no int8 matrix multiply);
# Graviton3 (Neoverse V1) adds i8mm, bf16 and SVE, and ONNX Runtime's INT8 GEMM takes its i8mm kernels there.
CPUS = {
    "neoverse-n1": ArmCpu("neoverse-n1", "AWS Graviton2 (Neoverse N1), what Lambda's arm64 runs on", ("asimd", "asimddp")),
    "neoverse-v1": ArmCpu("neoverse-v1", "AWS Graviton3 (Neoverse V1)", ("asimd", "asimddp", "i8mm", "bf16", "sve")),
}


@dataclass(frozen=True)
class Qemu:
    path: Path
    version: str  # e.g. "10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"


def find_qemu(explicit: str | None = None) -> Qemu:
    """``explicit``, else the first of qemu-aarch64 / qemu-aarch64-static on PATH."""
    names = (explicit,) if explicit else CANDIDATES
    for name in names:
        found = shutil.which(name) if name else None
        if found:
            out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30).stdout
            match = re.search(r"version\s+(.+)", out)
            return Qemu(Path(found), match.group(1).strip() if match else out.strip())
    raise Arm64SetupError(f"no arm64 emulator ({' or '.join(n for n in names if n)}) on PATH: install qemu's user-mode "
                          "emulator, one that emulates an arm64 /proc/cpuinfo (Debian bookworm: "
                          "apt-get install -t bookworm-backports qemu-user, 10.0)")


def run_guest(qemu: Qemu, cpu: str, rootfs: Path, site: Path, models: list[Path], timeout_s: float) -> dict[str, Any]:
    """Run :mod:`local.measure.arm64.guest` on ``models`` under ``qemu -cpu CPU``: its JSON result."""
    python, _ = guest_python(rootfs)
    with tempfile.TemporaryDirectory(prefix="arm64-guest-") as tmp:
        out = Path(tmp) / "guest.json"
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}  # nothing of this process's settings (INT8_KERNEL, ...)
        command = [str(qemu.path), "-cpu", cpu, "-L", str(rootfs), str(python), str(GUEST_SCRIPT), str(out),
                   *[str(Path(m).resolve()) for m in models]]
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp, timeout=timeout_s,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Arm64SetupError(f"the arm64 guest ({cpu}) did not finish in {timeout_s:.0f} s") from None
        if result.returncode == guest.NO_ARM_CPUINFO:
            raise Arm64SetupError(f"{qemu.path} ({qemu.version}) shows the guest this machine's x86 /proc/cpuinfo, on "
                                  "which onnxruntime crashes at import: use a newer qemu (Debian bookworm: "
                                  "apt-get install -t bookworm-backports qemu-user, 10.0)")
        if result.returncode != 0 or not out.is_file():
            raise Arm64SetupError(f"the arm64 guest ({cpu}) failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
        data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    data["stderr"] = [line for line in result.stderr.splitlines() if line.strip()][-20:]
    return data
