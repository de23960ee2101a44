"""The one preprocessing implementation (Pillow + NumPy, no torch), used by every runner.

bytes -> decoded image (limits, format, EXIF orientation) -> RGB as a browser or an image viewer
shows it -> resize shorter side and centre-crop in one step -> normalised NCHW float32.

It reproduces torchvision's ``ImageClassification`` preset (resize, centre crop, scale, normalise)
on PIL images; ``tests/test_preprocess.py`` proves it against ``weights.transforms()``, and
``tests/test_image_formats.py`` proves the pixels of every accepted format and sample layout.
"""

from __future__ import annotations

import io
import re
import struct
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, TiffImagePlugin, UnidentifiedImageError

from lambda_onnx import decoder_log
from lambda_onnx.errors import InvalidImageError, PayloadTooLargeError, UnsupportedMediaTypeError
from lambda_onnx.limits import MAX_IMAGE_BYTES, MAX_PIXELS
from lambda_onnx.sidecar import Preprocessing

try:  # HEIC/HEIF (iPhone photos); optional so the core still imports without it.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is in every requirements file
    pass

Image.init()  # register every plugin now, so ``formats=`` below can name them

# --- Which formats are classified -------------------------------------------------------------
# Accepted: the raster formats web browsers display (JPEG, PNG/APNG, GIF, WebP, AVIF, BMP, ICO/CUR),
# those of cameras and photo apps (TIFF, HEIC/HEIF, JPEG 2000), and the plain formats that image
# processing and ML pipelines write (Netpbm PBM/PGM/PPM and greyscale PFM, TGA, QOI). Pillow decodes
# each in this process, with the libraries its wheel bundles (libjpeg-turbo, libtiff, libwebp,
# libavif, OpenJPEG; libheif from pillow-heif): no external program ever runs. Every decoder is
# code that a sender's bytes reach, so the list stops where people stop keeping pictures.
# Key: Pillow's format id; value: the name in messages. Pillow tries them in this order; TGA has no
# signature to check, so it is tried last, after every format that has one. MPO (how Pillow opens
# many phone JPEGs) comes from the JPEG plugin.
_ACCEPTED_IN_ORDER = {
    "JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF", "HEIF": "HEIC/HEIF", "AVIF": "AVIF",
    "TIFF": "TIFF", "BMP": "BMP", "ICO": "ICO", "CUR": "CUR", "JPEG2000": "JPEG 2000",
    "PPM": "PBM/PGM/PPM", "QOI": "QOI", "TGA": "TGA",
}
ACCEPTED = {name: label for name, label in _ACCEPTED_IN_ORDER.items() if name in Image.OPEN}
ALLOWED_FORMATS = tuple(ACCEPTED)
FORMAT_NAMES = ", ".join(ACCEPTED.values())
# The file name endings of those formats (Pillow's own registry): what the tools that read a folder
# of images (calibration, evaluation) and the app's upload box take.
IMAGE_SUFFIXES = frozenset(suffix for suffix, name in Image.registered_extensions().items() if name in ACCEPTED)

