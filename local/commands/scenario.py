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
from pathlib import Path

from local.commands.options import Progress, add_traffic_args, count, traffic_from_args
from local.defaults import DEFAULT_MODEL


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from local.defaults import DEFAULT_MEMORY_MB
    from local.lambda_env.elastic import DEFAULT_IDLE_TIMEOUT_S
    from local.measure import cost
    from local.measure.scenario.breakeven import DEFAULT_RATES
    from local.measure.scenario.calibrate import DEFAULT_BENCH_JSON, DEFAULT_CACHE, DEFAULT_TUNE_JSON, MEASURE_CHOICES
    from local.measure.scenario.params import (
        DEFAULT_BOOT_S,
        DEFAULT_QUEUE_TIMEOUT_S,
        DEFAULT_REQUEST_BYTES,
        DEFAULT_SMT_GAIN,
        PLATFORMS,
    )
    from local.measure.scenario.run import DEFAULT_REPRESENTATIVE_DAYS
    from local.report.scenario import DEFAULT_OUT

    defaults = cost.CostInputs()
    parser = subparsers.add_parser(
        "scenario", help="simulate traffic through Lambda and a server fleet, calibrated on this machine: which wins?",
        description="Simulates a traffic shape or your own arrivals (SimPy) through Lambda (cold starts, idle timeout, "
                    "concurrency limit, scaling rate, API Gateway's 30 s) and through a server fleet (K instances of an "
                    "EC2 type or Fargate tasks, each running local serve's lanes, behind an Application Load Balancer; "
                    "bounded queues, fixed or autoscaled), with latencies measured on this machine, and prints latency "
                    "percentiles, cold starts, refusals, peaks, cost for the period and per month, and what to deploy "
                    "(with the ECS stack's parameters and a Kubernetes overlay).")
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
    fleet.add_argument("--instance-type", choices=tuple(cost.INSTANCE_TYPES), default=cost.DEFAULT_INSTANCE_TYPE,
                       help="the EC2 instance type (or the Fargate task of its vCPUs and memory): its vCPUs set the lanes, "
                            "its CPU layout the service time (c7i: 2 hyperthreads per core; c7a: a core per vCPU) "
                            "(default: %(default)s)")
    fleet.add_argument("--workers", type=count, default=None,
                       help="requests an instance serves at once (default: the lanes local serve runs on its vCPUs)")
    fleet.add_argument("--smt-gain", type=float, default=DEFAULT_SMT_GAIN,
                       help="a core's throughput with two hyperthreads busy over one's, to carry this machine's service "
                            "time to another CPU layout (default: %(default)g, Intel's figure for AI inference)")
    fleet.add_argument("--platform", choices=("auto", *PLATFORMS), default="auto",
                       help="price the fleet on EC2 instances or Fargate tasks; auto: the cheaper (default: %(default)s)")
    fleet.add_argument("--no-load-balancer", action="store_true",
                       help="leave out the Application Load Balancer's hours and LCUs")
    fleet.add_argument("--request-bytes", type=count, default=DEFAULT_REQUEST_BYTES,
                       help="bytes a request carries through the load balancer (its LCUs) (default: %(default)s, the "
                            "1 MP JPEG every measurement here sends)")
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
    fleet.add_argument("--server-hourly-usd", type=float, default=None,
                       help="price of one instance-hour (default: the instance type's on-demand price in us-east-1)")
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
    breakeven = parser.add_argument_group("break-even: which option at which rate")
    breakeven.add_argument("--breakeven", action="store_true",
                           help="every Lambda option (x86 and arm64 image, SnapStart, provisioned) and the fleet (EC2, "
                                "Fargate) simulated at rates from --rates, steady and with --burstiness: monthly cost and "
                                "p99 against the rate, the crossovers in words (PNG, Markdown, JSON)")
    breakeven.add_argument("--rates", default=DEFAULT_RATES, metavar="LOW:HIGH:N",
                           help="mean rates in requests/s, N of them evenly spaced on a log scale; fractions allowed "
                                "(default: %(default)s, one an hour to 500 a second)")
    breakeven.add_argument("--burstiness", type=float, default=None, metavar="B",
                           help="also with bursts: the spikes shape (--spike-every, --spike-length) scaled so its busiest "
                                "rate is B x the mean (default: steady only)")
    parser.add_argument("--benchmark", action="store_true",
                        help="time a million simulated requests and check the models against queueing theory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON, Markdown and PNGs go (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print everything as JSON on stdout (progress goes to stderr)")
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace, traffic):
    """The scenario the options describe (ValueError with a reason otherwise)."""
    from dataclasses import replace

    from local.measure import cost
    from local.measure.scenario.run import ScenarioConfig
    from local.measure.scenario.traffic import Shape, parse_duration

    option = (cost.lambda_option(args.lambda_option, architecture=args.architecture, provisioned=args.provisioned)
              if args.lambda_option else None)
    prices = replace(cost.CostInputs(), architecture=option.architecture if option else args.architecture,
                     memory_mb=args.memory, api_gateway=not args.no_api_gateway)
    duration = parse_duration(args.duration) if args.duration else (86_400.0 if isinstance(traffic, Shape) else None)
    return ScenarioConfig(traffic=traffic, duration_s=duration, seed=args.seed, idle_timeout_s=args.idle_timeout,
                          reserved_concurrency=args.reserved_concurrency,
                          provisioned=option.provisioned if option else args.provisioned, lambda_option=option,
                          api_gateway=not args.no_api_gateway, instances=args.instances, workers=args.workers,
                          queue=args.queue, queue_timeout_s=args.queue_timeout, autoscale=args.autoscale,
                          target_utilisation=args.target_utilisation, boot_s=args.boot, max_instances=args.max_instances,
                          prices=prices, representative_days=args.representative_days, instance_type=args.instance_type,
                          server_hourly_usd=args.server_hourly_usd, smt_gain=args.smt_gain, platform=args.platform,
                          load_balancer=not args.no_load_balancer, request_bytes=args.request_bytes)


