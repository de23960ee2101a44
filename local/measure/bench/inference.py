"""Batch-1 latency and batch-8 throughput of every runtime x precision against PyTorch eager, and threads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lambda_onnx.classifier import Classifier
from lambda_onnx.sidecar import Sidecar, sidecar_path
from local.measure.bench.config import BATCH, BenchConfig, Latency, Step, ThreadRow, noop
from local.measure.bench.timing import Variant, measure_in_rounds, photo_batch
from local.measure.variants import variants_for


def torch_module(meta: Sidecar):
    """The PyTorch module for ``meta``'s architecture, random weights (speed does not depend on them)."""
    from export.registry import build

    return build(meta.arch, random_weights=True, seed=meta.seed or 0).module


def measure_inference(fp32: Path, int8: Path, threads: int, config: BenchConfig, on_step: Step = noop) -> list[Latency]:
    """PyTorch eager fp32 (the reference), then ONNX Runtime and OpenVINO on the fp32 and INT8 files."""
    meta = Sidecar.load(sidecar_path(fp32))
    batch = photo_batch(meta.preprocessing, BATCH)
    variants: list[Variant] = []
    try:
        import torch

        on_step(f"PyTorch eager fp32, {threads} thread(s)")
        torch.set_num_threads(threads)
        module = torch_module(meta)

        def run_torch(x: np.ndarray) -> object:
            with torch.inference_mode():
                return module(torch.from_numpy(x))

        variants.append(Variant("pytorch eager fp32", "pytorch", "fp32", "fp32", threads, run_torch))
    except ImportError:
        on_step("PyTorch is not installed: the reference is not measured")
    for spec in variants_for([fp32, int8], forced_kernels=True, by="runtime"):
        try:
            classifier = spec.load(threads)
        except Exception as exc:  # e.g. OpenVINO missing: measure the others
            on_step(f"{spec.runtime} cannot load {spec.model.name}: {exc}")
            continue
        variants.append(Variant(spec.name(classifier), spec.runtime, classifier.sidecar.precision,
                                 classifier.engine.computes_in, threads, classifier.infer, key=spec.key,
                                 int8_kernel=classifier.engine.int8_kernel, canary=classifier.canary.status))
    results = measure_in_rounds(variants, batch, config, on_step)
    reference = next((r for r in results if r.runtime == "pytorch"), None)
    for result in results:
        if reference:
            result.vs_pytorch = result.median_ms / reference.median_ms
    return results


def measure_threads(fp32: Path, int8: Path, chosen: int, config: BenchConfig, on_step: Step = noop) -> list[ThreadRow]:
    """ONNX Runtime batch-1 latency with the chosen thread count against the alternatives."""
    cpus = os.cpu_count() or 1
    counts = sorted({1, chosen, cpus, 2 * cpus} if not config.quick else {1, chosen})
    meta = Sidecar.load(sidecar_path(fp32))
    variants = []
    for path in (fp32, int8):
        for count in counts:
            classifier = Classifier(path, threads=count)
            precision = classifier.sidecar.precision
            variants.append(Variant(f"onnxruntime {precision}", "onnxruntime", precision, precision, count,
                                     classifier.infer))
    results = measure_in_rounds(variants, photo_batch(meta.preprocessing, 1), config, on_step, batch_repeats=0)
    return [{"runtime": "onnxruntime", "precision": r.precision, "threads": r.threads, "chosen": r.threads == chosen,
             "median_ms": r.median_ms, "p90_ms": r.p90_ms} for r in results]


