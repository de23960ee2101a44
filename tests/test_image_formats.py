"""Every file Pillow decodes gets the right status and, when accepted, the pixels a browser or an
image viewer shows (lambda_onnx/preprocess.py says which formats and why).

Files are generated here, in each shape the formats allow (Pillow, NumPy, tifffile, and a few
headers written byte by byte where no writer produces the case): 32-bit bitmaps whose alpha is all
zero, 16-bit colour keys, 12-bit data in 16-bit samples declared three ways, signed and float
samples. The reference for each is stated next to it.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from export.registry import LITE0_PREPROCESSING
from lambda_onnx.errors import ClassifierError, InvalidImageError, UnsupportedMediaTypeError
from lambda_onnx.preprocess import ACCEPTED, FORMAT_NAMES, REFUSED, decode, prepare, to_rgb
from tests.helpers import corpus

SIZE = (48, 32)  # width, height: small, and not square (a transposed result would not fit)


def pixels(data: bytes) -> np.ndarray:
    """The 8-bit RGB pixels the service classifies (decoded, upright, converted), as an int array."""
    return np.asarray(to_rgb(decode(data).image), dtype=int)


def status(data: bytes) -> int:
    try:
        prepare(data, LITE0_PREPROCESSING)
    except ClassifierError as exc:
        return exc.status
    return 200


def gradient(height: int = SIZE[1], width: int = SIZE[0], top: int = 4095) -> np.ndarray:
    """0..top across each row, a different offset per row: every value appears, none saturates."""
    x = np.linspace(0, top, width)
    return (np.round(x[None, :] + np.arange(height)[:, None] * top / (3 * height)) % (top + 1)).astype(np.int64)


def expected_8bit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(np.floor((values - lo) * 255.0 / (hi - lo) + 0.5), 0, 255).astype(int)


def colour_image(size: tuple[int, int] = SIZE) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


ICON = (32, 32)  # icons are square (Pillow misplaces rows of non-square 32-bit BMP icons)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    return corpus.encode(image, fmt, **kwargs)


# --- byte-level writers for what no library writes ----------------------------------------------------

def png(samples: np.ndarray, bit_depth: int, colour_type: int, chunks: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A PNG of ``samples`` (rows x columns [x channels]) at ``bit_depth``, with extra chunks before IDAT."""
    height, width = samples.shape[:2]
    if bit_depth == 16:
        rows = [samples[y].astype(">u2").tobytes() for y in range(height)]
    elif bit_depth == 8:
        rows = [samples[y].astype(np.uint8).tobytes() for y in range(height)]
    else:  # 1, 2, 4 bits: pack big-endian within each byte
        per_byte = 8 // bit_depth
        rows = []
        for y in range(height):
            padded = np.zeros(-(-width // per_byte) * per_byte, dtype=np.uint8)
            padded[:width] = samples[y]
            groups = padded.reshape(-1, per_byte)
            shifts = np.arange(per_byte - 1, -1, -1) * bit_depth
            rows.append(np.bitwise_or.reduce(groups << shifts, axis=1).astype(np.uint8).tobytes())
    raw = b"".join(b"\0" + row for row in rows)
    body = b"".join(corpus._png_chunk(kind, data) for kind, data in chunks)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + corpus._png_chunk(b"IHDR", ihdr) + body
            + corpus._png_chunk(b"IDAT", zlib.compress(raw)) + corpus._png_chunk(b"IEND", b""))


def bmp_v5_rgba(rgba: np.ndarray) -> bytes:
    """A 32-bit BMP with a BITMAPV5HEADER and BI_BITFIELDS masks that include alpha, as Windows,
    GIMP and ImageMagick write them. https://learn.microsoft.com/en-us/windows/win32/api/wingdi/ns-wingdi-bitmapv5header"""
    height, width = rgba.shape[:2]
    pixel_bytes = rgba[::-1, :, [2, 1, 0, 3]].astype(np.uint8).tobytes()  # bottom-up BGRA
    header = struct.pack("<IiiHHIIiiII", 124, width, height, 1, 32, 3, len(pixel_bytes), 2835, 2835, 0, 0)
    header += struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000)  # R, G, B, A masks
    header += b"sRGB"[::-1] + b"\0" * 36 + b"\0" * 12 + struct.pack("<IIII", 4, 0, 0, 0)
    assert len(header) == 124
    offset = 14 + len(header)
    return b"BM" + struct.pack("<IHHI", offset + len(pixel_bytes), 0, 0, offset) + header + pixel_bytes