def run(args: argparse.Namespace) -> int:
    from local.measure.scenario.calibrate import CalibrationError
    from local.measure.scenario.run import compare_shapes, run_scenario
    from local.measure.scenario.traffic import ArrivalsFormatError
    from local.report import scenario as report

    stream = sys.stderr if args.json else sys.stdout
    say = Progress(stream)
    if args.benchmark:
        return _benchmark(args, say)
    if args.breakeven:
        return _breakeven(args, say)
    if not args.compare and not args.shape and not args.arrivals:
        print("error: give a traffic shape (steady, diurnal, spikes, sparse), --arrivals FILE, --compare, --breakeven or "
              "--benchmark", file=sys.stderr)
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
    model = _model(args)
    if model is None:
        return 1
    if config is not None:
        say(f"traffic: {config.describe()}")
    try:
        calibration = _calibration(args, model, say)
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


def _model(args: argparse.Namespace) -> Path | None:
    """The model the function runs (its INT8 sibling with --precision int8), or None after saying it is missing."""
    from lambda_onnx.sidecar import int8_path

    model = int8_path(args.model) if args.precision == "int8" else args.model
    if not Path(model).is_file():
        print(f"error: no model at {model}: export it first (python -m export{' --int8' if args.precision == 'int8' else ''})",
              file=sys.stderr)
        return None
    return Path(model)


def _calibration(args: argparse.Namespace, model: Path, say):
    from local.measure.scenario.calibrate import calibrate

    calibration = calibrate(model, args.memory, args.precision, report_log=args.report_log, tune_json=args.tune_json,
                            bench_json=args.bench_json, cache=args.calibration, measure=args.calibrate, on_progress=say)
    for key, text in calibration.sources.items():
        say(f"{key}: {text}")
    return calibration


def _breakeven(args: argparse.Namespace, say) -> int:
    from local.measure.scenario.breakeven import breakeven, bursty_shape, parse_rates
    from local.measure.scenario.calibrate import CalibrationError
    from local.measure.scenario.traffic import Shape, parse_duration
    from local.report import breakeven as report

    try:
        rates = parse_rates(args.rates)
        bursts = Shape("spikes", spike_every_s=parse_duration(args.spike_every),
                       spike_length_s=parse_duration(args.spike_length))
        if args.burstiness is not None:
            bursty_shape(1.0, args.burstiness, bursts.spike_every_s, bursts.spike_length_s)  # refused now, not after
        if args.rate is not None and not args.rate > 0:
            raise ValueError(f"--rate must be a positive number of requests per second, got {args.rate}")
        config = config_from_args(args, bursts)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = _model(args)
    if model is None:
        return 1
    try:
        calibration = _calibration(args, model, say)
        result = breakeven(calibration, config, rates, burstiness=args.burstiness, rate=args.rate, on_progress=say)
        paths = report.write_outputs(result, args.out)
    except KeyboardInterrupt:
        print("interrupted: every emulator and server started was stopped", file=sys.stderr)
        return 130
    except (CalibrationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    outputs = {k: str(v) for k, v in paths.items()}
    if args.json:
        print(json.dumps({**result.to_dict(), "outputs": outputs}, indent=2, ensure_ascii=False))
        return 0
    print()
    for sweep in result.sweeps:
        print(f"{sweep.traffic}: {sweep.words}.")
    if args.rate is not None:
        print()
        for line in result.lines_at(args.rate):
            print(line)
    print("\nwrote " + ", ".join(outputs.values()))
    return 0
