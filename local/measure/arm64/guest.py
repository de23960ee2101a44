"""What runs on each side of the arm64 check: load a model the way every runner does, keep its canary's logits.

This file imports the torch-free core only (``lambda_onnx``), so it runs unchanged inside the emulated
arm64 Debian (``python3 guest.py OUT.json MODEL...`` under qemu, the lock's aarch64 wheels on its path)
and in the host's process (:func:`probe`, the x86 side of the comparison).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

# Exit status of a guest whose /proc/cpuinfo is the host's (a qemu that does not emulate it): the
# guest stops before onnxruntime, which reads that file at import and crashes on an x86 one.
NO_ARM_CPUINFO = 3


def cpu_facts() -> dict[str, Any]:
    """This process's CPU as :mod:`lambda_onnx.cpu` reads it, and the INT8 kernel it would choose."""
    from lambda_onnx.cpu import cpu_info, int8_kernel_name, use_precise_int8

    info = cpu_info()
    return {**info.section(), "describe": info.describe(), "int8_saturates": info.int8_saturates,
            "precise_int8_auto": use_precise_int8("auto", info), "int8_kernel_auto": int8_kernel_name(False, info),
            "python": platform.python_version()}


def probe(model: str | Path) -> dict[str, Any]:
    """Load ``model`` with :class:`~lambda_onnx.classifier.Classifier` (its canary runs at load, as in
    every runner) and classify the canary photo once more to keep the logits for the comparison.

    A canary that fails here raises in the loader; the failure is recorded, and the model is loaded
    again with the failure allowed so that its logits can still be compared.
    """
    import numpy as np

    from lambda_onnx.canary import Canary, canary_path
    from lambda_onnx.classifier import Classifier
    from lambda_onnx.errors import ModelLoadError
    from lambda_onnx.preprocess import prepare

    error = ""
    try:
        classifier = Classifier(model)
    except ModelLoadError as exc:
        error = exc.message
        classifier = Classifier(model, allow_canary_failure=True)
    canary = Canary.load(canary_path(model))
    prepared, _ = prepare(canary.image, classifier.sidecar.preprocessing, fast=False)
    logits = np.asarray(classifier.infer(prepared.tensor)[0], dtype=np.float32)
    return {"model": str(model), "arch": classifier.sidecar.arch, "precision": classifier.sidecar.precision,
            "random_weights": classifier.sidecar.random_weights, "loaded": not error, "error": error,
            "runtime": classifier.engine.runtime, "int8_kernel": classifier.engine.int8_kernel,
            "canary": classifier.canary.to_dict(), "photo": canary.photo, "logits": logits.tolist()}


def versions() -> dict[str, str]:
    import importlib.metadata

    return {name: importlib.metadata.version(name) for name in ("onnxruntime", "numpy", "pillow")}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: guest.py OUT.json MODEL.onnx...", file=sys.stderr)
        return 2
    out, models = Path(argv[0]), argv[1:]
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    if platform.machine() == "aarch64" and "Features" not in cpuinfo:
        print("this /proc/cpuinfo is not an arm64 one (the emulator shows the host's)", file=sys.stderr)
        return NO_ARM_CPUINFO
    features = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("Features")), [])
    result = {"cpu": cpu_facts(), "features": features, "versions": versions(), "models": [probe(m) for m in models]}
    out.write_text(json.dumps(result) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
