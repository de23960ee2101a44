"""The one preprocessing implementation (Pillow + NumPy, no torch), used by every runner.

bytes -> decoded image (limits, format, EXIF orientation) -> RGB -> resize shorter side and
centre-crop in one step -> normalised NCHW float32.

It reproduces torchvision's ``ImageClassification`` preset (resize, centre crop, scale, normalise)
on PIL images; ``tests/test_preprocess.py`` proves it against ``weights.transforms()``.
"""

from __future__ import annotations

import io
import re
import time
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lambda_onnx.errors import InvalidImageError, PayloadTooLargeError, UnsupportedMediaTypeError
from lambda_onnx.limits import MAX_IMAGE_BYTES, MAX_PIXELS
from lambda_onnx.sidecar import Preprocessing

try:  # HEIC/HEIF (iPhone photos); optional so the core still imports without it.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is in every requirements file
    pass

# Only these decoders ever see user bytes. Pillow can open many more formats (EPS would run
# Ghostscript), so the list is explicit. MPO is how Pillow opens many phone JPEGs.
Image.init()  # register every plugin now, so ``formats=`` below can name them
ALLOWED_FORMATS = tuple(
    name for name in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF") if name in Image.OPEN
)
FORMAT_NAMES = ", ".join({"WEBP": "WebP", "HEIF": "HEIC/HEIF"}.get(name, name) for name in ALLOWED_FORMATS if name != "MPO")

# Formats we recognise from their first bytes but do not classify: a 415, not a 400.
_UNSUPPORTED_SIGNATURES = (
    (b"%PDF-", "PDF"),
    (b"%!PS", "PostScript/EPS"),
    (b"8BPS", "Photoshop PSD"),
)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

# Above this many pixels the resized intermediate is not made: only the crop box is resampled.
MAX_INTERMEDIATE_PIXELS = 4_000_000

# Fast path for large photos: used only when the source is at least this many times the
# resize target, so small images keep the exact reference path.
FAST_PATH_MIN_RATIO = 2.0
# JPEG draft decoding keeps at least this multiple of the resize target before the final resize.
# Measured on the 8 evaluation photos upscaled to 12 MP JPEGs (python -m export's fast-path check),
# ResNet-50 preprocessing: 2 decodes at 1/4 DCT scale in 16.6 ms with a mean difference from the
# reference path of 0.2-1.9 levels (8-bit); 4 decodes at 1/2 scale in 22.8 ms with 0.2-0.6 levels;
# the reference path takes about 80 ms. Re-saving a photo as a q90 JPEG alone moves it 0.5-1.6
# levels, so the faster setting's difference is of the order of one JPEG re-encode.
# https://pillow.readthedocs.io/en/stable/reference/Image.html#PIL.Image.Image.draft
DRAFT_OVERSAMPLE = 2
# Pillow's reducing_gap: a box reduction first, then the real filter over at least this ratio.
# It only matters where draft cannot (PNG, WebP, HEIC, ...): on 12 MP RGB images the resize took
# 7.8 ms with 2.0, 8.8 ms with 3.0 and 25 ms without, the mean difference 0.25, 0.16 and 0 levels.
# https://pillow.readthedocs.io/en/stable/reference/Image.html#PIL.Image.Image.resize
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Decoded:
    """An image decoded under the limits, in its upright orientation."""

    image: Image.Image
    format: str
    width: int  # upright, at full resolution (before any draft reduction)
    height: int
    num_bytes: int
    drafted: bool  # JPEG decoded at reduced scale (fast path)


@dataclass(frozen=True)
class Prepared:
    """The model input plus what the steps measured."""

    tensor: np.ndarray  # (1, 3, crop, crop) float32
    decode_ms: float
    preprocess_ms: float
    fast_path: bool


