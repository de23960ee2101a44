"""``python -m local evaluate DIR``: top-1/top-5 accuracy of each runtime × precision on a labelled folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lambda_onnx.engines import OPENVINO_HINTS, RUNTIMES
from lambda_onnx.sidecar import int8_path
from local.commands.options import RANDOM_WEIGHTS_BANNER
from local.defaults import DEFAULT_MODEL


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="accuracy of each runtime × precision on a labelled folder (DIR/<class index or label>/<images>)")
    parser.add_argument("root", type=Path, metavar="DIR", help="one sub-folder per class, named by ImageNet class index or label")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the fp32 export (default: %(default)s)")
    parser.add_argument("--int8", type=Path, metavar="MODEL",
                        help="the INT8 model (default: <model>.int8.onnx next to --model, if it exists)")
    parser.add_argument("--no-int8", action="store_true", help="evaluate the fp32 model only")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES), help="(default: all)")
    parser.add_argument("--openvino-hints", nargs="+", choices=OPENVINO_HINTS, default=["f32", "auto"],
                        help="OpenVINO precision hints to evaluate (default: %(default)s; auto is bf16 on CPUs with AVX512-BF16)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: one per CPU this process may use)")
    parser.add_argument("--exact-preprocess", action="store_true", help="always use the reference preprocessing path")
    parser.add_argument("--limit", type=int, help="evaluate at most this many images")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from local.measure.evaluate import evaluate
    from local.measure.variants import variants_for

    models = [args.model]
    int8 = args.int8 or int8_path(args.model)
    if not args.no_int8 and (args.int8 or int8.is_file()):
        models.append(int8)
    variants = variants_for(models, args.runtimes, args.openvino_hints)

    def progress(done: int, total: int) -> None:
        if not args.json:
            print(f"\r  {done}/{total} images", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        result = evaluate(args.root, variants, threads=args.threads, fast_preprocess=not args.exact_preprocess,
                          limit=args.limit, on_progress=progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    if result.random_weights:
        print(RANDOM_WEIGHTS_BANNER)
    print(f"{result.root}: {result.images} images in {result.classes} classes"
          f"{f', {len(result.skipped)} skipped (undecodable)' if result.skipped else ''}"
          f", {'fast path for large photos' if result.fast_preprocess else 'reference preprocessing'}")
    width = max(len(r.name) for r in result.results)
    print(f"  {'runtime × precision':<{width}}  {'top-1':>7}  {'top-5':>7}  top-1 same as first")
    for r in result.results:
        refused = "  (its canary fails on this CPU: measured here, never served)" if r.canary == "failed" else ""
        print(f"  {r.name:<{width}}  {r.top1:7.2%}  {r.top5:7.2%}  {r.agrees_with_first}/{r.images}{refused}")
    for path, reason in result.skipped:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    return 0