def tiff_12bit_packed(values: np.ndarray) -> bytes:
    """A greyscale TIFF with BitsPerSample=12: two samples in three bytes, most significant first."""
    height, width = values.shape
    assert width % 2 == 0
    v = values.astype(np.uint16).reshape(height, width // 2, 2)
    packed = np.stack([v[..., 0] >> 4, ((v[..., 0] & 0xF) << 4) | (v[..., 1] >> 8), v[..., 1] & 0xFF], axis=-1)
    data = packed.astype(np.uint8).tobytes()
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 1, 12), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 0), (277, 3, 1, 1), (278, 3, 1, height), (279, 4, 1, len(data))]
    ifd_size = 2 + 12 * len(tags) + 4
    data_offset = 8 + ifd_size
    entries = b""
    for tag, kind, count, value in tags:
        value = data_offset if tag == 273 else value
        entries += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    return b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries + b"\0\0\0\0" + data


def tiff(array: np.ndarray, **kwargs) -> bytes:
    return corpus.tiff_via_tifffile(array, **kwargs)


def smin_smax(lo: float, hi: float, kind: str = "d") -> list[tuple]:
    """tifffile extratags for SMinSampleValue (340) and SMaxSampleValue (341)."""
    return [(340, kind, 1, lo, True), (341, kind, 1, hi, True)]


# --- which formats: every Pillow format decided, nothing decodable gets a 400 -------------------------

def test_every_format_pillow_opens_is_accepted_or_refused_by_name():
    Image.init()
    undecided = set(Image.OPEN) - set(ACCEPTED) - set(REFUSED)
    assert not undecided, f"Pillow opens {sorted(undecided)}: add each to ACCEPTED or REFUSED in preprocess.py"
    assert not set(ACCEPTED) & set(REFUSED)


def _pillow_written_files():
    """Every format Pillow can write, in every mode it writes it in: (id, bytes) pairs."""
    base = colour_image()
    modes = {"RGB": base, "RGBA": base.convert("RGBA"), "L": base.convert("L"), "1": base.convert("1"),
             "P": base.convert("P"), "I;16": Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257),
             "F": base.convert("F"), "LA": base.convert("LA"), "CMYK": base.convert("CMYK")}
    Image.init()
    for fmt in sorted(Image.SAVE):
        if fmt in ("PDF", "EPS"):  # need Ghostscript to read back; refused by signature (corpus)
            continue
        for mode, image in modes.items():
            try:
                data = encode(image, fmt)
            except Exception:  # Pillow cannot write this mode in this format
                continue
            yield pytest.param(fmt, mode, data, id=f"{fmt}-{mode}")


@pytest.mark.parametrize(("fmt", "mode", "data"), list(_pillow_written_files()))
def test_a_file_pillow_decodes_is_classified_or_refused_with_415(fmt, mode, data):
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            opened_as = opened.format
    except Exception:
        pytest.skip(f"Pillow cannot read back its own {fmt} {mode}")
    got = status(data)
    if opened_as in ACCEPTED or opened_as == "MPO":
        assert got == 200, f"{fmt} {mode}: {got}"
    else:
        assert got == 415, f"{fmt} {mode} (opened as {opened_as}): {got}"


