"""Top-1/top-5 accuracy of each runtime × precision on a labelled folder of images.

The folder has one sub-folder per class, named by ImageNet class index (``0`` … ``999``, zero
padding allowed) or by the class's label as the model's sidecar spells it (case and ``_``/space
do not matter: ``Egyptian_cat``, ``egyptian cat``). WordNet ids (``n01440764``) are not mapped:
no offline list of them ships with the installed packages.

Every variant sees the same preprocessed inputs (the one preprocessing implementation, fast path
for large photos unless ``fast_preprocess=False``, as served), so differences come from the
runtime and the precision alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lambda_onnx.classifier import Classifier
from lambda_onnx.errors import ClassifierError
from lambda_onnx.preprocess import IMAGE_SUFFIXES, prepare

# Images are preprocessed and run through every variant this many at a time, so a folder of any
# size needs memory for one chunk only.
CHUNK = 16
TOP_K = 5


@dataclass(frozen=True)
class Variant:
    """One runtime × precision: a model file on a runtime (with OpenVINO's precision hint)."""

    model: Path
    runtime: str = "onnxruntime"
    precision_hint: str | None = None  # OpenVINO only: "f32" (default), "bf16", "auto", ...


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    class_id: int


@dataclass
class VariantResult:
    """Accuracy of one variant, and how often its top-1 equals the first variant's."""

    name: str  # e.g. "openvino int8 (computes in f32)"
    runtime: str
    precision: str  # the model's: "fp32" or "int8"
    computes_in: str  # what the runtime really computes in ("fp32", "int8", "bf16", ...)
    model: str
    images: int = 0
    top1_correct: int = 0
    top5_correct: int = 0
    agrees_with_first: int = 0
    int8_kernel: str | None = None  # the INT8 kernel it ran with on this CPU
    canary: str = ""  # its canary on this CPU; "failed": measured anyway, never served (lambda_onnx.canary)

    @property
    def top1(self) -> float:
        return self.top1_correct / self.images if self.images else float("nan")

    @property
    def top5(self) -> float:
        return self.top5_correct / self.images if self.images else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "top1": self.top1, "top5": self.top5}


@dataclass
class Evaluation:
    root: str
    classes: int
    images: int
    random_weights: bool
    fast_preprocess: bool
    results: list[VariantResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) for undecodable images

    def to_dict(self) -> dict:
        return {**asdict(self), "results": [r.to_dict() for r in self.results]}


def _normalise(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name).strip().lower()


def class_of(folder: str, categories: Sequence[str]) -> int:
    """The class index a folder name stands for (an index or a label); raises ValueError otherwise."""
    if folder.isdigit():
        index = int(folder)
        if index < len(categories):
            return index
        raise ValueError(f"folder {folder!r} is a class index but the model has {len(categories)} classes (0-{len(categories) - 1})")
    by_label = {_normalise(c): i for i, c in enumerate(categories)}
    if _normalise(folder) in by_label:
        return by_label[_normalise(folder)]
    hint = " (WordNet ids are not mapped: rename the folders to class indices or labels)" if re.fullmatch(r"n\d{8}", folder) else ""
    raise ValueError(f"folder {folder!r} is neither a class index (0-{len(categories) - 1}) nor a label of this model{hint}")


