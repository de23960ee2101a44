"""Awkward and hostile inputs, generated here from real photos (nothing is committed as a file).

Each case says what every entry point must answer: 200 with a prediction (and, where the class
is known, acceptable labels for the real-weights EfficientNet-Lite0), or a 4xx with a reason.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

import lambda_onnx.preprocess  # noqa: F401  (registers the HEIF plugin)
from local.photos import by_name

CAT = ("Egyptian cat", "tabby", "tiger cat")


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    content_type: str
    status: int  # 200: a prediction is expected
    labels: tuple[str, ...] = ()  # acceptable top-1 labels, when the class is known


@cache
def chelsea() -> Image.Image:
    """The cat photo (scikit-image), RGB, 451x300."""
    with Image.open(by_name("chelsea").path) as image:
        return image.convert("RGB")


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """The cat stored sideways with EXIF orientation 6 ("rotate 90° clockwise to view")."""
    sideways = chelsea().transpose(Image.Transpose.ROTATE_90)  # 90° counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(sideways, "JPEG", quality=95, exif=exif)


def grey16_png() -> bytes:
    """16-bit greyscale PNG: values up to 65535, which naive conversion clips to white."""
    grey = np.asarray(chelsea().convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(grey), "PNG")


def transparent(mode: str) -> bytes:
    """The cat with its left half fully transparent, in LA, RGBA or palette-with-transparency PNG."""
    base = chelsea()
    alpha = Image.new("L", base.size, 255)
    alpha.paste(0, (0, 0, base.width // 2, base.height))
    if mode == "P":
        pal = base.quantize(255)
        pal.putpalette(pal.getpalette()[: 255 * 3] + [0, 0, 0])  # index 255: black, made transparent
        pal.paste(255, (0, 0, base.width // 2, base.height))
        return encode(pal, "PNG", transparency=255)
    image = (base.convert("L") if mode == "LA" else base).copy()
    image.putalpha(alpha)
    return encode(image, "PNG")


def animated_gif() -> bytes:
    """Two frames: the cat first, noise second; only the first frame counts."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (300, 451, 3), dtype=np.uint8))
    return encode(chelsea(), "GIF", save_all=True, append_images=[noise], duration=100, loop=0)


def truncated_jpeg() -> bytes:
    data = encode(chelsea(), "JPEG", quality=90)
    return data[: len(data) // 2]


def broken_png_checksum() -> bytes:
    """A PNG whose IHDR chunk CRC is wrong."""
    data = bytearray(encode(chelsea(), "PNG"))
    data[29] ^= 0xFF  # the IHDR CRC sits at bytes 29-32
    return bytes(data)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A small file that declares 900 megapixels (1-bit, all zeros, compresses to almost nothing)."""
    raw = zlib.compress(b"\x00" * ((width + 7) // 8 + 1) * 64)  # a few rows are enough to declare the size

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def svg() -> bytes:
    return b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'


def pdf() -> bytes:
    return encode(chelsea(), "PDF")


def valid_cases() -> list[Case]:
    """Every valid image kind: each must give a prediction."""
    cat = chelsea()
    return [
        Case("jpeg", encode(cat, "JPEG", quality=90), "image/jpeg", 200, CAT),
        Case("png", encode(cat, "PNG"), "image/png", 200, CAT),
        Case("webp", encode(cat, "WEBP", quality=90), "image/webp", 200, CAT),
        Case("bmp", encode(cat, "BMP"), "image/bmp", 200, CAT),
        Case("tiff", encode(cat, "TIFF"), "image/tiff", 200, CAT),
        Case("heic", encode(cat, "HEIF", quality=90), "image/heic", 200, CAT),
        Case("animated_gif", animated_gif(), "image/gif", 200, CAT),
        Case("exif_rotated_jpeg", exif_rotated_jpeg(), "image/jpeg", 200, CAT),
        Case("cmyk_jpeg", encode(cat.convert("CMYK"), "JPEG", quality=95), "image/jpeg", 200, CAT),
        Case("grey16_png", grey16_png(), "image/png", 200),
        Case("palette_transparency_png", transparent("P"), "image/png", 200),
        Case("la_png", transparent("LA"), "image/png", 200),
        Case("rgba_png", transparent("RGBA"), "image/png", 200),
        Case("one_pixel", encode(Image.new("RGB", (1, 1), (120, 30, 200)), "PNG"), "image/png", 200),
        Case("10000x1", encode(Image.new("RGB", (10_000, 1), (10, 200, 30)), "PNG"), "image/png", 200),
        Case("1x10000", encode(Image.new("L", (1, 10_000), 99), "PNG"), "image/png", 200),
    ]


def invalid_cases() -> list[Case]:
    """Bytes that are not a usable image: each must give its 4xx."""
    return [
        Case("empty", b"", "image/jpeg", 400),
        Case("random_bytes", os.urandom(4096), "image/jpeg", 400),
        Case("plain_text", b"hello, this is not an image\n" * 20, "image/png", 400),
        Case("truncated_jpeg", truncated_jpeg(), "image/jpeg", 400),
        Case("broken_png_checksum", broken_png_checksum(), "image/png", 400),
        Case("decompression_bomb", png_bomb(), "image/png", 413),
        Case("svg", svg(), "image/png", 415),
        Case("pdf", pdf(), "image/jpeg", 415),
    ]
