"""``python -m local arm64check``: the models' parity and INT8 canary on ONNX Runtime's aarch64 kernels, under qemu."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lambda_onnx.errors import ClassifierError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from local.measure.arm64.check import ARM64_OUT
    from local.measure.arm64.qemu import CPUS

    parser = subparsers.add_parser(
        "arm64check", help="prove the models right on arm64 (ONNX Runtime's aarch64 kernels under qemu): correctness, not a timing",
        description="Runs the Lambda image's torch-free core with the lock's aarch64 wheels under qemu user-mode "
                    "emulation (a Debian arm64 root file system, built once and cached) and checks each model's "
                    "canary at load and its logits against this x86 machine. A correctness check, not a timing.")
    parser.add_argument("--model", type=Path, action="append", dest="models", metavar="MODEL",
                        help="a model to check (repeatable; fp32 or INT8, each with its sidecar and canary). Default: "
                             "EfficientNet-Lite0 fp32 + INT8 and (without --short) ResNet-50 fp32 + INT8, from models/ "
                             "or exported into the output's cache")
    parser.add_argument("--short", action="store_true",
                        help="the CI mode: EfficientNet-Lite0 fp32 + INT8 on Graviton2 (neoverse-n1) only")
    parser.add_argument("--cpu", action="append", dest="cpus", choices=sorted(CPUS), metavar="CPU",
                        help=f"an arm64 CPU for qemu to play (repeatable; {', '.join(sorted(CPUS))}; "
                             "default: neoverse-n1, and neoverse-v1 without --short)")
    parser.add_argument("--cache", type=Path, help="the root file system's and wheels' cache "
                                                   "(default: ~/.cache/resnet-serverless/arm64)")
    parser.add_argument("--qemu", help="the emulator (default: qemu-aarch64, else qemu-aarch64-static, on PATH)")
    parser.add_argument("--out", type=Path, default=ARM64_OUT, help="where arm64.md and arm64.json go (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from local.measure.arm64 import Arm64Config, run_check
    from local.report.arm64 import NOT_A_TIMING, check_lines, facts_lines, write_outputs

    print(f"arm64check: {NOT_A_TIMING}", file=sys.stderr)
    started = time.perf_counter()

    def step(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    config = Arm64Config(models=tuple(args.models or ()), short=args.short, cpus=tuple(args.cpus or ()), cache=args.cache,
                         out=args.out, qemu=args.qemu)
    try:
        result = run_check(config, on_step=step)
    except (ClassifierError, FileNotFoundError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    for line in facts_lines(result) + check_lines(result):
        print(line)
    paths = write_outputs(result, args.out)
    print(f"{'passed' if result.passed else 'FAILED'} ({NOT_A_TIMING.split(':')[0]}): wrote {paths['markdown']} and {paths['json']}")
    return 0 if result.passed else 1
