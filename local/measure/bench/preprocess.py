"""Decode and preprocessing time of a phone-sized JPEG (fast and reference path) and a small one."""

from __future__ import annotations

from functools import partial

import numpy as np

from lambda_onnx import photos as sample_photos
from lambda_onnx.preprocess import prepare
from lambda_onnx.sidecar import Preprocessing
from local.measure.bench.config import BenchConfig, PreprocessRow, Step, noop
from local.measure.bench.timing import sample_times
from local.measure.core.images import DEFAULT_PHOTO


def measure_preprocess(params: Preprocessing, config: BenchConfig, on_step: Step = noop) -> list[PreprocessRow]:
    """Decode + preprocess of a 12 MP phone-sized JPEG (fast and reference path) and a 0.3 MP one."""
    photo = sample_photos.by_name(DEFAULT_PHOTO)
    rows: list[PreprocessRow] = []
    for megapixels, fast in ((sample_photos.PHONE_MEGAPIXELS, True), (sample_photos.PHONE_MEGAPIXELS, False), (0.3, True)):
        data = sample_photos.upscaled_jpeg(photo, megapixels=megapixels)
        on_step(f"preprocessing a {megapixels:g} MP JPEG ({'fast path allowed' if fast else 'reference path'})")
        prepared, decoded = prepare(data, params, fast=fast)
        samples = sample_times(partial(prepare, data, params, fast=fast), max(3, config.repeats // 3), 1)
        rows.append({"image": f"{megapixels:g} MP JPEG", "width": decoded.width, "height": decoded.height,
                     "bytes": len(data), "fast_allowed": fast, "fast_path": prepared.fast_path,
                     "median_ms": float(np.median(samples)), "p90_ms": float(np.percentile(samples, 90))})
    return rows


