"""``python -m lambda_onnx.verify MODEL``: check a model against its sidecar (size and sha256), and
that its canary is beside it and belongs to it.

The container image runs this at build time. The image never changes afterwards, so the
function's cold start checks only the file size (``MODEL_VERIFY=size``) instead of hashing the
whole model again (about 150 ms for ResNet-50's 102 MB on every cold start).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lambda_onnx.canary import Canary, canary_path
from lambda_onnx.errors import ModelLoadError
from lambda_onnx.sidecar import load_verified


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m lambda_onnx.verify MODEL.onnx", file=sys.stderr)
        return 2
    model = Path(argv[0])
    try:
        meta = load_verified(model, verify_sha256=True)
        if not canary_path(model).is_file():  # the function checks it at every cold start: the image must hold it
            raise ModelLoadError(f"no canary {canary_path(model)} beside the model: copy the .canary.json the export "
                                 "wrote with it (or export the model again with `python -m export`)")
        canary = Canary.load(canary_path(model))
    except ModelLoadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    if canary.model_sha256 != meta.sha256:
        print(f"error: {canary_path(model)} belongs to another model (sha256 {canary.model_sha256[:12]}…, the model is "
              f"{meta.sha256[:12]}…): pass the canary exported with this model", file=sys.stderr)
        return 1
    print(f"verified {argv[0]}: {meta.label}, {meta.onnx_bytes:,} bytes, sha256 {meta.sha256}; canary {canary.photo}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