@pytest.mark.parametrize("fmt", ["DDS", "SGI", "PCX", "MSP", "IM", "XBM", "SPIDER", "ICNS", "BLP"])
def test_a_refused_format_is_named_with_the_supported_ones(fmt):
    image = colour_image().convert({"MSP": "1", "XBM": "1", "BLP": "P"}.get(fmt, "RGB"))
    with pytest.raises(UnsupportedMediaTypeError) as info:
        decode(encode(image, fmt))
    message = info.value.message
    assert f"{REFUSED[fmt][0]} is not supported" in message and FORMAT_NAMES in message, message


def test_fits_is_refused_by_name():
    header = "".join(card.ljust(80) for card in ("SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 2", f"NAXIS1  = {SIZE[0]}",
                                                 f"NAXIS2  = {SIZE[1]}", "END"))
    data = header.ljust(2880).encode() + bytes(SIZE[0] * SIZE[1]).ljust(2880, b"\0")
    with pytest.raises(UnsupportedMediaTypeError, match="FITS is not supported"):
        decode(data)


@pytest.mark.parametrize(("array", "kwargs", "layout"), [
    (np.zeros((*SIZE[::-1], 3), np.float32), {"photometric": "rgb"}, "3 floating-point samples of 32 bits"),
    (np.zeros(SIZE[::-1], np.float64), {}, "1 floating-point sample of 64 bits"),
    (np.zeros(SIZE[::-1], np.float16), {}, "1 floating-point sample of 16 bits"),
    (np.zeros((*SIZE[::-1], 3), np.uint32), {"photometric": "rgb"}, "3 unsigned integer samples of 32 bits"),
], ids=["float32_rgb", "float64", "float16", "uint32_rgb"])
def test_a_valid_tiff_layout_pillow_cannot_read_is_415_and_says_which(array, kwargs, layout):
    with pytest.raises(UnsupportedMediaTypeError, match=f"TIFF with {layout} per pixel is not supported"):
        decode(tiff(array, **kwargs))


def test_a_corrupt_tiff_is_still_400():
    with pytest.raises(InvalidImageError):
        decode(corpus.truncated_deflate_tiff())


# --- accepted formats: the pixels ------------------------------------------------------------------------

LOSSLESS = {"PNG": {}, "TIFF": {}, "BMP": {}, "PPM": {}, "QOI": {}, "TGA": {}, "WEBP": {"lossless": True},
            "JPEG2000": {"irreversible": False}}


@pytest.mark.parametrize("fmt", sorted(LOSSLESS))
def test_lossless_formats_give_back_the_exact_pixels(fmt):
    image = colour_image()
    got = pixels(encode(image, fmt, **LOSSLESS[fmt]))
    assert got.shape == (SIZE[1], SIZE[0], 3)
    assert (got == np.asarray(image, dtype=int)).all()


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "AVIF", "HEIF", "JPEG2000"])
def test_lossy_formats_stay_close(fmt):
    image = Image.fromarray(np.asarray(corpus.chelsea())[:96, :128])
    got = pixels(encode(image, fmt, **({"quality_mode": "rates", "quality_layers": [10]} if fmt == "JPEG2000" else {"quality": 90})))
    assert np.abs(got - np.asarray(image, dtype=int)).mean() < 6


@pytest.mark.parametrize("bitmap_format", ["png", "bmp"])
def test_icons_give_back_the_exact_pixels(bitmap_format):
    image = colour_image(ICON)
    assert (pixels(encode(image, "ICO", sizes=[ICON], bitmap_format=bitmap_format)) == np.asarray(image, dtype=int)).all()


def test_cur_cursors_decode_like_icons():
    image = colour_image(ICON)
    ico = encode(image, "ICO", sizes=[ICON], bitmap_format="bmp")
    cur = ico[:2] + struct.pack("<H", 2) + ico[4:]  # the same directory, resource type 2 (cursor)
    assert decode(cur).format == "CUR"
    assert (pixels(cur) == np.asarray(image, dtype=int)).all()