def _sniff_unsupported(data: bytes) -> str | None:
    head = data[:1024].lstrip()
    for signature, name in _UNSUPPORTED_SIGNATURES:
        if head.startswith(signature):
            return name
    lowered = head[:1024].lower()
    if lowered.startswith(b"<svg") or (lowered.startswith(b"<?xml") and b"<svg" in lowered):
        return "SVG"
    return None


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Size after resizing the shorter side to ``size``, exactly as torchvision computes it."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def centre_crop(new_w: int, new_h: int, crop: int) -> tuple[int, int, int, int]:
    """The ``crop`` x ``crop`` centre of a ``new_w`` x ``new_h`` image, rounded as torchvision does."""
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    return left, top, left + crop, top + crop


def crop_box(width: int, height: int, params: Preprocessing) -> tuple[float, float, float, float]:
    """The centre crop of the resized image, expressed in source pixel coordinates.

    Resizing only this box (``Image.resize(box=...)``) gives the crop directly, so a 10000x1
    image never becomes a 2,320,000x232 intermediate.
    """
    new_w, new_h = resized_size(width, height, params.resize_size)
    left, top, right, bottom = centre_crop(new_w, new_h, params.crop_size)
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, right * sx, bottom * sy)


def use_fast_path(width: int, height: int, params: Preprocessing) -> bool:
    return min(width, height) >= FAST_PATH_MIN_RATIO * params.resize_size