# Recognised by Pillow but not classified: a 415 that names the format, never a 400 (the file is
# fine, we do not take it). Pillow only parses their headers to recognise them; their pixels are
# never decoded. (name in messages, why)
_TEXTURE, _LEGACY, _DATA = "a texture format", "a legacy format", "measurements with no one way to show them"
REFUSED = {
    # an external program would have to render them
    "EPS": ("EPS/PostScript", "it needs Ghostscript, an external program"),
    "WMF": ("WMF/EMF", "a vector drawing that needs a renderer this service does not run"),
    # Pillow only identifies these; it has no decoder for them
    "BUFR": ("BUFR", "weather data that Pillow only identifies"),
    "GRIB": ("GRIB", "weather data that Pillow only identifies"),
    "HDF5": ("HDF5", "scientific data that Pillow only identifies"),
    "MPEG": ("MPEG", "video that Pillow only identifies"),
    # Pillow reads only the flattened copy Photoshop adds with "Maximize Compatibility"; without it
    # that copy is blank, and a blank picture classified is a confident wrong answer.
    # https://github.com/webtoon/psd/pull/44, https://asktimgrey.com/2025/07/03/maximize-compatibility-in-photoshop-2
    "PSD": ("Photoshop PSD", "only the flattened copy saved with Maximize Compatibility is readable"),
    "FITS": ("FITS", "astronomical " + _DATA),
    "SPIDER": ("SPIDER", "electron-microscopy " + _DATA),
    "MCIDAS": ("McIdas", "satellite " + _DATA),
    "DDS": ("DDS", "a GPU " + _TEXTURE),
    "BLP": ("BLP", "a game " + _TEXTURE),
    "FTEX": ("FTEX", "a game " + _TEXTURE),
    "GBR": ("GIMP brush", "a brush, not a picture"),
    "ICNS": ("Apple ICNS", "an icon set; browsers do not show it"),
    "XBM": ("XBM", "an X11 icon written as C source"),
    "XPM": ("XPM", "an X11 icon written as C source"),
    "DIB": ("DIB", "a bitmap without its file header; send it as a BMP"),
    "IPTC": ("IPTC/NAA", "metadata, not a picture"),
    "XVTHUMB": ("XV thumbnail", "a thumbnail cache"),
    "FLI": ("FLI/FLC animation", _LEGACY),
    "DCX": ("DCX", "a legacy fax format"),
    "IM": ("IFUNC IM", _LEGACY),
    "IMT": ("IM Tools", _LEGACY),
    "MSP": ("Microsoft Paint MSP", _LEGACY),
    "PCD": ("Kodak Photo CD", _LEGACY),
    "PCX": ("PCX", _LEGACY),
    "PIXAR": ("Pixar", _LEGACY),
    "SGI": ("SGI", _LEGACY),
    "SUN": ("Sun raster", _LEGACY),
}
# Anything a later Pillow registers is refused by name too, until someone decides otherwise
# (tests/test_image_formats.py fails on it, so someone does).
_RECOGNISED = ALLOWED_FORMATS + tuple(name for name in Image.OPEN if name not in ACCEPTED)

