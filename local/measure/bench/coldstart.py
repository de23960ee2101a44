"""Cold start: a fresh process to its first prediction, and its peak memory, for each handler."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lambda_onnx import photos as sample_photos
from lambda_onnx.sidecar import Sidecar, sidecar_path
from local.measure.bench.config import BenchConfig, ColdStartRow, Step, noop
from local.measure.bench.inference import torch_module
from local.measure.core.images import DEFAULT_PHOTO

ROOT = Path(__file__).resolve().parents[3]

# Run in a fresh interpreter: import a handler module, invoke it once, report. The parent times
# the whole thing, from before the process starts to the line after the first prediction.
_CHILD = r"""
import time
started = time.perf_counter()
import base64, importlib, json, resource, sys
module = importlib.import_module(sys.argv[1])
imported = time.perf_counter()

class Context:
    function_name = "bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bench"
    memory_limit_in_mb = 3008
    aws_request_id = "bench-1"
    log_group_name = log_stream_name = "bench"

    def get_remaining_time_in_millis(self):
        return 900000

with open(sys.argv[2], "rb") as fh:
    event = {"image": base64.b64encode(fh.read()).decode()}
response = module.handler(event, Context())
done = time.perf_counter()
body = json.loads(response["body"])
canary = getattr(getattr(getattr(module, "SERVICE", None), "classifier", None), "canary", None)
try:  # VmHWM: this program's peak. ru_maxrss would include the parent's, which exec does not reset.
    with open("/proc/self/status") as fh:
        peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024.0
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print("BENCH_RESULT " + json.dumps({
    "status": response["statusCode"], "top1": (body.get("predictions") or [{}])[0].get("label"),
    "import_ms": (imported - started) * 1e3, "first_invoke_ms": (done - imported) * 1e3, "peak_rss_mb": peak,
    "canary_ms": canary.ms if canary is not None else None, "canary": canary.status if canary is not None else None,
}), flush=True)
"""


def _cold_once(module: str, image: Path, env: dict[str, str], timeout: float = 300) -> dict[str, Any]:
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", _CHILD, module, str(image)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    result = None
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line.split(" ", 1)[1])
            result["wall_ms"] = (time.perf_counter() - start) * 1e3
            break
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise RuntimeError(f"{module} did not finish within {timeout:.0f} s") from None
    if result is None or result["status"] != 200:
        raise RuntimeError(f"{module} failed: {(stderr or '').strip().splitlines()[-1:] or result}")
    return result


def measure_cold_starts(fp32: Path, int8: Path, config: BenchConfig, on_step: Step = noop) -> list[ColdStartRow]:
    """Fresh process -> first prediction, and peak RSS after it, for each handler (median of runs)."""
    meta = Sidecar.load(sidecar_path(fp32))
    image = config.cache / "chelsea.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(sample_photos.upscaled_jpeg(sample_photos.by_name(DEFAULT_PHOTO), megapixels=0.3))
    handlers: list[tuple[str, str, dict[str, str], str]] = []
    try:
        import torch

        weights = config.cache / f"{meta.arch}-state-dict.pth"
        if not weights.is_file():
            on_step(f"saving a {meta.arch} state dict for the PyTorch handler")
            torch.save(torch_module(meta).state_dict(), weights)
        build = f"torch {torch.__version__}, " + (f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build")
        handlers.append(("pytorch handler fp32", "local.measure.bench.torch_handler",
                         {"TORCH_ARCH": meta.arch, "TORCH_WEIGHTS": str(weights.resolve())}, build))
    except ImportError:
        on_step("PyTorch is not installed: its handler's cold start is not measured")
    for path in (fp32, int8):
        precision = Sidecar.load(sidecar_path(path)).precision
        # MODEL_VERIFY=size as in the image, which verified the model's sha256 when it was built.
        handlers.append((f"onnx handler {precision}", "lambda_onnx.handler",
                         {"MODEL_PATH": str(Path(path).resolve()), "MODEL_VERIFY": "size"},
                         f"onnxruntime {importlib.metadata.version('onnxruntime')}"))
    rows: list[ColdStartRow] = []
    for name, module, env, build in handlers:
        runs = []
        for i in range(config.cold_runs):
            on_step(f"cold start {i + 1}/{config.cold_runs}: {name} ({module})")
            runs.append(_cold_once(module, image, env))
        rows.append({"handler": name, "module": module, "build": build, "runs": len(runs),
                     "median_ms": float(np.median([r["wall_ms"] for r in runs])),
                     "import_ms": float(np.median([r["import_ms"] for r in runs])),
                     "first_invoke_ms": float(np.median([r["first_invoke_ms"] for r in runs])),
                     "peak_rss_mb": float(max(r["peak_rss_mb"] for r in runs)), "top1": runs[-1]["top1"],
                     "canary": runs[-1].get("canary"),
                     "canary_ms": float(np.median([r["canary_ms"] for r in runs])) if runs[-1].get("canary_ms") is not None else None,
                     "samples_ms": [round(r["wall_ms"], 1) for r in runs]})
    return rows