@pytest.mark.parametrize("variant", ["P1", "P2", "P3", "P4", "P5", "P6"])
def test_every_netpbm_variant(variant):
    grey = np.asarray(colour_image().convert("L"))
    rgb = np.asarray(colour_image())
    height, width = grey.shape
    if variant in ("P1", "P4"):
        bits = (grey < 128).astype(np.uint8)  # PBM: 1 is black
        body = (" ".join(map(str, bits.ravel())).encode() if variant == "P1" else np.packbits(bits, axis=1).tobytes())
        expected = np.where(bits[..., None] == 1, 0, 255).repeat(3, axis=2)
    elif variant in ("P2", "P5"):
        body = " ".join(map(str, grey.ravel())).encode() if variant == "P2" else grey.tobytes()
        expected = grey[..., None].repeat(3, axis=2)
    else:
        body = " ".join(map(str, rgb.ravel())).encode() if variant == "P3" else rgb.tobytes()
        expected = rgb
    maxval = b"" if variant in ("P1", "P4") else b"255\n"
    data = f"{variant}\n{width} {height}\n".encode() + maxval + body
    assert (pixels(data) == expected).all()


@pytest.mark.parametrize("maxval", [4095, 65535])
def test_sixteen_bit_pgm_is_scaled_by_its_maxval(maxval):
    values = gradient(top=maxval)
    data = f"P5\n{SIZE[0]} {SIZE[1]}\n{maxval}\n".encode() + values.astype(">u2").tobytes()
    got = pixels(data)[..., 0]
    assert np.abs(got - expected_8bit(values, 0, maxval)).max() <= 1
    assert got.max() >= 254


# --- alpha: all-zero alpha in formats where it is optional, and colour keys --------------------------------

