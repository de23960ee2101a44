"""``python -m lambda_onnx.verify MODEL``: check a model against its sidecar (size and sha256).

The container image runs this at build time. The image never changes afterwards, so the
function's cold start checks only the file size (``MODEL_VERIFY=size``) instead of hashing the
whole model again (about 150 ms for ResNet-50's 102 MB on every cold start).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lambda_onnx.errors import ModelLoadError
from lambda_onnx.sidecar import load_verified


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m lambda_onnx.verify MODEL.onnx", file=sys.stderr)
        return 2
    try:
        meta = load_verified(Path(argv[0]), verify_sha256=True)
    except ModelLoadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"verified {argv[0]}: {meta.label}, {meta.onnx_bytes:,} bytes, sha256 {meta.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
