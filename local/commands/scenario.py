"""``python -m local scenario``: which wins for my traffic? Lambda and a server fleet, simulated.

A built-in shape (``steady``, ``diurnal``, ``spikes``, ``sparse``) or ``--arrivals FILE`` (CSV of
seconds, an API Gateway or ALB access log) through both sides, with figures measured on this
machine; ``--compare`` runs a month of every built-in shape and writes the "Serverless vs Server"
table; ``--benchmark`` times a million requests and checks the models against queueing theory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lambda_onnx.errors import ClassifierError
from local.commands.options import count
from local.defaults import DEFAULT_MODEL


def add_traffic_args(parser: argparse.ArgumentParser, default_duration: str = "1d") -> None:
    """A built-in shape and its parameters, or ``--arrivals FILE`` (shared with ``replay``)."""
    from local.measure.scenario.traffic import SHAPES

    parser.add_argument("shape", nargs="?", choices=SHAPES, help="a built-in traffic shape")
    traffic = parser.add_argument_group("traffic")
    traffic.add_argument("--arrivals", type=Path, metavar="FILE",
                         help="your own arrivals: a CSV of arrival times in seconds (header optional), or an API Gateway "
                              "(JSON/CLF/CSV/XML) or ALB access log (.gz too)")
    traffic.add_argument("--duration", default=None,
                         help=f"period: 90s, 15m, 2h, 30d (default: {default_duration} for a shape; a file's whole span)")
    traffic.add_argument("--rate", type=float, default=1.0,
                         help="requests/s: steady's rate, diurnal's mean, spikes' baseline (default: %(default)s)")
    traffic.add_argument("--peak-to-trough", type=float, default=4.0, help="diurnal: peak / trough (default: %(default)s)")
    traffic.add_argument("--period", default="1d", help="diurnal: the length of its cycle (default: %(default)s)")
    traffic.add_argument("--spike-every", default="1h", help="spikes: time between bursts (default: %(default)s)")
    traffic.add_argument("--spike-length", default="1m", help="spikes: how long a burst lasts (default: %(default)s)")
    traffic.add_argument("--spike-multiplier", type=float, default=20.0,
                         help="spikes: the burst's rate over the baseline (default: %(default)s)")
    traffic.add_argument("--every", default="30s", help="sparse: one request every ... (default: %(default)s)")
    traffic.add_argument("--jitter", type=float, default=0.0, help="sparse: +/- this share of the interval (default: 0)")
    traffic.add_argument("--seed", type=int, default=0, help="random seed of the traffic and the service times")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from local.defaults import DEFAULT_MEMORY_MB
    from local.lambda_env.elastic import DEFAULT_IDLE_TIMEOUT_S
    from local.measure import cost
    from local.measure.scenario.calibrate import DEFAULT_BENCH_JSON, DEFAULT_CACHE, DEFAULT_TUNE_JSON, MEASURE_CHOICES
    from local.measure.scenario.params import DEFAULT_BOOT_S, DEFAULT_QUEUE_TIMEOUT_S
    from local.measure.scenario.run import DEFAULT_REPRESENTATIVE_DAYS
    from local.report.scenario import DEFAULT_OUT

    defaults = cost.CostInputs()
    parser = subparsers.add_parser(
        "scenario", help="simulate traffic through Lambda and a server fleet, calibrated on this machine: which wins?",
        description="Simulates a traffic shape or your own arrivals (SimPy) through Lambda (cold starts, idle timeout, "
                    "concurrency limit, scaling rate, API Gateway's 30 s) and through a server fleet (K instances x W "
                    "workers, bounded queues, fixed or autoscaled), with latencies measured on this machine, and prints "
                    "latency percentiles, cold starts, refusals, peaks and cost for the period and per month.")
    add_traffic_args(parser)
    lam = parser.add_argument_group("Lambda")
    lam.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported fp32 model (default: %(default)s)")
    lam.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                     help="which of its models the function runs (int8: <stem>.int8.onnx) (default: %(default)s)")
    lam.add_argument("--memory", type=count, default=DEFAULT_MEMORY_MB, help="memory size in MB (default: %(default)s)")
    lam.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S, metavar="S",
                     help="seconds Lambda keeps an idle environment; AWS does not document it (default: %(default)g, "
                          "measured by Shilkov in 2019)")
    lam.add_argument("--reserved-concurrency", type=count, help="the function's reserved concurrency (default: the "
                                                                "account's 1,000)")
    lam.add_argument("--provisioned", type=int, default=0, help="provisioned concurrency (priced per hour) (default: 0)")
    lam.add_argument("--no-api-gateway", action="store_true", help="invoked directly: no 30 s limit, no API price")
    lam.add_argument("--architecture", choices=tuple(cost.LAMBDA_GB_SECOND_USD), default=defaults.architecture)
    lam.add_argument("--lambda-option", choices=cost.LAMBDA_OPTIONS,
                     help="how the function is deployed and priced: x86-image, arm64-image (container images), "
                          "zip-snapstart (the zip package with SnapStart: restores instead of cold starts, its cache "
                          "and restore charges; --architecture applies), provisioned (--provisioned N, default 1). "
                          "Default: the image with --architecture and --provisioned")
    lam.add_argument("--report-log", type=Path, metavar="FILE",
                     help="take Lambda's latencies from a real function's REPORT lines (a CloudWatch log export)")
    fleet = parser.add_argument_group("server fleet")
    fleet.add_argument("--instances", type=count, help="a fixed number of instances (default: sized for the peak minute)")
    fleet.add_argument("--workers", type=count, default=1, help="requests an instance serves at once (default: %(default)s)")
    fleet.add_argument("--queue", type=int, default=16, help="requests that may wait per instance before 503 "
                                                             "(default: %(default)s)")
    fleet.add_argument("--queue-timeout", type=float, default=DEFAULT_QUEUE_TIMEOUT_S,
                       help="seconds a request waits before 503 (default: %(default)g)")
    fleet.add_argument("--autoscale", action="store_true", help="target-tracking autoscaling instead of a fixed size")
    fleet.add_argument("--target-utilisation", type=float, default=defaults.server_utilisation,
                       help="planned busy share: the peak sizing's and the autoscaler's target (default: %(default)g)")
    fleet.add_argument("--boot", type=float, default=DEFAULT_BOOT_S, help="seconds before a new instance takes traffic "
                                                                         "(default: %(default)g)")
    fleet.add_argument("--max-instances", type=count, default=100, help="the autoscaler's ceiling (default: %(default)s)")
    fleet.add_argument("--server-hourly-usd", type=float, default=defaults.server_hourly_usd,
                       help="price of one instance-hour (default: %(default)g, c7i.large on-demand)")
    calibration = parser.add_argument_group("calibration: where the latencies come from (each source is reported)")
    calibration.add_argument("--calibrate", choices=MEASURE_CHOICES, default="auto",
                             help="auto: this machine's latest measurements, else measure briefly now; always: measure "
                                  "now; never: fail if none exist (default: %(default)s)")
    calibration.add_argument("--calibration", type=Path, default=DEFAULT_CACHE, metavar="FILE",
                             help="figures this command measured before, reused for the same model, memory and CPU "
                                  "(default: %(default)s)")
    calibration.add_argument("--tune-json", type=Path, default=DEFAULT_TUNE_JSON, help="default: %(default)s")
    calibration.add_argument("--bench-json", type=Path, default=DEFAULT_BENCH_JSON, help="default: %(default)s")
    parser.add_argument("--representative-days", type=count, default=DEFAULT_REPRESENTATIVE_DAYS,
                        help="for arrivals files over 2 days: days simulated to stand for the rest (default: %(default)s)")
    parser.add_argument("--compare", action="store_true",
                        help="a month of every built-in shape: the Serverless vs Server table (Markdown and PNG)")
    parser.add_argument("--benchmark", action="store_true",
                        help="time a million simulated requests and check the models against queueing theory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON, Markdown and PNGs go (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print everything as JSON on stdout (progress goes to stderr)")
    parser.set_defaults(run=run)


class _Progress:
    """Progress lines: every statement, and a simulation's counts at most every 2 s."""

    def __init__(self, stream) -> None:
        self.stream, self.started, self.last = stream, time.perf_counter(), 0.0

    def __call__(self, message: str, fraction: float | None = None) -> None:
        now = time.perf_counter()
        if fraction is not None and now - self.last < 2.0 and fraction < 1.0:
            return
        self.last = now
        share = f"{fraction:4.0%} " if fraction is not None else "     "
        print(f"{now - self.started:7.1f} s {share} {message}", file=self.stream, flush=True)


