"""``python -m local bench``: PyTorch, ONNX Runtime and OpenVINO side by side; Markdown, JSON and PNG out."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from local.commands.options import count


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="latency, throughput, threads, cold start, memory, preprocessing, compute floor and payload in one run",
        description="Without --model it uses models/resnet50.onnx, or exports a random-weight ResNet-50 into "
                    "OUT/cache (speed does not depend on the weights; nothing is written to models/). Agreement is "
                    "measured on the real-weights EfficientNet-Lite0 (models/efficientnet_lite0.onnx, else exported "
                    "into OUT/cache). INT8 models are the .int8.onnx next to each, else quantised into OUT/cache.")
    parser.add_argument("--model", type=Path, help="fp32 model whose speed is measured (default: see above)")
    parser.add_argument("--int8", type=Path, metavar="MODEL", help="its INT8 model (default: <model>.int8.onnx, else quantised)")
    parser.add_argument("--accuracy-model", type=Path, metavar="MODEL",
                        help="real-weights fp32 model for top-1 agreement (default: efficientnet_lite0, see above)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"), help="output directory (default: %(default)s)")
    parser.add_argument("--repeats", type=count, default=30, help="batch-1 samples per runtime × precision (default: %(default)s)")
    parser.add_argument("--batch-repeats", type=count, default=5, help="batch-8 samples per runtime × precision (default: %(default)s)")
    parser.add_argument("--rounds", type=count, default=3,
                        help="interleaved rounds the samples are split into, so a passing disturbance hits every "
                             "runtime alike (default: %(default)s)")
    parser.add_argument("--cold-runs", type=count, default=3, help="fresh processes per handler (default: %(default)s)")
    parser.add_argument("--threads", type=count, help="inference threads (default: resources.default_threads())")
    parser.add_argument("--quick", action="store_true", help="a few samples of everything (for tests and smoke runs)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from local.measure.bench import BenchConfig, run_bench
    from local.report.bench import ratios_text, write_outputs

    config = BenchConfig(model=args.model, int8=args.int8, accuracy_model=args.accuracy_model, out=args.out,
                         repeats=args.repeats, batch_repeats=args.batch_repeats, cold_runs=args.cold_runs, rounds=args.rounds,
                         threads=args.threads, quick=args.quick)
    started = time.perf_counter()
    steps = 0

    def step(message: str) -> None:
        nonlocal steps
        steps += 1
        print(f"[{steps:>2}] {time.perf_counter() - started:6.1f} s  {message}", flush=True)

    try:
        report = run_bench(config, on_step=step)
        paths = write_outputs(report, args.out)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(ratios_text(report)))
    print(f"wrote {paths['markdown']}, {paths['json']} and {paths['png']} in {time.perf_counter() - started:.0f} s")
    return 0
