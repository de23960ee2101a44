"""Writing a model's canary (see :mod:`lambda_onnx.canary`): a real photo and PyTorch's answer for it.

Which photo: always one of the EVALUATION photos (never a calibration photo), stored as a PNG at the
model's resize size, so a runner exercises the whole preprocessing path on it.
- fp32: the photo whose PyTorch top-1 leads by the widest margin, so the top-1 check is never a tie;
- INT8: among the photos whose INT8 top-1 is PyTorch's (not within a tie), the one the INT8 model
  reproduces most closely with this CPU's exact kernel. The canary is a detector of a broken kernel
  or runtime, not a judge of the quantisation (the parity report is): the closer the agreement
  here, the smaller the deviation it can catch elsewhere.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch

from export.parity import Check, softmax
from lambda_onnx.canary import TOP1_TIE_LOGITS, Canary, canary_path, check, rel_rms
from lambda_onnx.classifier import Classifier, top_k
from lambda_onnx.cpu import cpu_info
from lambda_onnx.photos import Photo
from lambda_onnx.preprocess import decode, prepare, resize_crop, to_rgb
from lambda_onnx.sidecar import Preprocessing, Sidecar


def canary_image(photo: Photo, params: Preprocessing) -> bytes:
    """``photo`` resized (shorter side to ``resize_size``) and centre-cropped to a square of that
    size, as PNG: small, lossless (PNG decodes to the same pixels everywhere, unlike JPEG)."""
    square = Preprocessing(params.resize_size, params.resize_size, params.interpolation, params.mean, params.std)
    image = resize_crop(to_rgb(decode(photo.read()).image), square)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _pytorch_logits(module: torch.nn.Module, image: bytes, params: Preprocessing) -> np.ndarray:
    tensor = prepare(image, params, fast=False)[0].tensor
    with torch.inference_mode():
        return module(torch.from_numpy(tensor)).numpy()[0]


def _gap(logits: np.ndarray) -> float:
    top = np.sort(logits)[::-1]
    return float(top[0] - top[1])


def make_canary(module: torch.nn.Module, classifier: Classifier, photos: Sequence[Photo]) -> Canary:
    """The canary of the model ``classifier`` serves (fp32 or INT8), with ``module`` (PyTorch fp32)
    as the reference; what ``classifier`` measures on it here is recorded as the export's own check.

    Raises :class:`ValueError` when no photo qualifies (no photos, or every one a tie).
    """
    meta: Sidecar = classifier.sidecar
    params = meta.preprocessing
    candidates = []
    for photo in photos:
        image = canary_image(photo, params)
        reference = _pytorch_logits(module, image, params)
        got = classifier.infer(prepare(image, params, fast=False)[0].tensor)[0]
        candidates.append((photo, image, reference, got))
    if not candidates:
        raise ValueError("no evaluation photo is available for the canary (scikit-image, scikit-learn)")
    clear = [c for c in candidates if _gap(c[2]) > TOP1_TIE_LOGITS and int(np.argmax(c[3])) == int(np.argmax(c[2]))]
    if meta.precision == "int8":
        photo, image, reference, got = min(clear or candidates, key=lambda c: rel_rms(c[2], c[3]))
    else:
        photo, image, reference, got = max(candidates, key=lambda c: _gap(c[2]))
    engine = classifier.engine
    export = {"cpu": cpu_info().describe(), "runtime": engine.runtime, "kernel": engine.int8_kernel or engine.computes_in,
              "rel_rms": round(rel_rms(reference, got), 6),
              "max_abs_logit": float(f"{np.max(np.abs(got.astype(np.float64) - reference)):.6g}"),
              "max_abs_prob": float(f"{np.max(np.abs(softmax(got) - softmax(reference))):.6g}")}
    canary = Canary(model_sha256=meta.sha256, precision=meta.precision, photo=photo.name,
                    source=f"{photo.package}: {photo.relpath}", image=image, reference_logits=reference.astype(np.float32),
                    reference_top5=[{"class_id": p.class_id, "label": p.label, "probability": round(p.probability, 6)}
                                    for p in top_k(reference, meta.categories)],
                    computed_by=f"pytorch {torch.__version__} fp32", export=export)
    verdict = check(canary, got, engine.computes_in, meta.categories)
    if not verdict.passed:  # the parity report would have failed first; never publish a canary that fails here
        raise ValueError(f"the canary photo {photo.name} fails on the exporting machine: {verdict.reason}")
    return canary


def report_line(canary: Canary) -> Check:
    """The parity report's line for the canary just written (what the exporting CPU measured)."""
    e = canary.export
    return Check(f"canary {canary.photo} on this CPU ({e['cpu']}, {e['runtime']} {e['kernel']})", 1, True,
                 max_abs_logit=e["max_abs_logit"], max_abs_prob=e["max_abs_prob"],
                 note=f"relative logit error {e['rel_rms']:.4f}; runners check it at load")


def describe(canary: Canary, model_name: str) -> dict:
    """What the sidecar records about its model's canary (the file itself holds the photo and logits)."""
    return {"file": canary_path(model_name).name, "photo": canary.photo, "source": canary.source,
            "computed_by": canary.computed_by, "export": canary.export}
