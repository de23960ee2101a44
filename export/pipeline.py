"""The export as a library: build -> convert -> sidecar -> parity. The CLI only calls these."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

from export import parity, registry
from export.canary import describe as describe_canary
from export.canary import make_canary
from export.canary import report_line as canary_line
from export.convert import INPUT_NAME, OPSET, OUTPUT_NAME, describe, export_onnx
from export.registry import BuiltModel
from lambda_onnx import photos as sample_photos
from lambda_onnx.canary import Canary
from lambda_onnx.classifier import Classifier
from lambda_onnx.sidecar import Sidecar, file_sha256, sidecar_path

Step = Callable[[str], None]
_PACKAGES = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "numpy", "pillow")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def no_step(_: str) -> None:
    """The default progress callback: says nothing."""


def export_module(built: BuiltModel, out_path: Path, *, opset: int = OPSET,
                  photos: Sequence[sample_photos.Photo] | None = None, on_step: Step = no_step,
                  on_check: Callable[[parity.Check], None] | None = None) -> Sidecar:
    """Export any classification module with its preprocessing and categories, then prove parity.

    Writes ``out_path`` and its sidecar only when parity passes; otherwise raises
    :class:`ParityError` listing every failure and leaves nothing behind under ``out_path``.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with parity.staged(out_path) as partial:
        on_step(f"exporting {built.arch} to ONNX (opset {opset}, dynamo exporter)")
        export_onnx(built.module, partial, built.preprocessing.crop_size, opset=opset)
        inputs, outputs = describe(partial)
        meta = Sidecar(
            arch=built.arch,
            weights=built.weights,
            random_weights=built.random_weights,
            seed=built.seed,
            precision="fp32",
            preprocessing=built.preprocessing,
            categories=built.categories,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            input_shape=inputs[0][1],
            opset=opset,
            onnx_file=out_path.name,
            onnx_bytes=partial.stat().st_size,
            sha256=file_sha256(partial),
            versions=versions(),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            extra={"weights_path": built.weights_path} if built.weights_path else {},
        )
        meta.save(sidecar_path(partial))
        chosen = list(photos) if photos is not None else sample_photos.available()
        on_step(f"checking parity against PyTorch on a random batch and {len(chosen)} real photos")
        classifier = Classifier(partial, threads=os.cpu_count() or 1, fast_preprocess=False, warmup=False, canary=False)
        report = parity.check_onnx(built.module, classifier, chosen, built.reference_transforms, on_check=on_check,
                                   random_weights=built.random_weights)
        canary = None
        if report.passed:
            canary = add_canary(meta, report, built.module, classifier, chosen, out_path, on_check)
        parity.publish(meta, report, partial, out_path, canary)
    return meta


def add_canary(meta: Sidecar, report: parity.ParityReport, module, classifier: Classifier,
               photos: Sequence[sample_photos.Photo], out_path: Path,
               on_check: Callable[[parity.Check], None] | None = None) -> Canary:
    """Make the model's canary (:mod:`export.canary`), note it in the sidecar and the report."""
    canary = make_canary(module, classifier, photos)
    meta.extra = {**meta.extra, "canary": describe_canary(canary, out_path.name)}
    line = canary_line(canary)
    report.checks.append(line)
    if on_check:
        on_check(line)
    return canary


def default_path(arch: str, out_dir: Path = Path("models")) -> Path:
    return Path(out_dir) / f"{arch}.onnx"


def export_model(arch: str = registry.DEFAULT_ARCH, *, out: Path | None = None, weights_file: Path | None = None,
                 random_weights: bool = False, seed: int = 0, pretrained: str = "DEFAULT", opset: int = OPSET,
                 on_step: Step = no_step, on_check: Callable[[parity.Check], None] | None = None,
                 download_progress: bool = False) -> Sidecar:
    """Build ``arch`` by name and export it (see :func:`export_module`)."""
    source = "random weights" if random_weights else (str(weights_file) if weights_file else "pretrained weights")
    on_step(f"building {arch} with {source}")
    built = registry.build(arch, weights_file=weights_file, random_weights=random_weights, seed=seed,
                           pretrained=pretrained, download_progress=download_progress)
    return export_module(built, out or default_path(arch), opset=opset, on_step=on_step, on_check=on_check)


def rebuild(meta: Sidecar) -> BuiltModel:
    """The torch model a sidecar describes (same arch, same weights or same seed)."""
    if meta.random_weights:
        return registry.build(meta.arch, random_weights=True, seed=meta.seed or 0)
    if meta.weights.startswith("file:"):
        path = meta.extra.get("weights_path")
        if not path:
            raise ValueError(f"the sidecar does not record where {meta.weights} lives")
        return registry.build(meta.arch, weights_file=Path(path))
    pretrained = meta.weights.split(".", 1)[1] if "." in meta.weights and meta.arch != registry.EFFICIENTNET_LITE0 else "DEFAULT"
    return registry.build(meta.arch, pretrained=pretrained)
