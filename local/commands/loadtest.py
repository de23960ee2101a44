"""``python -m local loadtest``: ``local serve`` (and its peers) at capacity and at overload against the
in-process ceiling; Markdown, JSON and a PNG chart in ``artifacts/loadtest/``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from local.commands.options import count


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from local.measure import loadtest
    from local.measure.core.http_load import GENERATORS

    parser = subparsers.add_parser(
        "loadtest", help="local serve at a capacity load and at 4x overload against the in-process ceiling "
                         "(--peers: BentoML and Ray Serve too)")
    parser.add_argument("--model", type=Path, action="append", default=None, metavar="PATH",
                        help="exported .onnx (repeatable; default: ResNet-50 fp32 and INT8 and EfficientNet-Lite0, "
                             "those that exist)")
    parser.add_argument("--rounds", type=count, default=loadtest.DEFAULT_ROUNDS,
                        help="interleaved rounds; medians over rounds are reported (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=loadtest.DEFAULT_SECONDS,
                        help="length of each load phase (default: %(default)s)")
    parser.add_argument("--connections", type=count, default=loadtest.CAPACITY_CONNECTIONS,
                        help="connections of the capacity load (default: %(default)s)")
    parser.add_argument("--overload", type=count, default=loadtest.OVERLOAD_FACTOR,
                        help="the overload phase has this many times --connections (default: %(default)s)")
    parser.add_argument("--peers", action="store_true",
                        help="also BentoML and Ray Serve serving the same model (install them first: "
                             "bash local/measure/peers/setup.sh)")
    parser.add_argument("--load", choices=GENERATORS, default="auto",
                        help="load generator: wrk (Debian's), python (the fallback), auto: wrk if installed "
                             "(default: %(default)s)")
    parser.add_argument("--batches", default="", metavar="SIZES",
                        help="also measure inference CPU per image at these batch sizes, e.g. 1,2,4,8: whether dynamic "
                             "batching could pay on this CPU (default: not measured)")
    parser.add_argument("--quiet", type=float, default=None, metavar="SHARE",
                        help="on a shared machine: wait before each server until other processes use less than this "
                             "share of the CPUs (e.g. 0.05), and measure a phase again when they used more "
                             f"(up to {loadtest.QUIET_RETRIES} times; default: off)")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="passed to `local serve`, e.g. --serve-arg=--max-queue=4 (repeatable)")
    parser.add_argument("--short", action="store_true",
                        help="the CI mode: 1 round, 3 s phases at 2 and 8 connections, a queue of 2 (overrides "
                             "--rounds, --seconds, --connections)")
    parser.add_argument("--out", type=Path, default=loadtest.OUT, help="output directory (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the Markdown")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from local.measure import loadtest

    models = args.model or [m for m in loadtest.DEFAULT_MODELS if m.is_file()]
    missing = [m for m in models if not m.is_file()]
    if missing or not models:
        print(f"error: no model at {', '.join(map(str, missing)) or ', '.join(map(str, loadtest.DEFAULT_MODELS))} "
              "(python -m export [--int8] writes them)", file=sys.stderr)
        return 1
    try:
        batches = tuple(int(size) for size in args.batches.split(",") if size.strip())
    except ValueError:
        print(f"error: --batches takes batch sizes like 1,2,4,8, not {args.batches!r}", file=sys.stderr)
        return 1
    options = {"rounds": args.rounds, "seconds": args.seconds, "connections": args.connections, "serve_args": ()}
    if args.short:
        options.update(loadtest.SHORT)
    options["serve_args"] = (*options["serve_args"], *args.serve_arg)
    progress = (lambda message: print(message, file=sys.stderr, flush=True)) if args.json else \
        (lambda message: print(message, flush=True))
    try:
        report = loadtest.run_loadtest(models, overload=args.overload, peers=args.peers, generator=args.load,
                                       batches=batches, quiet=args.quiet, on_progress=progress, **options)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from local.report.loadtest import markdown, write_outputs

    paths = write_outputs(report, args.out)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print()
        print(markdown(report))
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