def traffic_from_args(args: argparse.Namespace):
    """The shape or the file's arrivals the options name (ValueError / ArrivalsFormatError otherwise)."""
    from local.measure.scenario.traffic import Shape, parse_duration, read_arrivals

    if args.arrivals:
        return read_arrivals(args.arrivals)
    return Shape(args.shape, rate=args.rate, peak_to_trough=args.peak_to_trough,
                 period_s=parse_duration(args.period), spike_every_s=parse_duration(args.spike_every),
                 spike_length_s=parse_duration(args.spike_length), spike_multiplier=args.spike_multiplier,
                 every_s=parse_duration(args.every), jitter=args.jitter)


def config_from_args(args: argparse.Namespace, traffic):
    """The scenario the options describe (ValueError with a reason otherwise)."""
    from dataclasses import replace

    from local.measure import cost
    from local.measure.scenario.run import ScenarioConfig
    from local.measure.scenario.traffic import Shape, parse_duration

    option = (cost.lambda_option(args.lambda_option, architecture=args.architecture, provisioned=args.provisioned)
              if args.lambda_option else None)
    prices = replace(cost.CostInputs(), architecture=option.architecture if option else args.architecture,
                     memory_mb=args.memory, server_hourly_usd=args.server_hourly_usd, api_gateway=not args.no_api_gateway)
    duration = parse_duration(args.duration) if args.duration else (86_400.0 if isinstance(traffic, Shape) else None)
    return ScenarioConfig(traffic=traffic, duration_s=duration, seed=args.seed, idle_timeout_s=args.idle_timeout,
                          reserved_concurrency=args.reserved_concurrency,
                          provisioned=option.provisioned if option else args.provisioned, lambda_option=option,
                          api_gateway=not args.no_api_gateway, instances=args.instances, workers=args.workers,
                          queue=args.queue, queue_timeout_s=args.queue_timeout, autoscale=args.autoscale,
                          target_utilisation=args.target_utilisation, boot_s=args.boot, max_instances=args.max_instances,
                          prices=prices, representative_days=args.representative_days)