def decode(data: bytes, params: Preprocessing | None = None, fast: bool = False,
           max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode image bytes, enforcing the byte and pixel limits before pixels are allocated.

    With ``fast`` and a JPEG at least twice the resize target, decodes at a reduced DCT scale.
    """
    if not data:
        raise InvalidImageError("empty image: received 0 bytes")
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"image is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    unsupported = _sniff_unsupported(data)
    if unsupported:
        raise UnsupportedMediaTypeError(f"{unsupported} is not supported; send one of {FORMAT_NAMES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLargeError(
                    f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels; "
                    f"the limit is {max_pixels / 1e6:.0f} megapixels"
                )
            drafted = False
            if fast and params is not None and image.format in ("JPEG", "MPO") and use_fast_path(width, height, params):
                target = params.resize_size * DRAFT_OVERSAMPLE
                image.draft("RGB", (target, target))
                drafted = image.size != (width, height)
            # Animated GIF/WebP, multi-page TIFF: the first frame. ``is_animated`` looks one frame
            # ahead; ``n_frames`` would parse every frame (a 4 MB GIF can declare 100,000 of them).
            if getattr(image, "is_animated", False):
                image.seek(0)
            image.load()
            stored = image.size
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of a 12 MP photo
    except (PayloadTooLargeError, InvalidImageError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared.group(1)) / 1e6:,.0f} megapixels" if declared else "too many pixels"
        raise PayloadTooLargeError(
            f"image declares {size}; the limit is {max_pixels / 1e6:.0f} megapixels (decompression bomb?)"
        ) from None
    except UnidentifiedImageError:
        hint = image_format_hint(data)
        if hint:
            raise InvalidImageError(f"could not decode the image: it starts like a {hint} file but is corrupt") from None
        raise InvalidImageError(f"could not decode the image: not a {FORMAT_NAMES} file") from None
    except Exception as exc:
        # Truncated files, broken checksums, corrupt headers: Pillow raises a zoo of types (OSError,
        # SyntaxError, ValueError, EOFError, IndexError, ...), and its AVIF plugin and pillow-heif raise
        # RuntimeError (found by tests/test_fuzz.py). Everything in this block reads the caller's
        # bytes, so whatever fails here is the input's fault: a 400, never a 500.
        kind = image_format_hint(data) or "image"
        raise InvalidImageError(f"could not decode the {kind}: {str(exc)[:200]}") from None
    if image.size[0] * image.size[1] == 0:
        raise InvalidImageError("image has no pixels")
    if image.size != stored:  # EXIF orientations 5-8 swap the axes
        width, height = height, width
    return Decoded(image, image.format or "unknown", width, height, len(data), drafted)


# What the first bytes announce: (format name for messages, content type for clients).
_SIGNATURES: tuple[tuple[object, str, str], ...] = (
    (lambda d: d[:3] == b"\xff\xd8\xff", "JPEG", "image/jpeg"),
    (lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", "PNG", "image/png"),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", "WebP", "image/webp"),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), "GIF", "image/gif"),
    (lambda d: d[:2] == b"BM", "BMP", "image/bmp"),
    (lambda d: d[:4] in (b"II*\x00", b"MM\x00*"), "TIFF", "image/tiff"),
    (lambda d: d[4:8] == b"ftyp" and d[8:12] in (b"avif", b"avis"), "AVIF", "image/avif"),
    (lambda d: d[4:8] == b"ftyp", "HEIC", "image/heic"),
)


def sniff(data: bytes) -> tuple[str, str] | None:
    """``(format name, content type)`` that the first bytes announce, or None; the decoder decides
    what the bytes really are."""
    for matches, name, content_type in _SIGNATURES:
        if matches(data):  # type: ignore[operator]
            return name, content_type
    return None


def image_format_hint(data: bytes) -> str | None:
    """The format the first bytes announce, for error messages about corrupt files."""
    found = sniff(data)
    return found[0] if found else None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB.

    High bit depths are scaled, not clipped (a 16-bit grey PNG would otherwise turn white), and
    transparency is composited over white, which is how a browser shows it.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float32)
        if mode == "F":
            top = 1.0 if values.size and float(np.nanmax(values)) <= 1.0 else 255.0
        elif mode == "I" and values.size and float(values.max()) > 65535:
            top = float(2**32 - 1)
        else:
            top = 65535.0
        grey = np.clip(np.nan_to_num(values) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info) or (
        mode in ("L", "RGB") and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_crop(image: Image.Image, params: Preprocessing, fast: bool = False) -> Image.Image:
    """Resize the shorter side to ``resize_size`` and centre-crop ``crop_size``.

    The reference path resizes then crops, exactly as torchvision does. When that intermediate
    would be large (an extreme aspect ratio: 10000x1 would become 2,320,000x232), only the crop
    box is resampled instead (:func:`crop_box`), which differs from the reference by at most a
    level on a few pixels. The fast path (large sources only) adds Pillow's reducing resize.
    """
    width, height = image.size
    resample = _RESAMPLE[params.interpolation]
    crop = params.crop_size
    new_w, new_h = resized_size(width, height, params.resize_size)
    if fast and use_fast_path(width, height, params):
        return image.resize((crop, crop), resample, box=crop_box(width, height, params), reducing_gap=REDUCING_GAP)
    if new_w * new_h > MAX_INTERMEDIATE_PIXELS:
        return image.resize((crop, crop), resample, box=crop_box(width, height, params))
    return image.resize((new_w, new_h), resample).crop(centre_crop(new_w, new_h, crop))


def normalise(image: Image.Image, params: Preprocessing) -> np.ndarray:
    """8-bit RGB -> (1, 3, H, W) float32, ``(x / 255 - mean) / std``."""
    pixels = np.asarray(image, dtype=np.float32)
    mean = np.asarray(params.mean, dtype=np.float32)
    std = np.asarray(params.std, dtype=np.float32)
    chw = ((pixels / np.float32(255.0) - mean) / std).transpose(2, 0, 1)
    return np.ascontiguousarray(chw[None])


def prepare(image: bytes | Image.Image, params: Preprocessing, fast: bool = False) -> tuple[Prepared, Decoded]:
    """Bytes (or an already opened image) to the model input, with per-step timings."""
    start = time.perf_counter()
    if isinstance(image, Image.Image):
        upright = ImageOps.exif_transpose(image)  # its size is the upright one, as decode() reports
        decoded = Decoded(upright, image.format or "PIL", *upright.size, 0, False)
    else:
        decoded = decode(image, params, fast=fast)
    decoded_at = time.perf_counter()
    try:
        rgb = to_rgb(decoded.image)
        tensor = normalise(resize_crop(rgb, params, fast=fast), params)
    except (OSError, ValueError) as exc:
        raise InvalidImageError(f"could not convert the image: {exc}") from None
    done = time.perf_counter()
    fast_used = decoded.drafted or (fast and use_fast_path(*decoded.image.size, params))
    return Prepared(tensor, (decoded_at - start) * 1e3, (done - decoded_at) * 1e3, fast_used), decoded
