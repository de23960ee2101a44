"""The one preprocessing path: parity with torchvision on real photos, every mode, every error."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from torchvision.models import ResNet50_Weights

from export.parity import PREPROCESS_ATOL
from export.registry import LITE0_PREPROCESSING, _preprocessing_from, _reference_transforms
from lambda_onnx.errors import InvalidImageError, PayloadTooLargeError, UnsupportedMediaTypeError
from lambda_onnx.limits import MAX_IMAGE_BYTES
from lambda_onnx.photos import EVALUATION, available
from lambda_onnx.preprocess import crop_box, decode, prepare, resized_size, to_rgb
from tests.helpers import corpus

WEIGHTS = ResNet50_Weights.IMAGENET1K_V2
PARAMS = _preprocessing_from(WEIGHTS)
ONE_LEVEL = 1 / 255 / min(PARAMS.std)  # one 8-bit step, after normalisation


def tensor(data: bytes, params=PARAMS, fast: bool = False) -> np.ndarray:
    return prepare(data, params, fast=fast)[0].tensor


def test_params_are_read_from_the_weights():
    t = WEIGHTS.transforms()
    assert (PARAMS.resize_size, PARAMS.crop_size) == (t.resize_size[0], t.crop_size[0]) == (232, 224)
    assert PARAMS.mean == tuple(t.mean) and PARAMS.std == tuple(t.std)
    assert PARAMS.interpolation == "bilinear"


@pytest.mark.parametrize("photo", available(EVALUATION), ids=lambda p: p.name)
@pytest.mark.parametrize("params,reference", [(PARAMS, WEIGHTS.transforms()),
                                              (LITE0_PREPROCESSING, _reference_transforms(LITE0_PREPROCESSING))],
                         ids=["resnet50", "efficientnet_lite0"])
def test_matches_torchvision_transforms_on_real_photos(photo, params, reference):
    ours = tensor(photo.read(), params)
    with Image.open(photo.path) as image:
        ref = reference(image.convert("RGB")).numpy()[None]
    assert ours.shape == ref.shape == (1, 3, params.crop_size, params.crop_size)
    assert ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= PREPROCESS_ATOL


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (257, 1000), (1, 1), (3, 7), (232, 232)])
def test_resized_size_follows_torchvision(size):
    from torchvision.transforms.functional import _compute_resized_output_size

    h, w = _compute_resized_output_size((size[1], size[0]), [232])
    assert resized_size(*size, 232) == (w, h)


def test_crop_box_path_stays_within_a_level_of_resize_then_crop():
    """The box path (used for extreme aspect ratios) against the reference on a real photo."""
    image = corpus.chelsea()
    new_w, new_h = resized_size(*image.size, PARAMS.resize_size)
    full = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = int(round((new_h - 224) / 2.0)), int(round((new_w - 224) / 2.0))
    reference = np.asarray(full.crop((left, top, left + 224, top + 224)), dtype=int)
    boxed = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR, box=crop_box(*image.size, PARAMS)), dtype=int)
    assert np.abs(reference - boxed).max() <= 1


def test_exif_orientation_is_applied():
    rotated = decode(corpus.exif_rotated_jpeg())
    assert (rotated.width, rotated.height) == rotated.image.size == (451, 300)
    # an image opened by the caller reports the same upright size
    opened = prepare(Image.open(io.BytesIO(corpus.exif_rotated_jpeg())), PARAMS)[1]
    assert (opened.width, opened.height) == opened.image.size == (451, 300)
    upright = tensor(corpus.encode(corpus.chelsea(), "JPEG", quality=95))
    sideways = tensor(corpus.encode(corpus.chelsea().transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95))
    got = tensor(corpus.exif_rotated_jpeg())
    assert np.abs(got - upright).mean() < 0.05 < np.abs(got - sideways).mean()


def test_sixteen_bit_grey_is_scaled_not_clipped():
    image = decode(corpus.grey16_png()).image
    assert image.mode.startswith("I")
    rgb = np.asarray(to_rgb(image), dtype=int)
    expected = np.asarray(corpus.chelsea().convert("L"), dtype=int)
    assert np.abs(rgb[..., 0] - expected).max() <= 1
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert (rgb == 255).mean() < 0.01  # clipping would turn almost everything white


@pytest.mark.parametrize("mode", ["LA", "RGBA", "P"])
def test_transparency_is_composited_over_white(mode):
    image = decode(corpus.transparent(mode)).image
    rgb = np.asarray(to_rgb(image))
    half = rgb.shape[1] // 2
    assert (rgb[:, : half - 1] == 255).all()  # the transparent half
    assert rgb[:, half + 1 :].mean() < 200  # the cat is still there


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "YCbCr", "I", "F", "RGBA", "LA", "P"])
def test_every_mode_becomes_rgb(mode):
    image = corpus.chelsea().convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size


def test_cmyk_jpeg_keeps_its_colours():
    original = np.asarray(corpus.chelsea(), dtype=float)
    cmyk = decode(corpus.encode(corpus.chelsea().convert("CMYK"), "JPEG", quality=95)).image
    assert cmyk.mode == "CMYK"
    assert np.abs(np.asarray(to_rgb(cmyk), dtype=float) - original).mean() < 6


def test_animated_gif_uses_the_first_frame():
    first = tensor(corpus.encode(corpus.chelsea(), "GIF"))
    assert np.abs(tensor(corpus.animated_gif()) - first).max() < 1e-6


@pytest.mark.parametrize("case", corpus.valid_cases(), ids=lambda c: c.name)
def test_every_valid_image_kind_gives_a_model_input(case):
    x = tensor(case.data)
    assert x.shape == (1, 3, 224, 224) and np.isfinite(x).all()


@pytest.mark.parametrize("case", corpus.invalid_cases(), ids=lambda c: c.name)
def test_every_invalid_input_gets_its_typed_error(case):
    errors = {400: InvalidImageError, 413: PayloadTooLargeError, 415: UnsupportedMediaTypeError}
    with pytest.raises(errors[case.status]) as info:
        prepare(case.data, PARAMS)
    assert info.value.status == case.status
    assert info.value.message and "Traceback" not in info.value.message


def test_bytes_over_the_limit_are_refused_before_decoding():
    with pytest.raises(PayloadTooLargeError, match="limit"):
        prepare(b"\xff\xd8\xff" + b"\x00" * MAX_IMAGE_BYTES, PARAMS)


def test_pixels_over_the_limit_are_refused_before_decoding():
    with pytest.raises(PayloadTooLargeError, match="64.0 megapixels"):
        prepare(corpus.png_bomb(8_000, 8_000), PARAMS)


def test_extreme_aspect_ratio_allocates_no_huge_intermediate():
    """10000x1 resized naively would be 2,320,000x232 RGB (1.6 GB); measure a fresh process."""
    code = (
        "import json, resource, sys; from tests.helpers import corpus; "
        "from lambda_onnx.preprocess import prepare; from export.registry import LITE0_PREPROCESSING as P; "
        "cases = {c.name: c.data for c in corpus.valid_cases()}; "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "[prepare(cases[n], P) for n in ('10000x1', '1x10000')]; "
        "print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown_mb = json.loads(out.stdout.strip().splitlines()[-1])
    assert grown_mb < 50, f"peak RSS grew by {grown_mb:.0f} MB"
