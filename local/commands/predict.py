"""``python -m local predict IMAGE [IMAGE ...]``: top-5 and timings per image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lambda_onnx.errors import ClassifierError
from local.commands.options import RANDOM_WEIGHTS_BANNER, add_model_args, count, describe_canary, load_classifier


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="classify image files with the local ONNX Runtime runner")
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE")
    parser.add_argument("--sample", action="append", default=[], metavar="NAME",
                        help="a sample photo shipped in an installed package, by name (e.g. chelsea, coffee; repeatable)")
    add_model_args(parser)
    parser.add_argument("--top-k", type=count, default=5, help="how many classes to show (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run)


def _format(path: Path, result) -> str:
    img, t = result.image, result.timings
    lines = [f"{path}  ({img.width}x{img.height} {img.format}, {img.bytes / 1e3:.0f} kB"
             f"{', fast path' if img.fast_path else ''})"]
    for rank, p in enumerate(result.predictions, 1):
        lines.append(f"  {rank}. {p.label:<28} {p.probability:7.2%}  (class {p.class_id})")
    lines.append(f"  decode {t.decode_ms:.1f} ms, preprocess {t.preprocess_ms:.1f} ms, inference {t.inference_ms:.1f} ms, "
                 f"postprocess {t.postprocess_ms:.2f} ms, total {t.total_ms:.1f} ms")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lambda_onnx import photos

    try:
        args.images = list(args.images) + [photos.by_name(name).path for name in args.sample]
    except (KeyError, FileNotFoundError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if not args.images:
        print("error: give at least one IMAGE or --sample NAME", file=sys.stderr)
        return 2
    try:
        classifier = load_classifier(args)
    except ClassifierError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    meta = classifier.sidecar
    if not args.json:
        print(f"model: {meta.label}, {classifier.engine.runtime}, {classifier.threads} thread(s), "
              f"sha256 {meta.sha256[:12]}…, loaded in {classifier.load_ms:.0f} ms")
        print(f"host: {classifier.host.describe()}; {describe_canary(classifier)}")
        for warning in classifier.warnings:
            print(f"WARNING: {warning}")
        if meta.random_weights:
            print(RANDOM_WEIGHTS_BANNER)
    failed = 0
    records = []
    for path in args.images:
        try:
            result = classifier.predict(path.read_bytes(), k=args.top_k)
        except OSError as exc:
            failed += 1
            records.append({"file": str(path), "error": {"error": "io_error", "message": exc.strerror or str(exc), "status": 400}})
            if not args.json:
                print(f"error: {path}: {exc.strerror or exc}", file=sys.stderr)
            continue
        except ClassifierError as exc:
            failed += 1
            records.append({"file": str(path), "error": exc.to_dict()})
            if not args.json:
                print(f"error: {path}: {exc.message} ({exc.status})", file=sys.stderr)
            continue
        records.append({"file": str(path), "result": result.to_dict()})
        if not args.json:
            print(_format(path, result))
    if args.json:
        print(json.dumps({"model": {"path": str(args.model), "label": meta.label, "random_weights": meta.random_weights},
                          "results": records}, indent=2))
    return 1 if failed else 0
