"""Awkward and hostile inputs, generated here from real photos (nothing is committed as a file).

Two kinds of case, each saying what every entry point must answer:

- :class:`Case`: image bytes (a file, an upload, a raw body, the base64 in ``{"image": ...}``):
  200 with a prediction (and, where the class is known, acceptable top-1 labels for the
  real-weights EfficientNet-Lite0), or a 4xx with a reason;
- :class:`Request`: a whole request as it arrives over HTTP (body and content type) and, where
  it has one, as a direct Lambda invoke (the parsed JSON payload): bad JSON, bad base64, the
  wrong content type, a body over the payload limit, ...
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from PIL import Image

import lambda_onnx.preprocess  # noqa: F401  (registers the HEIF plugin)
from lambda_onnx.limits import MAX_REQUEST_BYTES
from lambda_onnx.photos import by_name

CAT = ("Egyptian cat", "tabby", "tiger cat")
PALACE = by_name("china").expected  # sideways or upside down, lite0 sees a tile roof, a boathouse, a racket
NO_PAYLOAD = object()  # a request with no direct-invoke equivalent (not JSON at all)


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    content_type: str
    status: int  # 200: a prediction is expected
    labels: tuple[str, ...] = ()  # acceptable top-1 labels, when the class is known
    reason: str = ""  # a fragment the error message must contain (4xx)
    suffix: str = ""  # the file name extension a user's file would have, when the content type does not say


@dataclass(frozen=True)
class Request:
    """One request: the HTTP body and content type, and the same request as a direct invoke."""

    name: str
    body: bytes
    content_type: str | None
    status: int
    reason: str = ""  # a fragment the error message must contain (4xx)
    payload: Any = NO_PAYLOAD  # the parsed JSON a direct invoke would carry, if there is one
    labels: tuple[str, ...] = ()

    def event_body(self) -> tuple[str, bool]:
        """``(body, isBase64Encoded)`` as API Gateway and Function URLs put it in the event: text
        bodies as they are, anything else base64-encoded."""
        kind = (self.content_type or "").split(";")[0].strip().lower()
        if kind.endswith("json") or kind.startswith("text/") or kind.endswith("+xml") or not kind:
            try:
                return self.body.decode("utf-8"), False
            except UnicodeDecodeError:
                pass
        return base64.b64encode(self.body).decode("ascii"), True


@cache
def chelsea() -> Image.Image:
    """The cat photo (scikit-image), RGB, 451x300."""
    with Image.open(by_name("chelsea").path) as image:
        return image.convert("RGB")


@cache
def china() -> Image.Image:
    """The palace photo (scikit-learn), RGB, 640x427: unlike the cat, lite0 names it only upright."""
    with Image.open(by_name("china").path) as image:
        return image.convert("RGB")


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# How to store an upright image so that EXIF orientation N shows it upright again.
_STORED_FOR = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def exif_rotated_jpeg(image: Image.Image | None = None, orientation: int = 6) -> bytes:
    """``image`` (default: the cat) stored rotated, with the EXIF orientation that turns it upright
    (6: "rotate 90° clockwise to view", 3: 180°, 8: 90° counter-clockwise)."""
    stored = (image or chelsea()).transpose(_STORED_FOR[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif)


def grey16_png() -> bytes:
    """16-bit greyscale PNG: values up to 65535, which naive conversion clips to white."""
    grey = np.asarray(chelsea().convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(grey), "PNG")


def float_tiff() -> bytes:
    """32-bit float greyscale TIFF with values in 0..1 (scientific images)."""
    grey = np.asarray(chelsea().convert("L"), dtype=np.float32) / 255.0
    return encode(Image.fromarray(grey, "F"), "TIFF")


def tiff_via_tifffile(array: np.ndarray, **kwargs) -> bytes:
    """A TIFF written by tifffile (image data after the header and IFD, unlike Pillow's writer), so a
    truncated copy keeps its tags and sends libtiff reading past the end."""
    import tifffile  # installed with scikit-image; only the tests use it

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def truncated_deflate_tiff() -> bytes:
    """Deflate-compressed strips cut off halfway: libtiff prints "TIFFFillStrip: Read error on strip
    ..." to stderr from C for it (the decoder noise tests/test_decoder_log.py keeps out of stderr)."""
    data = tiff_via_tifffile(np.asarray(chelsea()), photometric="rgb", compression="zlib", rowsperstrip=32)
    return data[: len(data) // 2]


def float_rgb_tiff() -> bytes:
    """A valid 32-bit float RGB TIFF, a layout Pillow has no mode for."""
    return tiff_via_tifffile(np.asarray(chelsea(), dtype=np.float32) / 255, photometric="rgb")


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


def _noise(size: tuple[int, int] = (451, 300), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def animated_gif() -> bytes:
    """Two frames: the cat first, noise second; only the first frame counts."""
    return encode(chelsea(), "GIF", save_all=True, append_images=[_noise()], duration=100, loop=0)


def animated_webp() -> bytes:
    return encode(chelsea(), "WEBP", save_all=True, append_images=[_noise()], duration=100, quality=90)


def multipage_tiff() -> bytes:
    """LZW-compressed TIFF: the cat on page 1, noise on page 2."""
    return encode(chelsea(), "TIFF", save_all=True, append_images=[_noise()], compression="tiff_lzw")


def gif_many_frames(frames: int = 5000) -> bytes:
    """A small file declaring thousands of 1x1 frames (counting them all would parse every one)."""
    images = [Image.new("P", (1, 1), i % 2) for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=10, optimize=False)


def truncated_jpeg() -> bytes:
    data = encode(chelsea(), "JPEG", quality=90)
    return data[: len(data) // 2]


def truncated(fmt: str, **kwargs) -> bytes:
    data = encode(chelsea(), fmt, **kwargs)
    return data[: len(data) // 2]


def broken_png_checksum() -> bytes:
    """A PNG whose IHDR chunk CRC is wrong."""
    data = bytearray(encode(chelsea(), "PNG"))
    data[29] ^= 0xFF  # the IHDR CRC sits at bytes 29-32
    return bytes(data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A small file that declares 900 megapixels (1-bit, all zeros, compresses to almost nothing)."""
    raw = zlib.compress(b"\x00" * ((width + 7) // 8 + 1) * 64)  # a few rows are enough to declare the size
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", raw) + _png_chunk(b"IEND", b"")


def zero_width_png() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b"")


def _tiny() -> Image.Image:
    return Image.new("RGB", (8, 8), (200, 10, 10))


def jpeg_bomb() -> bytes:
    """An 8x8 JPEG whose frame header declares 65500x65500 (4.3 gigapixels)."""
    data = bytearray(encode(_tiny(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    return bytes(data)


def gif_bomb() -> bytes:
    """An 8x8 GIF whose logical screen is 65535x65535."""
    data = bytearray(encode(_tiny().convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def tiff_bomb() -> bytes:
    """An 8x8 TIFF whose ImageWidth and ImageLength tags say 60000."""
    data = bytearray(encode(_tiny(), "TIFF"))
    ifd = struct.unpack("<I", data[4:8])[0]
    for index in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * index
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            data[entry + 8 : entry + 12] = struct.pack("<HH", 60000, 0) if kind == 3 else struct.pack("<I", 60000)
    return bytes(data)


def webp_bomb() -> bytes:
    """An 8x8 lossy WebP whose VP8 frame header declares 16383x16383 (268 megapixels)."""
    data = bytearray(encode(_tiny(), "WEBP", quality=80))
    start = data.index(b"\x9d\x01\x2a")  # the VP8 key frame start code; width and height follow
    data[start + 3 : start + 7] = struct.pack("<HH", 16383, 16383)
    return bytes(data)


def svg() -> bytes:
    return b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'


def pdf() -> bytes:
    return encode(chelsea(), "PDF")


@cache
def oversized_png() -> bytes:
    """A valid PNG (noise does not compress) over the request limit: 413 everywhere, never decoded."""
    data = encode(_noise((1600, 1400), seed=1), "PNG", compress_level=1)
    assert len(data) > MAX_REQUEST_BYTES
    return data


@cache
def valid_cases() -> list[Case]:
    """Every valid image kind: each must give a prediction."""
    cat, palace = chelsea(), china()
    return [
        Case("jpeg", encode(cat, "JPEG", quality=90), "image/jpeg", 200, CAT),
        Case("progressive_jpeg", encode(cat, "JPEG", quality=90, progressive=True), "image/jpeg", 200, CAT),
        Case("grey_jpeg", encode(cat.convert("L"), "JPEG", quality=90), "image/jpeg", 200, CAT),
        Case("png", encode(cat, "PNG"), "image/png", 200, CAT),
        Case("webp", encode(cat, "WEBP", quality=90), "image/webp", 200, CAT),
        Case("animated_webp", animated_webp(), "image/webp", 200, CAT),
        Case("bmp", encode(cat, "BMP"), "image/bmp", 200, CAT),
        Case("tiff", encode(cat, "TIFF"), "image/tiff", 200, CAT),
        Case("multipage_tiff", multipage_tiff(), "image/tiff", 200, CAT),
        Case("float_tiff", float_tiff(), "image/tiff", 200, CAT),
        Case("heic", encode(cat, "HEIF", quality=90), "image/heic", 200, CAT),
        Case("avif", encode(cat, "AVIF", quality=90), "image/avif", 200, CAT),
        Case("animated_gif", animated_gif(), "image/gif", 200, CAT),
        Case("gif_5000_frames", gif_many_frames(), "image/gif", 200),
        Case("exif_rotated_jpeg", exif_rotated_jpeg(), "image/jpeg", 200, CAT),
        # The palace is named only upright: these fail if EXIF orientation is ignored.
        Case("exif_orientation_3_palace", exif_rotated_jpeg(palace, 3), "image/jpeg", 200, PALACE),
        Case("exif_orientation_6_palace", exif_rotated_jpeg(palace, 6), "image/jpeg", 200, PALACE),
        Case("exif_orientation_8_palace", exif_rotated_jpeg(palace, 8), "image/jpeg", 200, PALACE),
        Case("cmyk_jpeg", encode(cat.convert("CMYK"), "JPEG", quality=95), "image/jpeg", 200, CAT),
        Case("grey16_png", grey16_png(), "image/png", 200, CAT),  # clipped to white, it would not be a cat
        Case("palette_transparency_png", transparent("P"), "image/png", 200, CAT),
        Case("la_png", transparent("LA"), "image/png", 200, CAT),
        Case("rgba_png", transparent("RGBA"), "image/png", 200, CAT),
        Case("one_pixel", encode(Image.new("RGB", (1, 1), (120, 30, 200)), "PNG"), "image/png", 200),
        Case("10000x1", encode(Image.new("RGB", (10_000, 1), (10, 200, 30)), "PNG"), "image/png", 200),
        Case("1x10000", encode(Image.new("L", (1, 10_000), 99), "PNG"), "image/png", 200),
        # Formats beyond the web's (lambda_onnx/preprocess.py says which and why), each with a content type
        # clients send for it (any image/* goes to the decoder, which decides from the bytes) or as
        # octet-stream; tests/test_image_formats.py covers the rest.
        Case("ico", encode(Image.new("RGB", (32, 32)), "ICO"), "image/vnd.microsoft.icon", 200, suffix=".ico"),
        Case("ppm", encode(cat, "PPM"), "image/x-portable-pixmap", 200, CAT, suffix=".ppm"),
        Case("jpeg2000", encode(cat, "JPEG2000"), "image/jp2", 200, CAT, suffix=".jp2"),
        Case("jpeg2000_octet_stream", encode(cat, "JPEG2000"), "application/octet-stream", 200, CAT, suffix=".jp2"),
        Case("jpeg_labelled_png", encode(cat, "JPEG", quality=90), "image/png", 200, CAT),  # the bytes decide
    ]


@cache
def invalid_cases() -> list[Case]:
    """Bytes that are not a usable image: each must give its 4xx, with a reason."""
    undecodable = "could not decode"
    return [
        Case("empty", b"", "image/jpeg", 400, reason="empty image"),
        Case("random_bytes", os.urandom(4096), "image/jpeg", 400, reason=undecodable),
        Case("plain_text", b"hello, this is not an image\n" * 20, "image/png", 400, reason=undecodable),
        Case("html", b"<!doctype html><html><body><img src=x></body></html>", "image/png", 400, reason=undecodable),
        Case("truncated_jpeg", truncated_jpeg(), "image/jpeg", 400, reason=undecodable),
        Case("truncated_png", truncated("PNG"), "image/png", 400, reason=undecodable),
        Case("truncated_heic", truncated("HEIF", quality=90), "image/heic", 400, reason=undecodable),
        Case("truncated_avif", truncated("AVIF", quality=90), "image/avif", 400, reason=undecodable),
        Case("broken_png_checksum", broken_png_checksum(), "image/png", 400, reason=undecodable),
        Case("zero_width_png", zero_width_png(), "image/png", 400, reason=undecodable),
        Case("truncated_deflate_tiff", truncated_deflate_tiff(), "image/tiff", 400, reason=undecodable),
        Case("decompression_bomb", png_bomb(), "image/png", 413, reason="megapixels"),
        Case("jpeg_bomb", jpeg_bomb(), "image/jpeg", 413, reason="megapixels"),
        Case("gif_bomb", gif_bomb(), "image/gif", 413, reason="megapixels"),
        Case("tiff_bomb", tiff_bomb(), "image/tiff", 413, reason="megapixels"),
        Case("webp_bomb", webp_bomb(), "image/webp", 413, reason="megapixels"),
        Case("over_the_byte_limit", oversized_png(), "image/png", 413, reason="limit"),
        Case("svg", svg(), "image/png", 415, reason="SVG is not supported"),
        Case("svg_without_xml_declaration", svg().split(b"\n", 1)[1], "image/jpeg", 415, reason="SVG is not supported"),
        Case("pdf", pdf(), "image/jpeg", 415, reason="PDF is not supported"),
        Case("postscript", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "image/jpeg", 415,
             reason="PostScript"),
        Case("photoshop", b"8BPS\x00\x01" + b"\x00" * 64, "image/png", 415, reason="Photoshop"),
        Case("sgi", encode(chelsea(), "SGI"), "application/octet-stream", 415, reason="SGI is not supported", suffix=".rgb"),
        Case("float_rgb_tiff", float_rgb_tiff(), "image/tiff", 415, reason="TIFF with 3 floating-point samples"),
    ]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


@cache
def requests() -> list[Request]:
    """Whole requests, valid and not: what the HTTP edges and a direct invoke must answer."""
    png = by_name("chelsea").read()
    wrapped = base64.encodebytes(png).decode("ascii")  # 76 characters a line, as MIME and many tools write it
    over = "A" * (MAX_REQUEST_BYTES + 1)
    ok = dict(status=200, labels=CAT)
    return [
        Request("json_base64", _json({"image": b64(png)}), "application/json", payload={"image": b64(png)}, **ok),
        Request("json_base64_with_newlines", _json({"image": wrapped}), "application/json", payload={"image": wrapped}, **ok),
        Request("json_data_url", _json({"image": "data:image/png;base64," + b64(png)}), "application/json",
                payload={"image": "data:image/png;base64," + b64(png)}, **ok),
        Request("json_data_url_with_newlines", _json({"image": "data:image/png;base64,\n" + wrapped}), "application/json",
                payload={"image": "data:image/png;base64,\n" + wrapped}, **ok),
        Request("json_with_charset", _json({"image": b64(png)}), "Application/JSON; charset=utf-8", **ok),
        Request("json_without_content_type", _json({"image": b64(png)}), None, **ok),
        Request("binary_octet_stream", png, "application/octet-stream", **ok),
        Request("json_array", _json([b64(png)]), "application/json", 400, "JSON object", payload=[b64(png)]),
        Request("json_string", _json(b64(png)), "application/json", 400, "JSON object", payload=b64(png)),
        Request("json_null", b"null", "application/json", 400, "JSON object", payload=None),
        Request("json_number", b"42", "application/json", 400, "JSON object", payload=42),
        Request("image_a_number", _json({"image": 42}), "application/json", 400, "base64 string", payload={"image": 42}),
        Request("image_a_list", _json({"image": [b64(png)]}), "application/json", 400, "base64 string",
                payload={"image": [b64(png)]}),
        Request("image_null", _json({"image": None}), "application/json", 400, "base64 string", payload={"image": None}),
        Request("image_missing", _json({"img": b64(png)}), "application/json", 400, 'missing field "image"',
                payload={"img": b64(png)}),
        Request("invalid_base64", _json({"image": "@@@ not base64 @@@"}), "application/json", 400, "not valid base64",
                payload={"image": "@@@ not base64 @@@"}),
        Request("base64_of_text", _json({"image": b64(b"just some text")}), "application/json", 400, "could not decode",
                payload={"image": b64(b"just some text")}),
        Request("data_url_without_base64", _json({"image": "data:image/png," + b64(png)}), "application/json", 400,
                "data URL", payload={"image": "data:image/png," + b64(png)}),
        Request("image_empty", _json({"image": ""}), "application/json", 400, "empty image", payload={"image": ""}),
        Request("not_json", b"{image: nope", "application/json", 400, "not valid JSON"),
        Request("empty_json_body", b"", "application/json", 400, "not valid JSON"),
        Request("json_nested_too_deeply", b"[" * 100_000, "application/json", 400, "nested too deeply"),
        Request("json_not_utf8", b'{"image": "\xff\xfe"}', "application/json", 400, "not valid JSON"),
        Request("content_type_text", b"hello", "text/plain", 415, "not accepted"),
        Request("content_type_form", b"--x\r\n\r\nhello\r\n--x--", "multipart/form-data; boundary=x", 415, "not accepted"),
        Request("content_type_svg", svg(), "image/svg+xml", 415, "SVG is not supported"),
        Request("body_over_the_limit", b"\xff\xd8\xff" + b"\0" * MAX_REQUEST_BYTES, "image/jpeg", 413, "limit"),
        Request("json_over_the_limit", _json({"image": over}), "application/json", 413, "limit", payload={"image": over}),
    ]


def by_case_name(name: str) -> Case:
    return next(case for case in valid_cases() + invalid_cases() if case.name == name)
