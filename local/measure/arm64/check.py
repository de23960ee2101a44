"""The arm64 check: the exported models hold their parity and INT8 canary on ONNX Runtime's aarch64 kernels.

For each emulated arm64 CPU (:data:`local.measure.arm64.qemu.CPUS`), the guest loads every model with
the core's :class:`~lambda_onnx.classifier.Classifier`, whose canary runs at load with the tolerances of
:mod:`lambda_onnx.canary`, and keeps the canary photo's logits. Here, the same models are loaded on
this x86 CPU, and the logits compared: fp32 within ``FP32_MAX_ABS_LOGIT`` of x86 fp32; INT8 within
``INT8_MIN_REL_RMS`` of x86 INT8 (exact integer kernels on both sides compute the same integers) with
the same top-1. The CPU facts the core reads under emulation, and the INT8 kernel it chooses from
them, are checked too. Correctness only: the emulator says nothing about arm64's speed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lambda_onnx.canary import FP32_MAX_ABS_LOGIT, INT8_MIN_REL_RMS, rel_rms
from local.defaults import ARTIFACTS, DEFAULT_ACCURACY_MODEL, DEFAULT_MODEL
from local.measure.arm64 import guest
from local.measure.arm64.qemu import CPUS, find_qemu, run_guest
from local.measure.arm64.rootfs import SUITE, build_rootfs, default_cache, install_lock, lock_digest
from local.measure.core.machine import machine

ARM64_OUT = ARTIFACTS / "arm64"
SHORT_CPUS = ("neoverse-n1",)
Step = Callable[[str], None]


def _noop(message: str) -> None:
    pass


@dataclass(frozen=True)
class Arm64Config:
    models: tuple[Path, ...] = ()  # empty: EfficientNet-Lite0 fp32 + INT8 (and, unless short, ResNet-50 fp32 + INT8)
    short: bool = False  # the CI mode: one model (fp32 + INT8), one CPU (Graviton2)
    cpus: tuple[str, ...] = ()  # qemu -cpu names; empty: Graviton2 (short) or Graviton2 and Graviton3
    cache: Path | None = None  # the root file system and wheels; None: ~/.cache/resnet-serverless/arm64
    out: Path = ARM64_OUT
    qemu: str | None = None  # the emulator's path or name; None: qemu-aarch64, else qemu-aarch64-static
    timeout_s: float = 1800.0  # per emulated CPU


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Arm64Result:
    date: str
    host: dict[str, Any]  # this machine (its CPU does the emulating)
    qemu: dict[str, str]
    guest: dict[str, Any]  # Debian suite, Python, the wheels' versions
    cpus: list[dict[str, Any]] = field(default_factory=list)  # per emulated CPU: facts, per-model figures
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # how long each stage of the check took (not a speed)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def default_models(config: Arm64Config, on_step: Step = _noop) -> list[Path]:
    """EfficientNet-Lite0 (real weights) fp32 and INT8, and unless ``short`` ResNet-50 fp32 and INT8:
    ``models/`` if exported there, else exported into ``<out>/cache/models`` (needs the export's torch)."""
    from local.measure.bench.models import int8_for

    cache = Path(config.out) / "cache" / "models"
    wanted = [(DEFAULT_ACCURACY_MODEL, "efficientnet_lite0", False)]
    if not config.short:
        wanted.append((DEFAULT_MODEL, "resnet50", True))
    models: list[Path] = []
    for default, arch, random_weights in wanted:
        fp32 = default if default.is_file() else cache / f"{arch}.onnx"
        if not fp32.is_file():
            from export.pipeline import export_model

            on_step(f"exporting {arch}{' (random weights)' if random_weights else ''} to {fp32}")
            export_model(arch, out=fp32, random_weights=random_weights)
        models += [fp32, int8_for(fp32, cache, on_step)]
    return models


def run_check(config: Arm64Config, on_step: Step = _noop) -> Arm64Result:
    """Build (or reuse) the emulated machine, run the models on each arm64 CPU and here, compare."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    qemu = find_qemu(config.qemu)
    cache = Path(config.cache) if config.cache else default_cache()
    rootfs = build_rootfs(cache, on_step)
    seconds["rootfs"] = time.perf_counter() - start
    start = time.perf_counter()
    site = install_lock(rootfs, cache, on_step)
    seconds["wheels"] = time.perf_counter() - start
    models = list(config.models) or default_models(config, on_step)
    for model in models:
        if not Path(model).is_file():
            raise FileNotFoundError(f"model not found: {model}")
    cpus = list(config.cpus) or list(SHORT_CPUS if config.short else CPUS)

    start = time.perf_counter()
    on_step(f"running {len(models)} model(s) on this x86 CPU")
    x86 = {str(Path(m).resolve()): guest.probe(Path(m).resolve()) for m in models}
    seconds["x86"] = time.perf_counter() - start
    result = Arm64Result(date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), host=machine(),
                         qemu={"path": str(qemu.path), "version": qemu.version},
                         guest={"debian": SUITE, "lock_sha256": lock_digest(), "site": str(site), "rootfs": str(rootfs)},
                         seconds=seconds)
    for cpu in cpus:
        start = time.perf_counter()
        on_step(f"running {len(models)} model(s) under qemu -cpu {cpu} (emulated: minutes, not a timing)")
        data = run_guest(qemu, cpu, rootfs, site, models, config.timeout_s)
        seconds[f"guest {cpu}"] = time.perf_counter() - start
        result.guest.update(python=data["cpu"]["python"], versions=data["versions"])
        result.cpus.append(compare(cpu, data, x86, result.checks))
    return result


def compare(cpu: str, data: dict[str, Any], x86: dict[str, dict[str, Any]], checks: list[Check]) -> dict[str, Any]:
    """Append this CPU's checks to ``checks``; return its facts and figures for the report."""
    facts, expected = data["cpu"], CPUS[cpu].flags if cpu in CPUS else None
    flags = tuple(facts["isa"])
    checks.append(Check(f"{cpu}: lambda_onnx.cpu reads an arm64 CPU", facts["machine"] == "aarch64" and facts["vnni"] is None
                        and (expected is None or flags == expected),
                        f"{facts['describe']}" + ("" if expected is None or flags == expected else f"; expected {expected}")))
    arm_kernel = not facts["precise_int8_auto"] and not facts["int8_saturates"]
    checks.append(Check(f"{cpu}: INT8 kernel choice", arm_kernel and facts["int8_kernel_auto"].startswith("aarch64"),
                        f"auto keeps ONNX Runtime's default kernel ({facts['int8_kernel_auto']}); the x86 U8U8 switch "
                        f"{'is not' if not facts['precise_int8_auto'] else 'IS'} taken"))
    rows = []
    for arm in data["models"]:
        here = x86[arm["model"]]
        name = f"{cpu}: {Path(arm['model']).name}"
        canary = arm["canary"]
        figure = (f"max|Δlogit| {canary['max_abs_logit']:.3g}" if arm["precision"] == "fp32"
                  else f"rel RMS {canary['rel_rms']:.4f}") if canary.get("rel_rms") is not None else "not run"
        checks.append(Check(f"{name}: canary at load ({arm['int8_kernel'] or arm['precision']})",
                            arm["loaded"] and canary["status"] == "passed",
                            arm["error"] or f"{canary['photo']} vs PyTorch: {figure} ({canary['limit']})"))
        got, ref = np.asarray(arm["logits"], dtype=np.float32), np.asarray(here["logits"], dtype=np.float32)
        max_abs = float(np.max(np.abs(got.astype(np.float64) - ref))) if got.shape == ref.shape else float("inf")
        relative = rel_rms(ref, got) if got.shape == ref.shape else float("inf")
        top1 = got.shape == ref.shape and int(np.argmax(got)) == int(np.argmax(ref))
        if arm["precision"] == "fp32":
            ok, detail = max_abs <= FP32_MAX_ABS_LOGIT, f"max|Δlogit| {max_abs:.3g} (≤ {FP32_MAX_ABS_LOGIT:g})"
        else:
            ok = relative <= INT8_MIN_REL_RMS and top1
            detail = f"rel RMS {relative:.3g} (≤ {INT8_MIN_REL_RMS:g}), max|Δlogit| {max_abs:.3g}, top-1 {'same' if top1 else 'DIFFERS'}"
        kernel = here["int8_kernel"] or "fp32"
        checks.append(Check(f"{name}: logits vs x86 ({kernel})", ok, detail))
        rows.append({"model": Path(arm["model"]).name, "arch": arm["arch"], "precision": arm["precision"],
                     "random_weights": arm["random_weights"], "photo": arm["photo"], "arm64_kernel": arm["int8_kernel"],
                     "x86_kernel": here["int8_kernel"], "canary_arm64": canary, "canary_x86": here["canary"],
                     "vs_x86_max_abs_logit": max_abs, "vs_x86_rel_rms": relative, "vs_x86_top1_same": top1})
    return {"cpu": cpu, "stands_for": CPUS[cpu].stands_for if cpu in CPUS else "", "facts": facts,
            "features": data["features"], "onnxruntime_stderr": data.get("stderr", []), "models": rows}
