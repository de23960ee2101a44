"""A PyTorch Lambda handler built the way the PyTorch-on-Lambda project this one answers built it (see
ARCHITECTURE.md) — for the benchmark only.

That project served ``torchvision`` models from PyTorch in Lambda: import torch and
torchvision, build the model and load its state dict at import, preprocess with the weights'
torchvision transforms, run eager fp32. ``python -m local bench`` imports this module in a fresh
process to measure that cold start and memory against :mod:`lambda_onnx.handler`; nothing serves it.

Environment: ``TORCH_ARCH`` (default resnet50) and ``TORCH_WEIGHTS`` (a state dict file).
"""

from __future__ import annotations

import time

_INIT_STARTED = time.perf_counter()

import base64  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from export.registry import build  # noqa: E402  (torchvision.models.get_model + load_state_dict)

_BUILT = build(os.environ.get("TORCH_ARCH", "resnet50"), weights_file=Path(os.environ["TORCH_WEIGHTS"]))
MODEL = _BUILT.module.eval()
TRANSFORM = _BUILT.reference_transforms
CATEGORIES = _BUILT.categories
INIT_MS = (time.perf_counter() - _INIT_STARTED) * 1e3


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``{"image": "<base64>"}`` -> top-5, as the reference handler answered."""
    image = Image.open(io.BytesIO(base64.b64decode(event["image"]))).convert("RGB")
    with torch.inference_mode():
        probs = MODEL(TRANSFORM(image)[None]).softmax(dim=-1)[0]
    top = torch.topk(probs, 5)
    predictions = [{"class_id": int(i), "label": CATEGORIES[int(i)], "probability": float(p)}
                   for p, i in zip(top.values, top.indices)]
    return {"statusCode": 200, "body": json.dumps({"predictions": predictions, "init_ms": INIT_MS})}