def rgba_with_alpha(alpha: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    rgb = np.asarray(colour_image(size))
    return np.dstack([rgb, np.full(rgb.shape[:2], alpha, dtype=np.uint8)])


@pytest.mark.parametrize("writer", ["bmp_v5", "ico_bmp", "tga"])
def test_an_all_zero_alpha_channel_is_no_alpha_where_alpha_is_optional(writer):
    """Browsers show a 32-bit BMP (and icon) whose alpha is zero everywhere as opaque: the writer
    meant "no alpha". A white square would be a confident wrong answer."""
    rgba = rgba_with_alpha(0, ICON if writer == "ico_bmp" else SIZE)
    data = {"bmp_v5": lambda: bmp_v5_rgba(rgba),
            "ico_bmp": lambda: encode(Image.fromarray(rgba), "ICO", sizes=[ICON], bitmap_format="bmp"),
            "tga": lambda: encode(Image.fromarray(rgba), "TGA")}[writer]()
    assert decode(data).image.mode == "RGBA"  # Pillow does read an alpha channel...
    assert (pixels(data) == rgba[..., :3]).all()  # ...which shows nothing, so it is ignored


def test_a_bmp_with_real_alpha_keeps_it():
    rgba = rgba_with_alpha(255)
    rgba[:, : SIZE[0] // 2, 3] = 0  # left half transparent
    got = pixels(bmp_v5_rgba(rgba))
    assert (got[:, : SIZE[0] // 2] == 255).all()
    assert (got[:, SIZE[0] // 2 :] == rgba[:, SIZE[0] // 2 :, :3]).all()


def test_an_all_zero_alpha_png_stays_transparent():
    """PNG defines alpha from the start: zero is invisible, and a browser shows the page behind."""
    assert (pixels(encode(Image.fromarray(rgba_with_alpha(0)), "PNG")) == 255).all()


def sixteen_bit_rgb() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 65536, (SIZE[1], SIZE[0], 3), dtype=np.int64)


def test_a_sixteen_bit_rgb_png_keeps_its_colour_key_exactly():
    """tRNS on 16-bit colour: exactly the key's pixels are transparent (composited on white), as in
    a browser; a pixel whose high bytes match but whose low bytes differ is not."""
    samples = sixteen_bit_rgb()
    key = (0x1234, 0xABCD, 0x00FF)
    samples[:, :10] = key
    samples[:, 10] = (0x1235, 0xABCD, 0x00FF)  # same high bytes, another colour
    got = pixels(png(samples, 16, 2, ((b"tRNS", struct.pack(">HHH", *key)),)))
    assert (got[:, :10] == 255).all()
    assert (got[:, 10] == expected_8bit(samples[:, 10], 0, 65535)).all()  # not keyed out
    assert (np.abs(got[:, 11:] - expected_8bit(samples[:, 11:], 0, 65535)) <= 1).all()


def test_a_sixteen_bit_grey_png_keeps_its_colour_key():
    values = gradient(top=65535)
    values[:, :5] = 1000
    got = pixels(png(values, 16, 0, ((b"tRNS", struct.pack(">H", 1000)),)))
    assert (got[:, :5] == 255).all()
    assert (np.abs(got[:, 5:, 0] - expected_8bit(values[:, 5:], 0, 65535)) <= 1).all()


@pytest.mark.parametrize("bit_depth", [1, 2, 4, 8])
def test_a_low_bit_grey_png_keeps_its_colour_key(bit_depth):
    """Pillow scales 2- and 4-bit grey to 0..255 but keeps the tRNS key in the file's scale."""
    top = 2**bit_depth - 1
    values = np.tile(np.arange(SIZE[0]) % (top + 1), (SIZE[1], 1))
    got = pixels(png(values, bit_depth, 0, ((b"tRNS", struct.pack(">H", 0)),)))  # key: black
    assert (got[values == 0] == 255).all()  # transparent, so white
    assert (got[values == top] == 255).all()  # white anyway
    if top > 1:
        middle = values == 1
        assert (got[middle] == round(255 / top)).all()  # visible grey, not keyed out


# --- declared bit depth: 12-bit data in 16-bit samples ---------------------------------------------------

def test_twelve_bit_data_with_smaxsamplevalue_fills_the_range():
    values = gradient(top=4095)
    got = pixels(tiff(values.astype(np.uint16), extratags=smin_smax(0, 4095, "H")))[..., 0]
    assert np.abs(got - expected_8bit(values, 0, 4095)).max() <= 1 and got.max() == 255


def test_twelve_bit_samples_declared_by_bitspersample_fill_the_range():
    values = gradient(top=4095)
    decoded = decode(tiff_12bit_packed(values))
    assert decoded.image.mode == "I;16"
    got = np.asarray(to_rgb(decoded.image), dtype=int)[..., 0]
    assert np.abs(got - expected_8bit(values, 0, 4095)).max() <= 1 and got.max() == 255


def test_twelve_bit_data_that_declares_nothing_shows_as_a_viewer_shows_it():
    """No declaration: 16-bit samples are 16-bit data (a browser or viewer shows this dark too)."""
    values = gradient(top=4095)
    got = pixels(tiff(values.astype(np.uint16)))[..., 0]
    assert np.abs(got - expected_8bit(values, 0, 65535)).max() <= 1 and got.max() <= 16


def test_a_png_with_sbit_whose_samples_were_not_scaled_up():
    values = gradient(top=4095)
    got = pixels(png(values, 16, 0, ((b"sBIT", bytes([12])),)))[..., 0]
    assert np.abs(got - expected_8bit(values, 0, 4095)).max() <= 1 and got.max() == 255


def test_a_png_with_sbit_whose_samples_were_scaled_up_as_the_spec_asks():
    values = gradient(top=4095)
    scaled = (values << 4) | (values >> 8)  # left bit replication, https://www.w3.org/TR/png-3/#12Sample-depth-scaling
    got = pixels(png(scaled, 16, 0, ((b"sBIT", bytes([12])),)))[..., 0]
    assert np.abs(got - expected_8bit(scaled, 0, 65535)).max() <= 1


def test_a_sixteen_bit_rgb_png_with_sbit_whose_samples_were_not_scaled_up():
    samples = np.stack([gradient(top=4095), gradient(top=4095)[:, ::-1], np.full(SIZE[::-1], 2048)], axis=-1)
    got = pixels(png(samples, 16, 2, ((b"sBIT", bytes([12, 12, 12])),)))
    assert np.abs(got - expected_8bit(samples, 0, 4095)).max() <= 1


def test_a_sixteen_bit_rgb_tiff_with_smaxsamplevalue():
    samples = np.stack([gradient(top=4095), gradient(top=4095)[:, ::-1], np.full(SIZE[::-1], 4095)], axis=-1)
    got = pixels(tiff(samples.astype(np.uint16), photometric="rgb", extratags=smin_smax(0, 4095, "H")))
    assert np.abs(got - expected_8bit(samples, 0, 4095)).max() <= 1


# --- signed and float samples -------------------------------------------------------------------------

@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_signed_sixteen_bit_tiff_puts_zero_at_mid_grey(byteorder):
    """Signed samples over the type's range, offset so zero is mid-grey (as GIMP loads them)."""
    values = gradient(top=65535) - 32768
    decoded = decode(tiff(values.astype(np.int16), byteorder=byteorder))
    assert decoded.image.mode == "I"  # Pillow's I;16S / I;16BS
    got = np.asarray(to_rgb(decoded.image), dtype=int)[..., 0]
    assert np.abs(got - expected_8bit(values, -32768, 32767)).max() <= 1
    assert got.min() == 0 and got.max() == 255


def test_signed_tiff_with_a_declared_window():
    """A CT slice in Hounsfield units, -1024..3071, with SMin/SMaxSampleValue saying so."""
    values = gradient(top=4095) - 1024
    got = pixels(tiff(values.astype(np.int16), extratags=smin_smax(-1024, 3071)))[..., 0]
    assert np.abs(got - expected_8bit(values, -1024, 3071)).max() <= 1


def test_signed_eight_bit_tiff():
    values = gradient(top=255) - 128
    got = pixels(tiff(values.astype(np.int8)))[..., 0]
    assert (got == values + 128).all()


def test_float_tiff_in_zero_to_one():
    values = gradient(top=4095) / 4095
    got = pixels(tiff(values.astype(np.float32)))[..., 0]
    assert np.abs(got - expected_8bit(values, 0, 1)).max() <= 1


def test_float_tiff_outside_zero_to_one_is_stretched_from_its_minimum_to_its_maximum():
    values = gradient(top=4095) * 0.5 - 300.0
    got = pixels(tiff(values.astype(np.float32)))[..., 0]
    assert np.abs(got - expected_8bit(values, values.min(), values.max())).max() <= 1
    assert got.min() == 0 and got.max() == 255


def test_float_tiff_with_a_declared_range_and_nan():
    values = gradient(top=4095).astype(np.float32) / 10
    values[0, :4] = np.nan
    got = pixels(tiff(values, extratags=smin_smax(0.0, 200.0)))[..., 0]
    finite = np.isfinite(values)
    assert np.abs(got[finite] - expected_8bit(values[finite], 0, 200)).max() <= 1
    assert (got[0, :4] == 0).all()  # NaN shows black


def test_greyscale_pfm():
    values = gradient(top=4095) / 4095
    data = f"Pf\n{SIZE[0]} {SIZE[1]}\n-1.0\n".encode() + values[::-1].astype("<f4").tobytes()  # PFM rows run bottom-up
    got = pixels(data)[..., 0]
    assert np.abs(got - expected_8bit(values, 0, 1)).max() <= 1


def test_an_image_opened_by_the_caller_keeps_its_tiff_declarations():
    """prepare() with an already opened TIFF reads SMaxSampleValue from it, as from bytes."""
    values = gradient(top=4095)
    data = tiff(values.astype(np.uint16), extratags=smin_smax(0, 4095, "H"))
    from_bytes = prepare(data, LITE0_PREPROCESSING)[0].tensor
    from_image = prepare(Image.open(io.BytesIO(data)), LITE0_PREPROCESSING)[0].tensor
    assert np.abs(from_bytes - from_image).max() < 1e-6
