"""The images measurements send when they are given none: real photos from :mod:`lambda_onnx.photos`."""

from __future__ import annotations

from lambda_onnx import photos

DEFAULT_PHOTO = "chelsea"  # every measurement's default photo, by name (lambda_onnx.photos)
MEGAPIXELS = 1.0


def default_image() -> bytes:
    """The default photo as it is stored (a small JPEG)."""
    return photos.by_name(DEFAULT_PHOTO).read()


def web_size_image() -> bytes:
    """A 1-megapixel JPEG of the default photo (upscaled), a phone picture sent at web size."""
    return photos.upscaled_jpeg(photos.by_name(DEFAULT_PHOTO), megapixels=MEGAPIXELS)
