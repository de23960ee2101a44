"""The models the benchmark measures: the given ones, or exported and quantised into its cache."""

from __future__ import annotations

from pathlib import Path

from lambda_onnx.sidecar import Sidecar, int8_path, sidecar_path
from local.defaults import DEFAULT_ACCURACY_MODEL, DEFAULT_MODEL
from local.measure.bench.config import BenchConfig, Step, noop


def ensure_models(config: BenchConfig, on_step: Step = noop) -> tuple[Path, Path, Path | None, Path | None]:
    """(fp32, int8, accuracy fp32, accuracy int8): the given models, or created in ``config.cache``.

    Nothing is ever written to ``models/``: a fresh clone gets a random-weight ResNet-50 (speed does
    not depend on weights) and the real-weights EfficientNet-Lite0 (agreement does), both with their
    INT8, exported into the cache once. Creating models needs the export's packages (torch).
    """
    cache = config.cache / "models"
    fp32 = config.model or (DEFAULT_MODEL if DEFAULT_MODEL.is_file() else cache / "resnet50.onnx")
    if not fp32.is_file():
        if config.model is not None:
            raise FileNotFoundError(f"model not found: {fp32}")
        from export.pipeline import export_model

        on_step(f"exporting a random-weight ResNet-50 to {fp32} (weights do not change speed)")
        export_model("resnet50", out=fp32, random_weights=True)
    int8 = config.int8 or int8_for(fp32, cache, on_step)
    accuracy, accuracy_int8 = None, None
    candidate = config.accuracy_model or (DEFAULT_ACCURACY_MODEL if DEFAULT_ACCURACY_MODEL.is_file() else cache / "efficientnet_lite0.onnx")
    try:
        if not candidate.is_file():
            from export.pipeline import export_model

            on_step(f"exporting the real-weights EfficientNet-Lite0 to {candidate} (for agreement)")
            export_model("efficientnet_lite0", out=candidate)
        accuracy = candidate
        accuracy_int8 = int8 if candidate.resolve() == fp32.resolve() else int8_for(candidate, cache, on_step)
    except Exception as exc:  # no weights package, no torch: agreement is then reported as not measured
        on_step(f"no real-weights model for agreement: {exc}")
    return fp32, int8, accuracy, accuracy_int8


def int8_for(fp32: Path, cache: Path, on_step: Step) -> Path:
    """The INT8 model quantised from ``fp32`` (next to it, or in the cache), else quantised now."""

    source = Sidecar.load(sidecar_path(fp32)).sha256
    for candidate in (int8_path(fp32), cache / int8_path(fp32).name):
        if candidate.is_file() and Sidecar.load(sidecar_path(candidate)).extra.get("quantization", {}).get(
                "source", {}).get("sha256") == source:
            return candidate
    from export.quantize import quantize_model

    out = cache / int8_path(fp32).name
    on_step(f"quantising {fp32} to {out}")
    quantize_model(fp32, out)
    return out


