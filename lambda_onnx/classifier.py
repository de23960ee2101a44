"""The classifier: one model loaded once, ``predict(image)`` many times, one typed result."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypedDict

import numpy as np
from PIL import Image

from lambda_onnx.canary import ALLOW_CANARY_FAILURE_ENV, Canary, CanaryBody, CanaryResult, canary_path
from lambda_onnx.canary import check as check_canary
from lambda_onnx.cpu import cpu_info, int8_kernel_choice, use_precise_int8
from lambda_onnx.engines import Engine, make_engine
from lambda_onnx.errors import ModelLoadError
from lambda_onnx.preprocess import prepare
from lambda_onnx.resources import default_threads
from lambda_onnx.sidecar import Sidecar, load_verified

TOP_K = 5

log = logging.getLogger(__name__)


# Each record of an answer is a dataclass here and a typed body on the wire (lambda_onnx.contract).
# The two are kept the same field by field by the type checker: ``body()`` names every key of the body
# and ``from_body()`` passes the body's keys to the dataclass, which has no defaults. A field added on
# one side only is an error in one of them.


class PredictionBody(TypedDict):
    class_id: int
    label: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    probability: float

    def body(self) -> PredictionBody:
        return {"class_id": self.class_id, "label": self.label, "probability": self.probability}

    @classmethod
    def from_body(cls, body: PredictionBody) -> Prediction:
        return cls(**body)


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent in each step of one prediction."""

    decode_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float


class ImageBody(TypedDict):
    width: int
    height: int
    bytes: int
    format: str
    processed_width: int
    processed_height: int
    fast_path: bool


@dataclass(frozen=True)
class ImageInfo:
    width: int  # original, upright
    height: int
    bytes: int
    format: str
    processed_width: int
    processed_height: int
    fast_path: bool

    def body(self) -> ImageBody:
        return {"width": self.width, "height": self.height, "bytes": self.bytes, "format": self.format,
                "processed_width": self.processed_width, "processed_height": self.processed_height,
                "fast_path": self.fast_path}

    @classmethod
    def from_body(cls, body: ImageBody) -> ImageInfo:
        return cls(**body)


