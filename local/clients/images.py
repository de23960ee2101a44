"""Client-side helpers for images a user picks: fit them under the serverless payload limit."""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from lambda_onnx.errors import InvalidImageError
from lambda_onnx.limits import MAX_IMAGE_BYTES
from lambda_onnx.preprocess import decode, to_rgb

# Far more pixels than any classifier here looks at (224-256 px crops), and a JPEG of this size
# fits the limit at any sensible quality.
DOWNSCALE_LONG_SIDE = 2048


def downscale_to_fit(data: bytes, max_bytes: int = MAX_IMAGE_BYTES, long_side: int = DOWNSCALE_LONG_SIDE) -> bytes:
    """Re-encode an image as a JPEG no larger than ``max_bytes`` (upright, RGB, at most ``long_side`` px)."""
    image = to_rgb(decode(data, max_bytes=max(len(data), max_bytes)).image)
    image = ImageOps.contain(image, (long_side, long_side), Image.Resampling.LANCZOS) if max(image.size) > long_side else image
    for quality in (90, 80, 70, 55, 40):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
    raise InvalidImageError("could not make the image small enough")