def labelled_images(root: Path, categories: Sequence[str], limit: int | None = None) -> list[LabelledImage]:
    """Every image file under ``root/<class>/`` (sorted; at most ``limit``), with its class index."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"not a directory: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{root} has no class sub-folders (expected {root}/<class index or label>/<images>)")
    images = []
    for folder in folders:
        class_id = class_of(folder.name, categories)
        images += [LabelledImage(p, class_id) for p in sorted(folder.rglob("*"))
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise ValueError(f"no images under {root}'s class folders")
    return images[:limit] if limit else images


def variants_for(models: Iterable[Path], runtimes: Sequence[str] = ("onnxruntime", "openvino"),
                 openvino_hints: Sequence[str] = ("f32", "auto")) -> list[Variant]:
    """Each model on each runtime (OpenVINO once per precision hint)."""
    out = []
    for model in models:
        for runtime in runtimes:
            hints = openvino_hints if runtime == "openvino" else (None,)
            out += [Variant(Path(model), runtime, hint) for hint in hints]
    return out


def _name(classifier: Classifier) -> tuple[str, str]:
    precision = classifier.sidecar.precision
    computes = getattr(classifier.engine, "precision", "f32")
    computes_in = precision if computes == "f32" else computes
    hint = getattr(classifier.engine, "hint", None)
    suffix = f" (hint {hint} → {computes})" if hint else ""
    return f"{classifier.engine.runtime} {precision}{suffix}", computes_in


def evaluate(root: Path, variants: Sequence[Variant], *, threads: int | None = None, fast_preprocess: bool = True,
             limit: int | None = None, on_progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Accuracy of every variant on the labelled folder ``root``.

    Variants whose OpenVINO "auto" hint resolves to what another variant already computes (e.g.
    f32 on a CPU without bf16) are dropped as duplicates.
    """
    if not variants:
        raise ValueError("no variants to evaluate")
    classifiers: list[Classifier] = []
    seen = set()
    for variant in variants:
        # Measured even when its canary fails on this CPU (a runner would refuse it): the result says so.
        classifier = Classifier(variant.model, threads=threads, runtime=variant.runtime,
                                precision_hint=variant.precision_hint, fast_preprocess=fast_preprocess,
                                allow_canary_failure=True)
        key = (classifier.sidecar.sha256, classifier.engine.runtime, getattr(classifier.engine, "precision", None))
        if key not in seen:
            seen.add(key)
            classifiers.append(classifier)
    first = classifiers[0].sidecar
    for classifier in classifiers[1:]:
        if classifier.sidecar.categories != first.categories:
            raise ValueError(f"{classifier.model_path} has other categories than {classifiers[0].model_path}")
    images = labelled_images(root, first.categories, limit)
    results = []
    for classifier in classifiers:
        name, computes_in = _name(classifier)
        results.append(VariantResult(name, classifier.engine.runtime, classifier.sidecar.precision, computes_in,
                                     str(classifier.model_path), int8_kernel=classifier.engine.int8_kernel,
                                     canary=classifier.canary.status))
    evaluation = Evaluation(str(root), len({i.class_id for i in images}), 0, first.random_weights, fast_preprocess,
                            results)
    inputs: dict[object, list[np.ndarray]] = {}
    for start in range(0, len(images), CHUNK):
        chunk, labels, inputs = images[start:start + CHUNK], [], {}
        for image in chunk:
            try:
                tensors = {}
                for classifier in classifiers:  # fp32 and INT8 share preprocessing: computed once
                    params = classifier.sidecar.preprocessing
                    if params not in tensors:
                        tensors[params] = prepare(image.path.read_bytes(), params, fast=fast_preprocess)[0].tensor
            except (ClassifierError, OSError) as exc:
                evaluation.skipped.append((str(image.path), getattr(exc, "message", None) or str(exc)))
                continue
            labels.append(image.class_id)
            for params, tensor in tensors.items():
                inputs.setdefault(params, []).append(tensor)
        if labels:
            truth = np.asarray(labels)
            reference_top1 = None
            for classifier, result in zip(classifiers, results):
                logits = classifier.infer(np.concatenate(inputs[classifier.sidecar.preprocessing]))
                top = np.argsort(-logits, axis=1)[:, :TOP_K]
                result.images += len(truth)
                result.top1_correct += int(np.sum(top[:, 0] == truth))
                result.top5_correct += int(np.sum(np.any(top == truth[:, None], axis=1)))
                if reference_top1 is None:
                    reference_top1 = top[:, 0]
                result.agrees_with_first += int(np.sum(top[:, 0] == reference_top1))
            evaluation.images += len(truth)
        if on_progress:
            on_progress(min(start + CHUNK, len(images)), len(images))
    return evaluation