class ModelBody(TypedDict):
    arch: str
    weights: str
    random_weights: bool
    precision: str
    sha256: str
    runtime: str
    threads: int
    int8_kernel: str | None
    canary: CanaryBody


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    weights: str
    random_weights: bool
    precision: str
    sha256: str
    runtime: str
    threads: int
    int8_kernel: str | None  # the INT8 kernel of a quantised model (lambda_onnx.cpu); None for fp32
    canary: CanaryBody  # the load-time canary on this CPU (CanaryResult.summary)

    def body(self) -> ModelBody:
        return {"arch": self.arch, "weights": self.weights, "random_weights": self.random_weights,
                "precision": self.precision, "sha256": self.sha256, "runtime": self.runtime, "threads": self.threads,
                "int8_kernel": self.int8_kernel, "canary": self.canary.copy()}

    @classmethod
    def from_body(cls, body: ModelBody) -> ModelInfo:
        return cls(**body)


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
    is OpenVINO's inference precision (see :class:`lambda_onnx.engines.OpenVinoEngine`);
    ``int8_kernel`` ONNX Runtime's INT8 kernel (``auto``, ``precise``, ``fast``; default
    ``$INT8_KERNEL`` or ``auto``: see :mod:`lambda_onnx.cpu`).

    With ``canary`` (the default), the model's canary (:mod:`lambda_onnx.canary`) runs once here,
    on this CPU, in place of the warm-up: if an INT8 model fails it with the fast kernel, the
    precise kernel is tried and kept if it passes (and logged); if it still fails, loading raises
    :class:`ModelLoadError` with the reason, unless ``allow_canary_failure`` (default
    ``$ALLOW_CANARY_FAILURE``) is set, and then every answer carries a warning. ``measuring`` is for
    tools that measure every variant, failing ones included, and never serve them (the bench,
    ``evaluate``): the engine is kept as asked (no kernel switch), and the result recorded quietly.
    """

    def __init__(self, model_path: str | Path, *, threads: int | None = None, runtime: str = "onnxruntime",
                 fast_preprocess: bool = True, verify_sha256: bool = True, warmup: bool = True,
                 precision_hint: str | None = None, int8_kernel: str | None = None, canary: bool = True,
                 allow_canary_failure: bool | None = None, measuring: bool = False, spinning: bool | None = None) -> None:
        start = time.perf_counter()
        self.model_path = Path(model_path)
        self.sidecar: Sidecar = load_verified(self.model_path, verify_sha256=verify_sha256)
        self.threads = threads or default_threads()
        self.runtime, self.precision_hint, self.spinning = runtime, precision_hint, spinning
        self.int8_kernel_choice = int8_kernel_choice(int8_kernel)
        self.engine: Engine = self._engine(self.int8_kernel_choice)
        self.fast_preprocess = fast_preprocess
        self.warnings: list[str] = []
        self.canary = CanaryResult("absent", reason="not run (canary=False)")
        self._allow_canary_failure = _allowed(allow_canary_failure)
        if canary:
            self.canary = self._check_canary(self._allow_canary_failure, measuring)
        if warmup and self.canary.status == "absent":  # the first run allocates ORT's arenas: pay for it at load
            size = self.sidecar.preprocessing.crop_size
            self.engine.run(np.zeros((1, 3, size, size), dtype=np.float32))
        self.model = ModelInfo(
            arch=self.sidecar.arch, weights=self.sidecar.weights, random_weights=self.sidecar.random_weights,
            precision=self.sidecar.precision, sha256=self.sidecar.sha256, runtime=self.engine.runtime,
            threads=self.threads, int8_kernel=self.engine.int8_kernel, canary=self.canary.summary(),
        )
        self.host = cpu_info()
        self.load_ms = (time.perf_counter() - start) * 1e3

    def recheck(self, why: str) -> None:
        """Build the engine again for the CPU this process now runs on and run the canary again, as at load
        (a failing canary raises :class:`ModelLoadError` unless failures are allowed). For a process restored
        from a snapshot on another kind of CPU (:mod:`lambda_onnx.snapshot`); ``why`` is kept in the canary's
        ``restored`` field, so every answer says what happened."""
        self.engine = self._engine(self.int8_kernel_choice)
        self.warnings = []
        self.canary = replace(self._check_canary(self._allow_canary_failure), restored=why)
        self.model = replace(self.model, int8_kernel=self.engine.int8_kernel, canary=self.canary.summary())
        self.host = cpu_info()

    def _engine(self, int8_kernel: str) -> Engine:
        return make_engine(self.runtime, self.model_path, self.sidecar.input_name, self.sidecar.output_name, self.threads,
                           self.precision_hint, quantised=self.sidecar.precision == "int8", int8_kernel=int8_kernel,
                           spinning=self.spinning)

    def run_canary(self, canary: Canary, engine: Engine | None = None) -> CanaryResult:
        """Classify the canary photo with ``engine`` (default: this classifier's) and check the answer."""
        engine = engine or self.engine
        start = time.perf_counter()
        prepared, _ = prepare(canary.image, self.sidecar.preprocessing, fast=False)
        logits = engine.run(prepared.tensor)[0]
        result = check_canary(canary, logits, engine.computes_in, self.sidecar.categories)
        return replace(result, ms=(time.perf_counter() - start) * 1e3)

    def _check_canary(self, allow_failure: bool, measuring: bool = False) -> CanaryResult:
        path = canary_path(self.model_path)
        if not path.is_file():
            log.warning("no canary beside %s: the model is not checked on this CPU (export it again to get one)",
                        self.model_path)
            return CanaryResult("absent", reason=f"no {path.name} beside the model (exported before canaries?)")
        canary = Canary.load(path)
        if canary.model_sha256 != self.sidecar.sha256:
            raise ModelLoadError(f"canary {path} belongs to another model (sha256 {canary.model_sha256[:12]}…, the "
                                 f"sidecar says {self.sidecar.sha256[:12]}…): export the model again")
        result = self.run_canary(canary)
        if measuring:
            return result
        fast = self.engine.int8_kernel
        if (not result.passed and self.sidecar.precision == "int8" and self.runtime == "onnxruntime"
                and cpu_info().x86 and not use_precise_int8(self.int8_kernel_choice)):
            precise = self._engine("precise")
            retry = self.run_canary(canary, precise)
            if retry.passed:
                log.warning("canary failed with the %s kernel (%s); switched to the %s kernel, which passes",
                            fast, result.reason, precise.int8_kernel)
                self.engine = precise
                return replace(retry, kernel_fallback=f"{fast} failed ({result.reason}) -> {precise.int8_kernel}")
        if result.passed:
            return result
        reason = (f"the canary ({canary.photo}) failed on this CPU ({cpu_info().describe()}) with {self.engine.runtime} "
                  f"{self.engine.int8_kernel or self.engine.computes_in}: {result.reason}")
        if not allow_failure:
            raise ModelLoadError(f"{reason}; refusing to serve {self.model_path.name} "
                                 f"(set {ALLOW_CANARY_FAILURE_ENV}=1 to serve it anyway, every answer then says so)")
        log.error("%s; serving anyway because %s is set", reason, ALLOW_CANARY_FAILURE_ENV)
        self.warnings.append(f"{reason}; served anyway ({ALLOW_CANARY_FAILURE_ENV} is set): answers may be wrong")
        return result

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


def _allowed(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return os.environ.get(ALLOW_CANARY_FAILURE_ENV, "").strip().lower() in ("1", "true", "yes")
