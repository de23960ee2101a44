"""The classifier: one model loaded once, ``predict(image)`` many times, one typed result."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lambda_onnx.engines import Engine, make_engine
from lambda_onnx.preprocess import prepare
from lambda_onnx.resources import default_threads
from lambda_onnx.sidecar import Sidecar, load_verified

TOP_K = 5


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    probability: float


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent in each step of one prediction."""

    decode_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float


@dataclass(frozen=True)
class ImageInfo:
    width: int  # original, upright
    height: int
    bytes: int
    format: str
    processed_width: int
    processed_height: int
    fast_path: bool


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    weights: str
    random_weights: bool
    precision: str
    sha256: str
    runtime: str
    threads: int


@dataclass(frozen=True)
class Classification:
    """What one prediction returns, wherever it ran."""

    predictions: list[Prediction]
    timings: Timings
    image: ImageInfo
    model: ModelInfo

    def to_dict(self) -> dict:
        return asdict(self)


def top_k(logits: np.ndarray, categories: list[str], k: int = TOP_K) -> list[Prediction]:
    """Softmax over one row of logits, then the k most probable classes, most probable first."""
    z = logits.astype(np.float64) - float(np.max(logits))
    probs = np.exp(z)
    probs /= probs.sum()
    k = min(k, probs.size)
    idx = np.argpartition(-probs, k - 1)[:k]
    idx = idx[np.argsort(-probs[idx], kind="stable")]
    return [Prediction(int(i), categories[int(i)], float(probs[i])) for i in idx]


class Classifier:
    """An exported model, verified against its sidecar and loaded once.

    ``fast_preprocess`` enables the large-photo fast path (JPEG draft decoding and a reducing
    resize); it only ever applies to sources at least twice the resize target. ``precision_hint``
    is OpenVINO's inference precision (see :class:`lambda_onnx.engines.OpenVinoEngine`).
    """

    def __init__(self, model_path: str | Path, *, threads: int | None = None, runtime: str = "onnxruntime",
                 fast_preprocess: bool = True, verify_sha256: bool = True, warmup: bool = True,
                 precision_hint: str | None = None) -> None:
        start = time.perf_counter()
        self.model_path = Path(model_path)
        self.sidecar: Sidecar = load_verified(self.model_path, verify_sha256=verify_sha256)
        self.threads = threads or default_threads()
        self.engine: Engine = make_engine(runtime, self.model_path, self.sidecar.input_name,
                                          self.sidecar.output_name, self.threads, precision_hint)
        self.fast_preprocess = fast_preprocess
        size = self.sidecar.preprocessing.crop_size
        if warmup:  # the first run allocates ORT's arenas; pay for it at load, not on a request
            self.engine.run(np.zeros((1, 3, size, size), dtype=np.float32))
        self.model = ModelInfo(
            arch=self.sidecar.arch, weights=self.sidecar.weights, random_weights=self.sidecar.random_weights,
            precision=self.sidecar.precision, sha256=self.sidecar.sha256, runtime=self.engine.runtime,
            threads=self.threads,
        )
        self.load_ms = (time.perf_counter() - start) * 1e3

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a preprocessed (N, 3, H, W) float32 batch."""
        return self.engine.run(batch)

    def predict(self, image: bytes | Image.Image, k: int = TOP_K) -> Classification:
        """Classify image bytes (any supported format) or an opened PIL image."""
        start = time.perf_counter()
        prepared, decoded = prepare(image, self.sidecar.preprocessing, fast=self.fast_preprocess)
        infer_start = time.perf_counter()
        logits = self.engine.run(prepared.tensor)
        post_start = time.perf_counter()
        predictions = top_k(logits[0], self.sidecar.categories, k)
        end = time.perf_counter()
        _, _, height, width = prepared.tensor.shape
        return Classification(
            predictions=predictions,
            timings=Timings(
                decode_ms=prepared.decode_ms,
                preprocess_ms=prepared.preprocess_ms,
                inference_ms=(post_start - infer_start) * 1e3,
                postprocess_ms=(end - post_start) * 1e3,
                total_ms=(end - start) * 1e3,
            ),
            image=ImageInfo(decoded.width, decoded.height, decoded.num_bytes, decoded.format,
                            width, height, prepared.fast_path),
            model=self.model,
        )
