"""The sidecar JSON: everything a runner needs to serve one ``.onnx`` file.

It lives next to the model (``models/resnet50.onnx`` -> ``models/resnet50.json``) and is the
contract between the export (which writes it) and every runner (which only reads it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lambda_onnx.errors import ModelLoadError

SIDECAR_FORMAT = 1
# Shown wherever a random-weights model's answers appear (CLI, app, reports), each in its own markup.
RANDOM_WEIGHTS_WARNING = ("RANDOM WEIGHTS: this model was exported with random weights, so its predictions are "
                          "meaningless (it answers nearly the same class for every image). Timings, memory and "
                          "payload sizes are real.")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize_size``, centre-crop ``crop_size``, normalise.

    ``mean`` and ``std`` apply to pixels scaled to 0..1, as in torchvision.
    ``source`` says where the values come from (the weights' own ``transforms()`` or a
    reference implementation), so nobody has to guess.
    """

    resize_size: int
    crop_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str = ""

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.crop_size > self.resize_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than resize_size {self.resize_size}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))


@dataclass
class Sidecar:
    """Identity, contract and provenance of one exported model."""

    arch: str
    weights: str  # e.g. "ResNet50_Weights.IMAGENET1K_V2", "random", "file:my.pth"
    random_weights: bool
    precision: str  # "fp32" or "int8"
    preprocessing: Preprocessing
    categories: list[str]
    input_name: str
    output_name: str
    input_shape: list[Any]
    opset: int
    onnx_file: str
    onnx_bytes: int
    sha256: str
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format: int = SIDECAR_FORMAT

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def label(self) -> str:
        """Short human name, e.g. ``resnet50 fp32 (ResNet50_Weights.IMAGENET1K_V2)``."""
        weights = f"RANDOM WEIGHTS seed={self.seed}" if self.random_weights else self.weights
        return f"{self.arch} {self.precision} ({weights})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sidecar:
        data = dict(data)
        data["preprocessing"] = Preprocessing(**data["preprocessing"])
        return cls(**data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Sidecar:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except FileNotFoundError:
            raise ModelLoadError(f"sidecar not found: {path} (every model needs the JSON the export writes next to it)") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelLoadError(f"sidecar {path} is not valid: {exc}") from None


def sidecar_path(model_path: Path) -> Path:
    """``models/resnet50.onnx`` -> ``models/resnet50.json``."""
    return Path(model_path).with_suffix(".json")


def int8_path(fp32_path: Path) -> Path:
    """``models/resnet50.onnx`` -> ``models/resnet50.int8.onnx`` (its sidecar: ``resnet50.int8.json``):
    where ``python -m export --int8`` writes a model's INT8 version, and where every runner looks."""
    fp32_path = Path(fp32_path)
    return fp32_path.with_name(f"{fp32_path.stem}.int8.onnx")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hash in chunks so a large model is never held in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_verified(model_path: Path, verify_sha256: bool = True) -> Sidecar:
    """Load the sidecar of ``model_path`` and check the model file against it.

    Raises :class:`ModelLoadError` with a one-line reason when the model is missing, its size
    differs (truncated) or its sha256 differs from the one the export recorded.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelLoadError(f"model not found: {model_path} (create it with `python -m export`)")
    meta = Sidecar.load(sidecar_path(model_path))
    size = model_path.stat().st_size
    if size != meta.onnx_bytes:
        raise ModelLoadError(
            f"model {model_path} is {size} bytes but its sidecar expects {meta.onnx_bytes}: "
            "the file is truncated or not the one that was exported"
        )
    if verify_sha256:
        digest = file_sha256(model_path)
        if digest != meta.sha256:
            raise ModelLoadError(
                f"model {model_path} has sha256 {digest[:12]}… but its sidecar expects {meta.sha256[:12]}…: "
                "the file is corrupt or not the one that was exported"
            )
    return meta