# Formats recognised from their first bytes that Pillow cannot open (or could only with Ghostscript),
# and Photoshop files whose headers Pillow may choke on: a 415, not a 400.
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
    What the decoders print goes to the request's :mod:`lambda_onnx.decoder_log`, not to stderr.
    """
    if not data:
        raise InvalidImageError("empty image: received 0 bytes")
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"image is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    unsupported = _sniff_unsupported(data)
    if unsupported:
        raise UnsupportedMediaTypeError(f"{unsupported} is not supported; send one of {FORMAT_NAMES}")
    with decoder_log.captured():
        return _decode(data, params, fast, max_pixels)


def _decode(data: bytes, params: Preprocessing | None, fast: bool, max_pixels: int) -> Decoded:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_RECOGNISED)
            if image.format not in ACCEPTED and image.format != "MPO":
                label, why = REFUSED.get(image.format or "", (image.format or "this format", "not among those classified"))
                image.close()
                raise UnsupportedMediaTypeError(f"{label} is not supported ({why}); send one of {FORMAT_NAMES}")
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
            raw_mode = _raw_mode(image)  # the tile is gone once loaded
            image.load()
            stored = image.size
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of a 12 MP photo
            fmt = image.format or "unknown"
            if fmt == "PNG":
                _png_declarations(image, data, raw_mode)
            upright = _full_depth(image, data, raw_mode)
    except (PayloadTooLargeError, InvalidImageError, UnsupportedMediaTypeError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared.group(1)) / 1e6:,.0f} megapixels" if declared else "too many pixels"
        raise PayloadTooLargeError(
            f"image declares {size}; the limit is {max_pixels / 1e6:.0f} megapixels (decompression bomb?)"
        ) from None
    except UnidentifiedImageError:
        hint = image_format_hint(data)
        layout = _unreadable_tiff_layout(data) if hint == "TIFF" else None
        if layout:
            raise UnsupportedMediaTypeError(f"a TIFF with {layout} is not supported; send one of {FORMAT_NAMES}") from None
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
    if upright.size[0] * upright.size[1] == 0:
        raise InvalidImageError("image has no pixels")
    if upright.size != stored:  # EXIF orientations 5-8 swap the axes
        width, height = height, width
    return Decoded(upright, fmt, width, height, len(data), drafted)


def _raw_mode(image: ImageFile.ImageFile) -> str:
    """How the decoder unpacks the stored samples (``"RGB;16B"``: 16-bit big-endian RGB)."""
    if not image.tile:
        return ""
    args = image.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if isinstance(args, tuple) and args else ""


def _unreadable_tiff_layout(data: bytes) -> str | None:
    """For a TIFF that Pillow could not open: its sample layout, when that (not damage) is why.

    Pillow has no mode for some valid layouts (32-bit float RGB, 64-bit float, 16-bit float,
    two-sample grey, ...) and says "unknown pixel mode"; a file it cannot read because of how it
    was written is unsupported (415), not corrupt (400).
    """
    try:
        TiffImagePlugin.TiffImageFile(io.BytesIO(data))
        return None
    except SyntaxError as exc:
        if str(exc) != "unknown pixel mode":
            return None
    except Exception:
        return None
    try:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
        stream = io.BytesIO(data)
        stream.seek(ifd.next)
        ifd.load(stream)
        bits = ifd.get(258, (1,))
        kind = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}.get(ifd.get(339, (1,))[0], "untyped")
        samples = ifd.get(277, 1)
    except Exception:
        return "a sample layout Pillow cannot read"
    return f"{samples} {kind} sample{'s' if samples != 1 else ''} of {bits[0]} bits per pixel"


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


# --- Samples to 8 bits, as the file declares them --------------------------------------------------
# Formats whose alpha channel was added to a format that had none: a writer that leaves it all
# zero means "no alpha", and browsers show such a 32-bit BMP (or icon) opaque: Chromium treats BMP
# pixels as opaque until it sees a non-zero alpha (third_party/blink/renderer/platform/image-decoders/
# bmp/bmp_image_reader.cc, ProcessNonRLEData), Firefox likewise for 32-bit icons (nsBMPDecoder.cpp).
# (TGA 2.0 states it in its extension area's attributes type, which Pillow does not read.) PNG,
# WebP and the others define alpha from the start: there, all zero really is invisible.
_ALPHA_OPTIONAL = frozenset({"BMP", "DIB", "ICO", "CUR", "TGA"})
_HIGH_DEPTH_GREY = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# 16-bit colour that Pillow unpacks to 8 bits per sample (it has no 16-bit RGB mode), keeping each
# sample's high byte. Decoding the file again with the byte order swapped gives the low bytes.
# Premultiplied (RGBa) data is left out: Pillow un-premultiplies the 8-bit values.
_WIDE_RAW = re.compile(r"^(RGB|RGBA|RGBX|LA);16[BLN]$")
_SWAP = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}
_CHUNK_ROWS = 256  # rows combined at a time: the 16-bit copy never exists for the whole image


def _png_declarations(image: Image.Image, data: bytes, raw_mode: str) -> None:
    """What Pillow leaves out of a PNG's ``info``: the sBIT chunk (significant bits per channel) as
    ``info["significant_bits"]``; and a tRNS key in the scale of Pillow's 8-bit samples for 1, 2 and
    4-bit greyscale (Pillow keeps the raw key, 0..3 for 2 bits, while it scales pixels to 0..255)."""
    sbit = _png_chunk(data, b"sBIT")
    if sbit:
        # One entry per Pillow band: 16-bit grey+alpha opens as RGBA (grey three times, then alpha).
        image.info["significant_bits"] = (sbit[0],) * 3 + (sbit[1],) if raw_mode == "LA;16B" and len(sbit) == 2 else tuple(sbit)
    low_bits = {"L;2": 2, "L;4": 4}.get(raw_mode)
    key = image.info.get("transparency")
    if low_bits and isinstance(key, int):
        image.info["transparency"] = key * 255 // (2**low_bits - 1)


def _png_chunk(data: bytes, kind: bytes) -> bytes | None:
    """The body of the first ``kind`` chunk before the image data, if any (bounded walk)."""
    offset = 8
    for _ in range(256):
        if offset + 8 > len(data):
            return None
        length, name = struct.unpack(">I4s", data[offset : offset + 8])
        if name == kind:
            return data[offset + 8 : offset + 8 + length]
        if name in (b"IDAT", b"IEND"):
            return None
        offset += 12 + length
    return None


def _tiff_tag(image: Image.Image, tag: int) -> tuple | None:
    tags = getattr(image, "tag_v2", None)
    value = tags.get(tag) if tags is not None else None
    if value is None:
        return None
    return value if isinstance(value, tuple) else (value,)


def _tiff_sample_range(image: Image.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """SMinSampleValue/SMaxSampleValue (tags 340/341), per sample, when the TIFF declares them.

    MinSampleValue/MaxSampleValue (280/281) are not used: the TIFF 6.0 specification says they
    must not change how an image looks (section 8, "MaxSampleValue"). Viewers that display
    scientific TIFFs map the S-range to black..white, and so does this.
    """
    smin, smax = _tiff_tag(image, 340), _tiff_tag(image, 341)
    if smin is None and smax is None:
        return None
    lo, hi = _type_range(image)
    lows = np.asarray(smin if smin is not None else (lo,), dtype=np.float64)
    highs = np.asarray(smax if smax is not None else (hi,), dtype=np.float64)
    if not (np.isfinite(lows).all() and np.isfinite(highs).all()) or np.broadcast(lows, highs).size == 0:
        return None
    lows, highs = np.broadcast_arrays(lows, highs)
    if (highs <= lows).any():
        return None
    return lows, highs


def _type_range(image: Image.Image) -> tuple[float, float]:
    """The range of the stored sample type: TIFF BitsPerSample and SampleFormat (12-bit data in
    16-bit samples: 0..4095; signed: -32768..32767), else the container's."""
    if image.format == "TIFF":
        bits = int((_tiff_tag(image, 258) or (16,))[0])
        if (_tiff_tag(image, 339) or (1,))[0] == 2:
            return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
        return 0.0, 2.0**bits - 1
    return 0.0, 65535.0


