"""Top-1/top-5 accuracy of each runtime × precision on labelled images: a folder (``python -m local
evaluate DIR``) or the EVALUATION photos shipped in packages (the bench's agreement check).

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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lambda_onnx.classifier import TOP_K, Classifier
from lambda_onnx.errors import ClassifierError
from lambda_onnx.photos import Photo
from lambda_onnx.preprocess import IMAGE_SUFFIXES, prepare
from lambda_onnx.sidecar import Preprocessing
from local.measure.variants import Variant

# Images are preprocessed and run through every variant this many at a time, so a folder of any
# size needs memory for one chunk only.
CHUNK = 16


@dataclass(frozen=True)
class LabelledImage:
    """An image and the classes a correct answer may name (one for a class folder; a photo may accept
    several, e.g. a tabby is also a tiger cat)."""

    path: Path
    class_ids: tuple[int, ...]
    name: str = ""

    @property
    def class_id(self) -> int:
        return self.class_ids[0]


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
    differs_from_first: list[str] = field(default_factory=list)  # the images whose top-1 is not the first variant's
    key: str = ""  # the variant's key (local.measure.variants.Variant.key)
    int8_kernel: str | None = None  # the INT8 kernel it ran with on this CPU
    canary: str = ""  # its canary on this CPU; "failed": measured anyway, never served (lambda_onnx.canary)
    same_as: list[str] = field(default_factory=list)  # keys of variants dropped because they compute exactly this

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
        images += [LabelledImage(p, (class_id,), str(p.relative_to(root))) for p in sorted(folder.rglob("*"))
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise ValueError(f"no images under {root}'s class folders")
    return images[:limit] if limit else images


def photo_images(photos: Sequence[Photo], categories: Sequence[str]) -> list[LabelledImage]:
    """The package photos with the classes a correct classifier names for each (their ``expected`` labels)."""
    index = {label: i for i, label in enumerate(categories)}
    return [LabelledImage(photo.path, tuple(index[label] for label in photo.expected if label in index), photo.name)
            for photo in photos]


def _computes(classifier: Classifier) -> tuple[str, str, str | None, str | None]:
    """What a loaded variant computes: the model, the runtime, the precision it really computes in, the INT8 kernel."""
    return (classifier.sidecar.sha256, classifier.engine.runtime, getattr(classifier.engine, "precision", None),
            classifier.engine.int8_kernel)


def evaluate(root: Path | Sequence[LabelledImage], variants: Sequence[Variant], *, threads: int | None = None,
             fast_preprocess: bool = True, limit: int | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Accuracy of every variant on the labelled folder ``root`` (or on the labelled images given),
    and how often each one's top-1 is the first variant's.

    Variants whose OpenVINO "auto" hint resolves to what another variant already computes (e.g.
    f32 on a CPU without bf16) are dropped as duplicates. Every variant is measured, even one whose
    canary fails on this CPU (a runner would refuse it): its result says so.
    """
    if not variants:
        raise ValueError("no variants to evaluate")
    classifiers: list[tuple[Variant, Classifier]] = []
    # what a kept variant computes -> the keys of the variants dropped for it
    duplicates: dict[tuple[str, str, str | None, str | None], list[str]] = {}
    for variant in variants:
        classifier = variant.load(threads, fast_preprocess=fast_preprocess)
        key = _computes(classifier)
        if key in duplicates:
            duplicates[key].append(variant.key)
        else:
            duplicates[key] = []
            classifiers.append((variant, classifier))
    first = classifiers[0][1].sidecar
    for _, classifier in classifiers[1:]:
        if classifier.sidecar.categories != first.categories:
            raise ValueError(f"{classifier.model_path} has other categories than {classifiers[0][1].model_path}")
    if isinstance(root, (str, Path)):
        images, where = labelled_images(Path(root), first.categories, limit), str(root)
    else:
        images, where = list(root)[:limit] if limit else list(root), "the given images"
    results = []
    for variant, classifier in classifiers:
        results.append(VariantResult(variant.name(classifier), classifier.engine.runtime, classifier.sidecar.precision,
                                     classifier.engine.computes_in, str(classifier.model_path),
                                     int8_kernel=classifier.engine.int8_kernel, canary=classifier.canary.status,
                                     key=variant.key,
                                     same_as=duplicates[_computes(classifier)]))
    evaluation = Evaluation(where, len({i.class_id for i in images}), 0, first.random_weights, fast_preprocess, results)
    for start in range(0, len(images), CHUNK):
        chunk = images[start:start + CHUNK]
        kept: list[LabelledImage] = []
        inputs: dict[Preprocessing, list[np.ndarray]] = {}  # each model's preprocessing -> the chunk's tensors
        for image in chunk:
            try:
                tensors: dict[Preprocessing, np.ndarray] = {}
                for _, classifier in classifiers:  # fp32 and INT8 share preprocessing: computed once
                    params = classifier.sidecar.preprocessing
                    if params not in tensors:
                        tensors[params] = prepare(image.path.read_bytes(), params, fast=fast_preprocess)[0].tensor
            except (ClassifierError, OSError) as exc:
                evaluation.skipped.append((str(image.path), getattr(exc, "message", None) or str(exc)))
                continue
            kept.append(image)
            for params, tensor in tensors.items():
                inputs.setdefault(params, []).append(tensor)
        if kept:
            reference_top1 = None
            for (_, classifier), result in zip(classifiers, results):
                logits = classifier.infer(np.concatenate(inputs[classifier.sidecar.preprocessing]))
                top = np.argsort(-logits, axis=1)[:, :TOP_K]
                result.images += len(kept)
                result.top1_correct += sum(int(row[0]) in image.class_ids for row, image in zip(top, kept))
                result.top5_correct += sum(bool(set(row.tolist()) & set(image.class_ids)) for row, image in zip(top, kept))
                if reference_top1 is None:
                    reference_top1 = top[:, 0]
                same = top[:, 0] == reference_top1
                result.agrees_with_first += int(np.sum(same))
                result.differs_from_first += [image.name or str(image.path) for image, ok in zip(kept, same) if not ok]
            evaluation.images += len(kept)
        if on_progress:
            on_progress(min(start + CHUNK, len(images)), len(images))
    return evaluation
