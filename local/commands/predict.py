"""``python -m local predict IMAGE [IMAGE ...]``: top-5 and timings per image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lambda_onnx.classifier import TOP_K
from lambda_onnx.contract import ResponseBody, Service
from local.commands.options import RANDOM_WEIGHTS_BANNER, add_model_args, count, describe_canary, load_classifier


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="classify image files with the local ONNX Runtime runner")
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE")
    parser.add_argument("--sample", action="append", default=[], metavar="NAME",
                        help="a sample photo shipped in an installed package, by name (e.g. chelsea, coffee; repeatable)")
    add_model_args(parser)
    parser.add_argument("--top-k", type=count, default=TOP_K, help="how many classes to show (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run)


def _format(path: Path, body: ResponseBody) -> str:
    img, m = body["image"], body["metrics"]
    lines = [f"{path}  ({img['width']}x{img['height']} {img['format']}, {img['bytes'] / 1e3:.0f} kB"
             f"{', fast path' if img['fast_path'] else ''})"]
    for rank, p in enumerate(body["predictions"], 1):
        lines.append(f"  {rank}. {p['label']:<28} {p['probability']:7.2%}  (class {p['class_id']})")
    lines.append(f"  decode {m['decode_ms']:.1f} ms, preprocess {m['preprocess_ms']:.1f} ms, inference {m['inference_ms']:.1f} ms, "
                 f"postprocess {m['postprocess_ms']:.2f} ms, total {m['handler_ms']:.1f} ms")
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
    classifier = load_classifier(args)
    meta = classifier.sidecar
    if not args.json:
        print(f"model: {meta.label}, {classifier.engine.runtime}, {classifier.threads} thread(s), "
              f"sha256 {meta.sha256[:12]}…, loaded in {classifier.load_ms:.0f} ms")
        print(f"host: {classifier.host.describe()}; {describe_canary(classifier.canary, classifier.engine.int8_kernel)}")
        for warning in classifier.warnings:
            print(f"WARNING: {warning}")
        if meta.random_weights:
            print(RANDOM_WEIGHTS_BANNER)
    service = Service(classifier)  # the contract every server answers with: the same body, metrics and host
    failed = 0
    records = []
    for path in args.images:
        try:
            data = path.read_bytes()
        except OSError as exc:
            failed += 1
            records.append({"file": str(path), "status": 400,
                            "error": {"error": "io_error", "message": exc.strerror or str(exc), "status": 400}})
            if not args.json:
                print(f"error: {path}: {exc.strerror or exc}", file=sys.stderr)
            continue
        status, body = service.respond(data, k=args.top_k)
        if "error" in body:  # a refusal (any status but 200)
            failed += 1
            records.append({"file": str(path), "status": status, "error": body})
            if not args.json:
                print(f"error: {path}: {body['message']} ({status})", file=sys.stderr)
            continue
        records.append({"file": str(path), "status": status, "result": body})
        if not args.json:
            print(_format(path, body))
    if args.json:
        print(json.dumps({"model": {"path": str(args.model), "label": meta.label, "random_weights": meta.random_weights},
                          "results": records}, indent=2))
    return 1 if failed else 0
