"""``--runtime auto``: the runtime x precision the benchmark chose on this machine (see :mod:`local.choice`)."""

from __future__ import annotations

from pathlib import Path

from lambda_onnx.sidecar import int8_path
from local.choice import FASTEST_FILE, load_fastest


def resolve_auto(model: Path, runtime: str, model_given: bool, bench_json: Path | None = None) -> tuple[Path, str, str]:
    """``(model, runtime, why)``: ``runtime="auto"`` becomes the fastest parity-checked runtime x
    precision that ``python -m local bench`` measured on this machine (ONNX Runtime without one)."""
    if runtime != "auto":
        return model, runtime, ""
    choice = load_fastest(bench_json or FASTEST_FILE)
    if choice is None:
        return model, "onnxruntime", "no benchmark of this machine yet (`python -m local bench` picks the fastest)"
    why = (f"the fastest whose parity holds on this CPU: {choice['runtime']} {choice['precision']}, {choice['median_ms']} ms "
           f"(bench of {choice['measured']})")
    if choice.get("skipped"):
        why += "; faster but skipped: " + "; ".join(f"{x['name']} ({x['median_ms']} ms): {x['why']}" for x in choice["skipped"])
    if choice["precision"] == "int8" and not model_given:
        int8 = int8_path(model)
        if int8.is_file():
            model = int8
        else:
            why += f"; {int8} is not exported (`python -m export --int8`), so serving {model}"
    return model, choice["runtime"], why
