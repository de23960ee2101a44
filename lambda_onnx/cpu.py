"""The CPU this process runs on, and which INT8 kernel is exact on it.

Lambda documents only AVX2 for x86_64, and which host a cold start lands on varies, so every
answer names the CPU it was computed on. The part that decides *correctness* here is VNNI:
ONNX Runtime's U8S8 INT8 kernels on x86-64 CPUs without it (AVX2, AVX-512 without VNNI) multiply
with VPMADDUBSW, whose 16-bit intermediate "might suffer from saturation"; with AVX512-VNNI or
AVX-VNNI, and on arm64, there is "no such issue"
(https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html, and ONNX Runtime
issues #5849 and #6004: an INT8 model right on a VNNI Xeon and wrong on a non-VNNI one). Measured
here on an AMD EPYC with AVX2 and no VNNI, EfficientNet-Lite0 INT8 against fp32 on 8 photos: the
default kernel kept top-1 on 7 of 8 with max |Δp| 0.51; ONNX Runtime's U8U8 kernel
(``session.x64quantprecision``) kept 8 of 8 with max |Δp| 0.030, what the VNNI machine measured.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict

# The instruction sets that decide speed and correctness here, in the order they are shown.
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# arm64: the dot-product (asimddp: SDOT/UDOT) and int8 matrix-multiply (i8mm) extensions carry INT8 there.
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "bf16", "sve")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
X86_MACHINES = frozenset({"x86_64", "amd64", "i686", "i386"})

# The INT8 kernel a runner asks ONNX Runtime for. "auto" picks the exact one for this CPU;
# "precise" forces the U8U8 kernel; "fast" forces the default U8S8 kernel (which saturates on
# x86-64 without VNNI: only for experts measuring it, and the load-time canary still guards it).
INT8_KERNEL_CHOICES = ("auto", "precise", "fast")
INT8_KERNEL_ENV = "INT8_KERNEL"

_PROC_CPUINFO = Path("/proc/cpuinfo")


class HostBody(TypedDict):
    """The ``host`` section of every answer (:mod:`lambda_onnx.contract` re-exports it with the other bodies)."""

    cpu: str
    machine: str
    isa: list[str]
    vnni: bool | None


@dataclass(frozen=True)
class CpuInfo:
    """What every answer says about the CPU: its name, architecture and the flags that matter."""

    model: str  # e.g. "AMD EPYC", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    machine: str  # platform.machine(): "x86_64", "aarch64", ...
    flags: tuple[str, ...]  # the relevant ISA flags this CPU has (X86_FLAGS or ARM_FLAGS)
    vnni: bool | None  # x86-64: AVX512-VNNI or AVX-VNNI present; None elsewhere

    @property
    def x86(self) -> bool:
        return self.machine.lower() in X86_MACHINES

    @property
    def int8_saturates(self) -> bool:
        """ONNX Runtime's default U8S8 kernel may saturate here (x86-64 without VNNI)."""
        return self.x86 and not self.vnni

    def describe(self) -> str:
        """One line, e.g. ``AMD EPYC, x86_64 (avx2, fma; no VNNI)``."""
        flags = ", ".join(self.flags) or "no flags read"
        vnni = "" if self.vnni is None else ("; VNNI" if self.vnni else "; no VNNI")
        return f"{self.model}, {self.machine} ({flags}{vnni})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def section(self) -> HostBody:
        """The ``host`` section of every answer (see :mod:`lambda_onnx.contract`)."""
        return {"cpu": self.model, "machine": self.machine, "isa": list(self.flags), "vnni": self.vnni}

    @classmethod
    def from_section(cls, host: Mapping[str, Any]) -> CpuInfo:
        """Back from an answer's ``host`` section (what a client reads)."""
        return cls(str(host.get("cpu") or "unknown CPU"), str(host.get("machine") or "?"), tuple(host.get("isa") or ()),
                   host.get("vnni"))


def parse_cpuinfo(text: str, machine: str) -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (x86 ``flags`` or arm64 ``Features``)."""
    arm = machine.lower() in ("aarch64", "arm64")
    found_name = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    part = re.search(r"^CPU part\s*:\s*(\S+)$", text, re.MULTILINE)
    if found_name:
        name = found_name.group(1).strip()
    elif arm and part:  # arm64 kernels print no model name; the part number names the core
        name = f"arm64 CPU part {part.group(1)}"
    else:
        name = platform.processor() or "unknown CPU"
    found = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.MULTILINE)
    present = set(found.group(1).split()) if found else set()
    wanted = ARM_FLAGS if arm else X86_FLAGS
    flags = tuple(flag for flag in wanted if flag in present)
    x86 = machine.lower() in X86_MACHINES
    vnni = bool(VNNI_FLAGS & present) if x86 and found else None
    return CpuInfo(name, machine, flags, vnni)


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once per process: a process never changes host)."""
    machine = platform.machine() or "unknown"
    try:
        text = _PROC_CPUINFO.read_text(errors="replace")
    except OSError:  # not Linux: name and architecture only
        return CpuInfo(platform.processor() or "unknown CPU", machine, (), None)
    return parse_cpuinfo(text, machine)


def int8_kernel_choice(choice: str | None = None) -> str:
    """The INT8 kernel asked for: ``choice``, else ``$INT8_KERNEL``, else ``"auto"`` (checked)."""
    value = (choice or os.environ.get(INT8_KERNEL_ENV) or "auto").strip().lower()
    if value not in INT8_KERNEL_CHOICES:
        raise ValueError(f"the INT8 kernel must be one of {', '.join(INT8_KERNEL_CHOICES)}, got {value!r} "
                         f"(from {'the option' if choice else '$' + INT8_KERNEL_ENV})")
    return value


def use_precise_int8(choice: str, info: CpuInfo | None = None) -> bool:
    """Whether ONNX Runtime should run quantised models with its precise U8U8 kernel.

    ``auto``: exactly where the default kernel may saturate (x86-64 without VNNI); with VNNI and on
    arm64 nothing changes. ``precise``/``fast`` force one or the other (``precise`` only changes
    anything on x86-64: ONNX Runtime ignores the option elsewhere).
    """
    info = info or cpu_info()
    if choice == "precise":
        return True
    if choice == "fast":
        return False
    return info.int8_saturates


def int8_kernel_name(precise: bool, info: CpuInfo | None = None) -> str:
    """What the kernel a quantised model runs with is called in answers and logs."""
    info = info or cpu_info()
    if not info.x86:
        return f"{info.machine} int8 ({'dot-product' if 'asimddp' in info.flags else 'neon'})"
    if precise:
        return "u8u8 precise" + ("" if info.vnni is False else " (forced)")
    if info.vnni:
        return "u8s8 vnni"
    return "u8s8 saturating (no VNNI)"
