"""Timing one variant: samples in interleaved rounds, so a passing disturbance hits every variant alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from lambda_onnx import photos as sample_photos
from lambda_onnx.preprocess import prepare
from local.measure.bench.config import BenchConfig, Latency, Step


def sample_times(fn: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def photo_batch(params, size: int) -> np.ndarray:
    """``size`` real preprocessed photos (repeated if needed): what the runtimes see when serving."""
    photos = sample_photos.available()
    tensors = [prepare(p.read(), params)[0].tensor for p in photos] or [np.zeros((1, 3, params.crop_size, params.crop_size), np.float32)]
    return np.concatenate([tensors[i % len(tensors)] for i in range(size)])


@dataclass
class Variant:
    """One runtime × precision being measured, with the samples gathered so far."""

    name: str
    runtime: str
    precision: str
    computes_in: str
    threads: int
    run: Callable[[np.ndarray], object]
    samples: list[float] = field(default_factory=list)
    batch_samples: list[float] = field(default_factory=list)
    key: str = ""
    int8_kernel: str | None = None
    canary: str = ""


def measure_in_rounds(variants: list[Variant], batch: np.ndarray, config: BenchConfig, on_step: Step,
                       batch_repeats: int | None = None) -> list[Latency]:
    """Sample every variant in ``config.rounds`` interleaved blocks rather than one after another.

    On a shared machine a disturbance lasting a few seconds would otherwise land on whichever
    variant happened to run then and move its median by 10 % (seen here); spread over rounds it
    lands on all of them. Within a block the runtime keeps its caches warm, as a server would.
    """
    one = batch[:1]
    rounds = max(1, min(config.rounds, config.repeats))
    per_round = [config.repeats // rounds + (i < config.repeats % rounds) for i in range(rounds)]
    batches = config.batch_repeats if batch_repeats is None else batch_repeats
    per_round_batch = [batches // rounds + (i < batches % rounds) for i in range(rounds)]
    for index, (count, batch_count) in enumerate(zip(per_round, per_round_batch)):
        for variant in variants:
            on_step(f"round {index + 1}/{rounds}: {variant.name}, {variant.threads} thread(s)")
            variant.samples += sample_times(partial(variant.run, one), count, config.warmup)
            if batch_count:
                warm = 0 if variant.batch_samples else 1  # the batch shape's first run, once
                variant.batch_samples += sample_times(partial(variant.run, batch), batch_count, warm)
    return [Latency(v.name, v.runtime, v.precision, v.computes_in, v.threads, float(np.median(v.samples)),
                    float(np.percentile(v.samples, 90)),
                    len(batch) / (float(np.median(v.batch_samples)) / 1e3) if v.batch_samples else None,
                    [round(s, 3) for s in v.samples], key=v.key, int8_kernel=v.int8_kernel, canary=v.canary)
            for v in variants]


