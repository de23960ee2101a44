"""Lambda SnapStart: the loaded model is in the snapshot; after a restore the CPU is read again.

With SnapStart (the zip package, see template.yaml) Lambda runs the handler module's init once, when
a version is published: the model, the ONNX Runtime session and the canary's check are made then and
saved in a Firecracker snapshot, which new execution environments resume from instead of
initialising. The INT8 kernel was chosen for the CPU the snapshot was made on (:mod:`lambda_onnx.cpu`:
the exact U8U8 kernel on x86-64 without VNNI, the default one with VNNI). A snapshot "can be restored
on the same physical machine, or a different machine with the same hardware configuration" (Marc
Brooker, on SnapStart for Python, https://infoq.com/news/2024/12/aws-lambda-snapstart-python-net), so
the CPU should not change kind; if it ever does, a snapshot made on a VNNI host must not answer with
the saturating kernel on one without. So the after-restore hook (the runtime's ``snapshot_restore_py``,
https://docs.aws.amazon.com/lambda/latest/dg/snapstart-runtime-hooks-python.html; it must finish within
10 s) reads ``/proc/cpuinfo`` again and, when the restored CPU would choose another INT8 kernel, builds
the session again and runs the canary again; the answer's ``host`` is the restored CPU and
``model.canary.restored`` says what the restore did.

The canary, not the flags, is the proof: ONNX Runtime's kernels (MLAS) pick their instructions by
CPUID once per process, at the first session, i.e. before the snapshot, so a rebuilt session may still
run the snapshot host's code; the canary run on the restored host catches a kernel that is wrong here
(and :class:`lambda_onnx.classifier.Classifier` falls back to the exact kernel, or refuses), and code using
instructions the restored CPU lacks stops the process (SIGILL) rather than answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from lambda_onnx.classifier import Classifier
from lambda_onnx.cpu import CpuInfo, cpu_info, int8_kernel_name, use_precise_int8


@dataclass(frozen=True)
class RestoreCheck:
    """What the after-restore hook found and did."""

    snapshot_cpu: CpuInfo
    restored_cpu: CpuInfo
    snapshot_kernel: str | None  # the INT8 kernel the snapshot's CPU chooses (None: not an ONNX Runtime INT8 model)
    restored_kernel: str | None  # the one the restored CPU chooses
    rebuilt: bool  # the session was built again and the canary run again
    kernel: str | None  # the kernel the model now runs with (after any canary fallback)
    canary: str  # the canary's status now
    ms: float

    def log_fields(self) -> dict[str, Any]:
        return {"snapshot_cpu": self.snapshot_cpu.describe(), "cpu": self.restored_cpu.describe(),
                "rebuilt": self.rebuilt, "int8_kernel": self.kernel, "canary": self.canary, "restore_check_ms": round(self.ms, 1)}


def chosen_kernel(classifier: Classifier, info: CpuInfo) -> str | None:
    """The INT8 kernel ``classifier``'s kernel choice picks on ``info``; None for a model it does not apply to."""
    if classifier.sidecar.precision != "int8" or classifier.runtime != "onnxruntime":
        return None
    return int8_kernel_name(use_precise_int8(classifier.int8_kernel_choice, info), info)


def after_restore(classifier: Classifier, snapshot_cpu: CpuInfo) -> RestoreCheck:
    """Re-read the CPU; rebuild and re-check ``classifier`` if it would choose another INT8 kernel than
    ``snapshot_cpu`` did. Raises :class:`lambda_onnx.errors.ModelLoadError` when the re-checked canary
    fails (and failures are not allowed), as a load would."""
    start = time.perf_counter()
    cpu_info.cache_clear()  # the cached facts are the snapshot host's
    restored = cpu_info()
    before, after = chosen_kernel(classifier, snapshot_cpu), chosen_kernel(classifier, restored)
    rebuilt = before != after
    if rebuilt:
        classifier.recheck(f"rebuilt after restore: the snapshot's CPU ({snapshot_cpu.describe()}) chose {before}, "
                           f"this one ({restored.describe()}) chooses {after}; canary run again")
    else:
        kept = "kept after restore: " + ("same INT8 kernel on this CPU" if before else "no INT8 kernel to choose")
        classifier.canary = replace(classifier.canary, restored=kept)
        classifier.model = replace(classifier.model, canary=classifier.canary.summary())
        classifier.host = restored
    return RestoreCheck(snapshot_cpu, restored, before, after, rebuilt, classifier.engine.int8_kernel,
                        classifier.canary.status, (time.perf_counter() - start) * 1e3)


def register_after_restore(hook: Callable[[], None]) -> bool:
    """Register ``hook`` with the runtime's after-restore hooks; False where the runtime has none.

    ``snapshot_restore_py`` ships with Lambda's Python managed runtimes (not in the package, not in
    container images' task roots); elsewhere there is nothing to restore from.
    """
    try:
        from snapshot_restore_py import register_after_restore as register
    except ImportError:
        return False
    register(hook)
    return True
