"""``python -m local tune``: emulated Lambda power tuning (memory sizes × fp32/INT8, cold and warm) and a recommendation."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from local.defaults import DEFAULT_MODEL


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected memory sizes in MB separated by commas, e.g. 512,1024,1769; got {text!r}") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from local.measure import cost
    from local.measure.tune import DEFAULT_OUT, DEFAULT_REQUESTS, DEFAULT_SIZES, METRICS, PERCENTILES, PRECISIONS

    defaults = cost.CostInputs()
    parser = subparsers.add_parser(
        "tune", help="emulate Lambda memory sizes (CPU share, memory cap) with cgroups and recommend the cheapest fast one",
        description="Runs the real handler on the Lambda emulator inside a cgroup per memory size (CPU quota memory/1769 "
                    "vCPU, memory limit without swap; needs root or a delegated cgroup), one cold and N warm invokes "
                    "each, fp32 and INT8. Every figure is EMULATED; with --function the same sweep also runs on AWS.")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="fp32 model (default: %(default)s)")
    parser.add_argument("--int8-model", type=Path, metavar="MODEL",
                        help="its INT8 model (default: <stem>.int8.onnx next to --model; skipped if absent)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="which to sweep (default: %(default)s)")
    parser.add_argument("--sizes", type=_sizes, default=DEFAULT_SIZES, metavar="MB,MB,…",
                        help=f"memory sizes (default: {','.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS,
                        help="warm invokes per configuration, after the cold one (default: %(default)s)")
    parser.add_argument("--budget-ms", type=float, help="latency budget: recommend the cheapest configuration within it")
    parser.add_argument("--percentile", choices=tuple(PERCENTILES), default="p90",
                        help="which percentile must be within the budget (default: %(default)s)")
    parser.add_argument("--metric", choices=tuple(METRICS), default="duration",
                        help="latency measured as: " + "; ".join(f"{k}: {v}" for k, v in METRICS.items()) + " (default: %(default)s)")
    parser.add_argument("--image", type=Path, help="image to classify (default: the sample photo chelsea)")
    parser.add_argument("--timeout", type=int, default=30, help="the function's timeout in s; bounds every invoke (default: %(default)s)")
    prices = parser.add_argument_group("prices (the GUI cost view's inputs; defaults: " + cost.PRICES_DATE + ")")
    prices.add_argument("--architecture", choices=tuple(cost.LAMBDA_GB_SECOND_USD), default=defaults.architecture,
                        help="price per GB-second of this architecture (the emulation runs on this machine's CPU) (default: %(default)s)")
    prices.add_argument("--gb-second-usd", type=float, help="override the price per GB-second")
    prices.add_argument("--request-usd-per-million", type=float, default=defaults.request_usd * 1e6,
                        help="Lambda price per million requests (default: %(default)s)")
    prices.add_argument("--api-usd-per-million", type=float, default=defaults.api_request_usd * 1e6,
                        help="API Gateway price per million requests (default: %(default)s)")
    prices.add_argument("--no-api-gateway", action="store_true", help="invoked directly, not behind API Gateway")
    prices.add_argument("--cold-fraction", type=float, default=defaults.cold_start_fraction,
                        help="share of requests that are cold starts, each billed its init phase (default: %(default)s)")
    aws = parser.add_argument_group("a real function, swept too (its memory is changed during the sweep and restored "
                                    "afterwards: never point this at production)")
    aws.add_argument("--function", help="Lambda function name or ARN")
    aws.add_argument("--region", help="its AWS region")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where tune.json, tune.md and tune.png go (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the JSON report on stdout (progress goes to stderr)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from local.measure import cost
    from local.measure.tune import TuneConfig, run_tune
    from local.report.tune import summary_lines, write_outputs

    try:
        prices = cost.CostInputs(architecture=args.architecture, gb_second_usd=args.gb_second_usd,
                                 request_usd=args.request_usd_per_million / 1e6, api_request_usd=args.api_usd_per_million / 1e6,
                                 api_gateway=not args.no_api_gateway, cold_start_fraction=args.cold_fraction)
        config = TuneConfig(model=args.model, int8_model=args.int8_model,
                            precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()), sizes=args.sizes,
                            requests=args.requests, budget_ms=args.budget_ms, percentile=args.percentile, metric=args.metric,
                            image=args.image, prices=prices, timeout_s=args.timeout, function=args.function, region=args.region)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress_stream = sys.stderr if args.json else sys.stdout
    started = time.perf_counter()

    def show(step) -> None:
        if step.message:
            print(f"[{step.done:>4}/{step.total}] {time.perf_counter() - started:6.1f} s  {step.message}", file=progress_stream,
                  flush=True)

    # SIGTERM ends the sweep like Ctrl-C (local.__main__): through the cleanup that stops emulators and removes cgroups.
    try:
        report = run_tune(config, on_progress=show)
        paths = write_outputs(report, args.out)
    except KeyboardInterrupt:
        print("interrupted: emulators stopped and cgroups removed", file=sys.stderr)
        return 130
    except (OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**report.to_dict(), "outputs": {k: str(v) for k, v in paths.items()}}, indent=2, ensure_ascii=False))
    else:
        print("\n".join(summary_lines(report)))
        print(f"\nwrote {paths['markdown']}, {paths['json']} and {paths['png']} in {time.perf_counter() - started:.0f} s")
    return 0