def _unscaled_bits(image: Image.Image, colour_max: np.ndarray) -> np.ndarray | None:
    """PNG sBIT: the significant bits of each channel, when the samples were not scaled up to them.

    The PNG specification requires encoders to scale samples to the full 16 bits (sBIT then only
    records the original depth, and viewers ignore it); a file whose every colour sample still fits
    in the declared bits was evidently not scaled, and a viewer that honours sBIT (libpng's
    png_set_shift) shows it by those bits. https://www.w3.org/TR/png-3/#12Sample-depth-scaling
    """
    sbit = image.info.get("significant_bits")
    if not sbit or len(sbit) < len(colour_max):
        return None
    bits = np.asarray(sbit, dtype=np.int64)
    colour = bits[: len(colour_max)]
    if (colour >= 16).all() or (colour < 1).any() or (colour_max >= 2**colour).any():
        return None
    return bits


def _to_8bit(values: np.ndarray, lo, hi) -> np.ndarray:
    """``lo``..``hi`` (scalars, or one per channel) to 0..255, rounded; NaN as ``lo``. In float32
    and in place: a 50 MP 16-bit image needs one 200 MB temporary, not several in float64."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    scaled = values.astype(np.float32)
    np.nan_to_num(scaled, copy=False, nan=float(lo.min()))
    scaled -= lo.astype(np.float32)
    scaled *= (255.0 / (hi - lo)).astype(np.float32)
    scaled += np.float32(0.5)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def _full_depth(image: Image.Image, data: bytes, raw_mode: str) -> Image.Image:
    """16-bit colour, when its low bytes matter: a PNG colour key (tRNS), or fewer significant bits
    than 16 (PNG sBIT, TIFF SMin/SMaxSampleValue). Otherwise the image as Pillow decoded it.

    Pillow keeps only the high byte of 16-bit colour samples, which loses a 16-bit tRNS key (browsers
    match it exactly: a 16-bit PNG with a colour key stays transparent) and darkens 12-bit data in
    16-bit samples to 1/16. The file is decoded a second time with the raw byte order swapped, which
    yields each sample's low byte, and the two halves are combined a band of rows at a time.
    """
    if not _WIDE_RAW.match(raw_mode) or image.mode not in ("RGB", "RGBA"):
        return image
    key = image.info.get("transparency") if image.format == "PNG" and image.mode == "RGB" else None
    declared = _tiff_sample_range(image) if image.format == "TIFF" else None
    fewer_bits = any(bits < 16 for bits in image.info.get("significant_bits", ())[:3])
    if key is None and declared is None and not fewer_bits:
        return image
    try:
        low = Image.open(io.BytesIO(data), formats=[str(image.format)])
        low.tile = [tile._replace(args=_swap_byte_order(tile.args)) for tile in low.tile]
        low.load()
        ImageOps.exif_transpose(low, in_place=True)
    except (OSError, ValueError, KeyError, SyntaxError):  # no unpacker for the swapped order: 8 bits it is
        if key is not None:  # the key on the high bytes, which the 8-bit samples hold
            image.info["transparency"] = tuple(int(k) >> 8 for k in key)
        return image
    channels = len(image.getbands())
    colour = 3
    lo, hi = np.zeros(channels), np.full(channels, 65535.0)
    if declared is not None:
        lows, highs = (np.resize(a, channels) for a in declared)
        lo, hi = lows, highs
    width, height = image.size
    wide_max = np.zeros(channels, dtype=np.int64)
    if image.info.get("significant_bits"):  # needs every sample's maximum before any is scaled
        for top in range(0, height, _CHUNK_ROWS):
            band = _wide_band(image, low, top)
            wide_max = np.maximum(wide_max, band.reshape(-1, channels).max(axis=0))
        bits = _unscaled_bits(image, wide_max[:colour])
        if bits is not None:
            hi = 2.0 ** np.resize(bits, channels) - 1
    out = np.empty((height, width, channels + (1 if key is not None else 0)), dtype=np.uint8)
    for top in range(0, height, _CHUNK_ROWS):
        band = _wide_band(image, low, top)
        rows = slice(top, top + band.shape[0])
        out[rows, :, :channels] = _to_8bit(band, lo, hi)
        if key is not None:  # exact 16-bit colour-key match, as the PNG specification asks
            out[rows, :, channels] = np.where((band == np.asarray(key, dtype=np.uint16)).all(axis=2), 0, 255)
    low.close()
    result = Image.fromarray(out)
    result.info = {k: v for k, v in image.info.items() if k != "transparency"}
    result.format = image.format
    return result


def _wide_band(high: Image.Image, low: Image.Image, top: int) -> np.ndarray:
    box = (0, top, high.size[0], min(top + _CHUNK_ROWS, high.size[1]))
    return (np.asarray(high.crop(box), dtype=np.uint16) << 8) | np.asarray(low.crop(box), dtype=np.uint16)


def _swap_byte_order(args):
    rawmode = args if isinstance(args, str) else args[0]
    swapped = rawmode[:-1] + _SWAP[rawmode[-1]]
    return swapped if isinstance(args, str) else (swapped, *args[1:])


def _grey_range(image: Image.Image, source: Image.Image, values: np.ndarray) -> tuple[float, float]:
    """The sample values that map to black and white for a 16/32-bit integer or float greyscale image.

    Integers: TIFF SMin/SMaxSampleValue if declared; else the declared bit depth (TIFF BitsPerSample,
    PNG sBIT when the samples were not scaled up); else the sample type's full range, signed data
    offset so that zero is mid-grey (as GIMP loads signed TIFFs: file-tiff-load.c, convert_int2uint).
    Floats (no sample range in the type): the declared S-range; else 0..1 when every finite value is
    in it (the convention of 32-bit float images from editors and of PFM); else the finite minimum
    to maximum, as scientific viewers show a float image by default. NaN shows black.
    """
    declared = _tiff_sample_range(source) if source.format == "TIFF" else None
    if declared is not None:
        return float(declared[0].min()), float(declared[1].max())
    if image.mode == "F":
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return 0.0, 1.0
        vmin, vmax = float(finite.min()), float(finite.max())
        if vmin >= 0.0 and vmax <= 1.0:
            return 0.0, 1.0
        if vmax == vmin:
            return min(vmin, 0.0), max(vmax, 1.0)
        return vmin, vmax
    if source.format == "TIFF":
        return _type_range(source)
    if source.format == "PNG" and values.size:
        bits = _unscaled_bits(source, np.asarray([values.max()]))
        if bits is not None:
            return 0.0, 2.0 ** int(bits[0]) - 1
    if image.mode.startswith("I;16") or not values.size:
        return 0.0, 65535.0
    # Mode I of unknown origin (an image opened by the caller): 16-bit unless the values say otherwise.
    vmin, vmax = int(values.min()), int(values.max())
    if vmin < 0:
        return (-32768.0, 32767.0) if vmin >= -32768 and vmax <= 32767 else (-(2.0**31), 2.0**31 - 1)
    return (0.0, 65535.0) if vmax <= 65535 else (0.0, 2.0**32 - 1)


def to_rgb(image: Image.Image, source: Image.Image | None = None) -> Image.Image:
    """Any Pillow mode to 8-bit RGB, as a browser or an image viewer shows the file.

    ``source`` is the image as opened (its format and tags say how to read the samples); by default
    ``image`` itself. High bit depths are scaled by the range the file declares (:func:`_grey_range`),
    not clipped; transparency is composited over white, which is how a browser shows it; an
    all-zero alpha channel in a format where alpha is optional (32-bit BMP, ICO, TGA) is ignored.
    """
    source = source if source is not None else image
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _HIGH_DEPTH_GREY:
        values = np.asarray(image)
        lo, hi = _grey_range(image, source, values)
        grey = _to_8bit(values, lo, hi)
        key = source.info.get("transparency") if mode != "F" else None
        if isinstance(key, int):  # a 16-bit PNG colour key, matched on the 16-bit values
            alpha = np.where(values == key, 0, 255).astype(np.uint8)
            return _over_white(Image.fromarray(np.dstack([grey, grey, grey, alpha])))
        return Image.fromarray(grey).convert("RGB")
    if mode == "L" and source.format == "TIFF" and (_tiff_tag(source, 339) or (1,))[0] == 2:
        # Signed 8-bit samples that Pillow reads as unsigned: -128..127 to 0..255, zero mid-grey.
        return Image.fromarray(np.asarray(image) ^ np.uint8(0x80)).convert("RGB")
    if mode == "RGBA" and source.format in _ALPHA_OPTIONAL and image.getchannel("A").getextrema() == (0, 0):
        return image.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode in ("P", "L", "RGB", "1") and "transparency" in image.info):
        return _over_white(image.convert("RGBA"))
    return image.convert("RGB")


def _over_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


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
    with decoder_log.captured():  # one capture for decoding and converting (see decoder_log)
        if isinstance(image, Image.Image):
            upright = ImageOps.exif_transpose(image)  # its size is the upright one, as decode() reports
            decoded = Decoded(upright, image.format or "PIL", *upright.size, 0, False)
        else:
            decoded = decode(image, params, fast=fast)
        decoded_at = time.perf_counter()
        try:
            rgb = to_rgb(decoded.image, source=image if isinstance(image, Image.Image) else None)
        except (OSError, ValueError) as exc:
            raise InvalidImageError(f"could not convert the image: {exc}") from None
    try:
        tensor = normalise(resize_crop(rgb, params, fast=fast), params)
    except (OSError, ValueError) as exc:
        raise InvalidImageError(f"could not convert the image: {exc}") from None
    done = time.perf_counter()
    fast_used = decoded.drafted or (fast and use_fast_path(*decoded.image.size, params))
    return Prepared(tensor, (decoded_at - start) * 1e3, (done - decoded_at) * 1e3, fast_used), decoded
