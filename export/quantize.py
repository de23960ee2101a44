"""INT8: static QDQ quantisation of an fp32 export with ONNX Runtime's own tools, calibrated on real photos.

``models/<arch>.onnx`` (fp32, with its sidecar) -> ``models/<arch>.int8.onnx`` + ``models/<arch>.int8.json``.

Steps, all from ``onnxruntime.quantization``: ``quant_pre_process`` (graph optimisation and ONNX
shape inference, done before quantisation as the docs recommend), then ``quantize_static`` fed by a
``CalibrationDataReader`` that runs our one preprocessing implementation over real photos — the
CALIBRATION set shipped in installed packages, or the user's directory. The INT8 model is then
judged against its fp32 source and PyTorch on the EVALUATION photos, which it never saw
(:func:`export.parity.check_int8`), and written only when that report passes.
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

from export import parity
from export.pipeline import Step, add_canary, no_step, rebuild, versions
from lambda_onnx import photos as sample_photos
from lambda_onnx.classifier import Classifier
from lambda_onnx.cpu import cpu_info
from lambda_onnx.preprocess import IMAGE_SUFFIXES, prepare
from lambda_onnx.sidecar import Preprocessing, Sidecar, file_sha256, int8_path, load_verified, sidecar_path

# The settings, and why (https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html):
# - QDQ, not QOperator: the tensor-oriented format ONNX Runtime fuses into QLinearConv/QGemm at load
#   and OpenVINO reads too, so one INT8 file serves both runtimes.
# - U8S8 (uint8 activations, int8 weights): the docs call S8S8 the default, but here (ORT 1.32,
#   AVX-512-VNNI) S8S8 QDQ ran ResNet-50 in 51 ms against 13.5 ms for U8S8, and no faster with
#   two threads than with one; U8S8 is the format ORT's x86 kernels are built around. OpenVINO ran
#   both in 12.3-12.6 ms.
# - Per-channel weights: one scale per output channel keeps depthwise and narrow layers accurate
#   (EfficientNet-Lite0 is mostly depthwise convolutions).
# - No reduce_range: 7-bit weights only avoid the VPMADDUBSW saturation of U8S8 on x86 CPUs
#   *without* VNNI (AVX2/AVX-512 only), and every runner now avoids it there by itself with ONNX
#   Runtime's exact U8U8 kernel (lambda_onnx/cpu.py; the model's canary proves it at load). With
#   VNNI reduce_range only costs precision: on the random ResNet-50 it kept top-1 on 6 of 8 photos
#   against 8 of 8, and on EfficientNet-Lite0 it grew the largest logit error from 0.67 to 1.03.
#   Without VNNI (measured on an AMD EPYC with AVX2) it also kept top-1 on Lite0, with twice the
#   probability error of the U8U8 kernel. ``--reduce-range`` remains for runtimes without an exact
#   kernel (OpenVINO on such CPUs); the sidecar records the quantising CPU.
# - MinMax calibration: EfficientNet-Lite0 kept top-1 on 8 of 8 evaluation photos with MinMax,
#   Percentile and Entropy alike; MinMax is deterministic, fast and needs no histogram parameters.
QUANT_FORMAT = QuantFormat.QDQ
ACTIVATION_TYPE = QuantType.QUInt8
WEIGHT_TYPE = QuantType.QInt8
PER_CHANNEL = True
REDUCE_RANGE = False
CALIBRATE_METHOD = CalibrationMethod.MinMax
# A user's directory can be large: calibration needs a few hundred images at most, and the MinMax
# calibrator keeps every activation of every image it has not merged yet (ResNet-50: ~100 MB each),
# so it merges after this many.
MAX_CALIBRATION_IMAGES = 256
CALIB_MAX_INTERMEDIATE_OUTPUTS = 16


@dataclass(frozen=True)
class CalibrationImage:
    """One calibration image: where it comes from and the hash that keeps it out of the evaluation."""

    name: str
    path: Path
    sha256: str

    def read(self) -> bytes:
        return self.path.read_bytes()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def calibration_images(directory: Path | None = None, *, limit: int = MAX_CALIBRATION_IMAGES,
                       evaluation: Sequence[sample_photos.Photo] | None = None) -> list[CalibrationImage]:
    """The CALIBRATION photos shipped in packages, or up to ``limit`` images found under ``directory``.

    A user's directory must not contain any evaluation photo (compared by content hash), or INT8
    would be judged on a photo it was calibrated on: that raises :class:`ValueError` naming the file.
    Above ``limit`` images, an evenly spaced selection of the sorted files is used.
    """
    if directory is None:
        images = [CalibrationImage(p.name, p.path, _sha256(p.read())) for p in sample_photos.available(sample_photos.CALIBRATION)]
        if not images:
            raise ValueError("none of the calibration photos' packages (scikit-image, gradio, matplotlib) is installed; "
                             "pass --calibration-dir DIR")
        return images
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"calibration directory not found: {directory}")
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images in {directory} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    evaluation = sample_photos.available() if evaluation is None else evaluation
    held_out = {_sha256(photo.read()): photo.name for photo in evaluation}
    images = []
    for path in files:
        digest = _sha256(path.read_bytes())
        if digest in held_out:
            raise ValueError(f"{path} is the evaluation photo {held_out[digest]!r}: INT8 is judged on those photos, "
                             "so they cannot calibrate it; remove it from the calibration directory")
        images.append(CalibrationImage(str(path.relative_to(directory)), path, digest))
    return images


class PhotoCalibrationReader(CalibrationDataReader):
    """Feeds ``quantize_static`` one preprocessed photo at a time, through the serving preprocessing."""

    def __init__(self, images: Sequence[CalibrationImage], params: Preprocessing, input_name: str) -> None:
        self.images, self.params, self.input_name = list(images), params, input_name
        self._iter: Iterator[CalibrationImage] = iter(self.images)

    def get_next(self) -> dict | None:
        image = next(self._iter, None)
        if image is None:
            return None
        prepared, _ = prepare(image.read(), self.params, fast=False)
        return {self.input_name: prepared.tensor}

    def rewind(self) -> None:
        self._iter = iter(self.images)



def settings(reduce_range: bool) -> dict:
    """The quantisation settings as recorded in the INT8 sidecar."""
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "pre_process": "onnxruntime.quantization.quant_pre_process (optimisation + ONNX shape inference)",
        "format": QUANT_FORMAT.name,
        "activation_type": ACTIVATION_TYPE.name,
        "weight_type": WEIGHT_TYPE.name,
        "per_channel": PER_CHANNEL,
        "reduce_range": reduce_range,
        "calibrate_method": CALIBRATE_METHOD.name,
    }


def _opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def quantize_model(fp32_path: Path, out_path: Path | None = None, *, calibration_dir: Path | None = None,
                   reduce_range: bool = REDUCE_RANGE, on_step: Step = no_step,
                   on_check: Callable[[parity.Check], None] | None = None) -> Sidecar:
    """Quantise an existing fp32 export to INT8 and prove it on photos it was not calibrated on.

    Writes ``out_path`` (default :func:`int8_path`) and its sidecar only when the parity report
    passes; otherwise raises :class:`ParityError` listing every failure and leaves nothing behind.
    """
    fp32_path = Path(fp32_path)
    meta = load_verified(fp32_path)
    if meta.precision != "fp32":
        raise ValueError(f"{fp32_path} is {meta.precision}; quantisation starts from an fp32 export")
    out_path = Path(out_path) if out_path is not None else int8_path(fp32_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    images = calibration_images(calibration_dir)
    source = (str(calibration_dir) if calibration_dir is not None
              else "CALIBRATION photos shipped in installed packages (lambda_onnx/photos.py)")
    with parity.staged(out_path) as partial:
        with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
            prepared = Path(tmp) / "pre.onnx"
            on_step("pre-processing the fp32 model for quantisation (optimisation, shape inference)")
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            on_step(f"calibrating on {len(images)} images ({'your directory' if calibration_dir else 'package photos'}) "
                    f"and quantising ({QUANT_FORMAT.name}, {ACTIVATION_TYPE.name} activations, {WEIGHT_TYPE.name} "
                    f"per-channel weights{', reduce_range' if reduce_range else ''})")
            reader = PhotoCalibrationReader(images, meta.preprocessing, meta.input_name)
            quantize_static(str(prepared), str(partial), reader, quant_format=QUANT_FORMAT, per_channel=PER_CHANNEL,
                            reduce_range=reduce_range, activation_type=ACTIVATION_TYPE, weight_type=WEIGHT_TYPE,
                            calibrate_method=CALIBRATE_METHOD, calibration_providers=["CPUExecutionProvider"],
                            extra_options={"CalibMaxIntermediateOutputs": CALIB_MAX_INTERMEDIATE_OUTPUTS})
        onnx.checker.check_model(str(partial), full_check=True)
        int8_meta = dataclasses.replace(
            meta,
            precision="int8",
            onnx_file=out_path.name,
            onnx_bytes=partial.stat().st_size,
            sha256=file_sha256(partial),
            opset=_opset(partial),
            versions=versions(),
            parity={},
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            extra={**meta.extra, "quantization": {
                **settings(reduce_range),
                "source": {"file": fp32_path.name, "path": str(fp32_path.resolve()), "sha256": meta.sha256},
                "calibration": {"source": source, "count": len(images), "images": [i.name for i in images],
                                "sha256": [i.sha256 for i in images]},
                "quantized_on_cpu_with_vnni": cpu_info().vnni,
                "quantized_on_cpu": cpu_info().describe(),
            }},
        )
        int8_meta.save(sidecar_path(partial))
        on_step(f"rebuilding {meta.arch} in PyTorch for the INT8 parity report")
        module = rebuild(meta).module
        on_step("checking INT8 against fp32 ONNX and PyTorch on evaluation photos (never used for calibration)")
        report = check(partial, fp32_path, module, on_check=on_check)
        canary = None
        if report.passed:
            int8 = Classifier(partial, fast_preprocess=False, verify_sha256=False, canary=False)
            canary = add_canary(int8_meta, report, module, int8, sample_photos.available(), out_path, on_check)
        parity.publish(int8_meta, report, partial, out_path, canary)
    return int8_meta


def source_of(int8_file: Path, meta: Sidecar) -> Path:
    """The fp32 model an INT8 sidecar was quantised from: next to it, else where it was."""
    recorded = meta.extra.get("quantization", {}).get("source", {})
    for candidate in (Path(int8_file).with_name(recorded.get("file", "")), Path(recorded.get("path", ""))):
        if candidate.name and candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"the INT8 check compares against its fp32 source {recorded.get('file', '?')}, which is neither next to "
        f"{int8_file} nor at {recorded.get('path', '?')}; export it again with `python -m export`"
    )


def check(int8_file: Path, fp32_file: Path, module=None, *, photos: Sequence[sample_photos.Photo] | None = None,
          on_check: Callable[[parity.Check], None] | None = None) -> parity.ParityReport:
    """The INT8 parity report of ``int8_file`` against ``fp32_file`` (and ``module``, PyTorch, if given)."""
    threads = os.cpu_count() or 1
    int8 = Classifier(int8_file, threads=threads, fast_preprocess=False, verify_sha256=False, warmup=False, canary=False)
    fp32 = Classifier(fp32_file, threads=threads, fast_preprocess=False, warmup=False, canary=False)
    if fp32.sidecar.sha256 != int8.sidecar.extra.get("quantization", {}).get("source", {}).get("sha256"):
        raise ValueError(f"{fp32_file} is not the fp32 model {int8_file} was quantised from (sha256 differs)")
    calibration = int8.sidecar.extra.get("quantization", {}).get("calibration", {}).get("sha256", [])
    chosen = list(photos) if photos is not None else sample_photos.available()
    return parity.check_int8(int8, fp32, module, chosen, random_weights=int8.sidecar.random_weights,
                             calibration_sha256=calibration, on_check=on_check)