def run(args: argparse.Namespace) -> int:
    from lambda_onnx.sidecar import int8_path
    from local.measure.scenario.calibrate import CalibrationError, calibrate
    from local.measure.scenario.run import compare_shapes, run_scenario
    from local.measure.scenario.traffic import ArrivalsFormatError
    from local.report import scenario as report

    stream = sys.stderr if args.json else sys.stdout
    say = _Progress(stream)
    if args.benchmark:
        return _benchmark(args, say)
    if not args.compare and not args.shape and not args.arrivals:
        print("error: give a traffic shape (steady, diurnal, spikes, sparse), --arrivals FILE, --compare or --benchmark",
              file=sys.stderr)
        return 2
    if args.shape and args.arrivals:
        print("error: a shape or --arrivals, not both", file=sys.stderr)
        return 2
    try:
        traffic = traffic_from_args(args) if args.shape or args.arrivals else None
        config = config_from_args(args, traffic) if traffic is not None else None
    except (ValueError, ArrivalsFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = int8_path(args.model) if args.precision == "int8" else args.model
    if not Path(model).is_file():
        print(f"error: no model at {model}: export it first (python -m export{' --int8' if args.precision == 'int8' else ''})",
              file=sys.stderr)
        return 1
    if config is not None:
        say(f"traffic: {config.describe()}")
    try:
        calibration = calibrate(model, args.memory, args.precision, report_log=args.report_log, tune_json=args.tune_json,
                                bench_json=args.bench_json, cache=args.calibration, measure=args.calibrate,
                                on_progress=say)
        for key, text in calibration.sources.items():
            say(f"{key}: {text}")
        if args.compare:
            from local.measure.scenario.run import COMPARE, ScenarioConfig

            base = config_from_args(args, COMPARE[0][1]) if not isinstance(config, ScenarioConfig) else config
            results = compare_shapes(calibration, base, on_progress=say)
            paths = report.write_compare(results, args.out)
        else:
            assert config is not None  # a shape or a file was given (checked above)
            results = [run_scenario(config, calibration, on_progress=say)]
            paths = report.write_outputs(results[0], args.out)
    except KeyboardInterrupt:
        print("interrupted: every emulator and server started was stopped", file=sys.stderr)
        return 130
    except (CalibrationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ClassifierError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    outputs = {k: str(v) for k, v in paths.items()}
    if args.json:
        document = ({"results": [r.to_dict() for r in results], "outputs": outputs} if args.compare
                    else {**results[0].to_dict(), "outputs": outputs})
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    if args.compare:
        print("\n" + report.compare_markdown(results))
        for result in results:
            print(f"- {result.name}: {result.verdict}")
    else:
        print("\n" + report.markdown(results[0]))
    print("\nwrote " + ", ".join(outputs.values()))
    return 0


def _benchmark(args: argparse.Namespace, say) -> int:
    from local.measure.scenario.benchmark import benchmark

    result = benchmark(seed=args.seed, on_progress=say)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0 if result.met else 1
    print(f"\n{result.requests:,} simulated requests per side (Poisson, 200 req/s):")
    for side, seconds in result.seconds.items():
        print(f"  {side:<7} {seconds:6.1f} s  ({result.requests / seconds:,.0f} requests per second; goal {result.goal_s:.0f} s: "
              f"{'met' if seconds <= result.goal_s else 'MISSED'})")
    print("\naccuracy against queueing theory (exact answers):")
    for check in result.accuracy:
        print(f"  {check.check}: simulated {check.simulated:.4g}, exact {check.exact:.4g} ({check.error_pct:.2f} % off)")
    if result.validation:
        v = result.validation
        print(f"\nlatest validation against a real run ({v.get('created')}, {v.get('scenario')}): "
              f"{'every goal met' if v.get('ok') else 'NOT every goal met'}")
        for c in v.get("checks", []):
            spread = f" (seeds: {c['simulated_range'][0]:g}-{c['simulated_range'][1]:g})" if c.get("simulated_range") else ""
            met = "met" if c["ok"] else "missed, within the simulated range" if c.get("within_range") else "missed"
            print(f"  {c['side']:<7} {c['metric']:<12} simulated {c['simulated']:g}{spread}, measured {c['measured']:g} "
                  f"({c['goal']}: {met})")
    else:
        print("\nno validation against a real run yet: `python -m local replay` runs one (a few minutes)")
    return 0 if result.met else 1
