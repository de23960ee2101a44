"""``python -m local replay``: send a scenario's arrivals for real and check the simulation against it.

The arrivals (a built-in shape over a few minutes, or ``--arrivals FILE``, sped up with
``--speedup``) go open loop to the elastic emulated Lambda and then to ``local serve`` (or, with
``--server fleet``, to ``local fleet``: ``--instances`` K behind HAProxy, ``--autoscale`` from one
up to K with the evaluation period and cooldown scaled down); the same arrivals are simulated with
figures measured just before; cold starts, throttles, 503s, p50 and p99 are compared with the goals
(same counts, p50 within 15 %, p99 within 30 %), and an autoscaled fleet's instances over time are
charted, simulated against measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from local.commands.options import Progress, add_traffic_args, count, traffic_from_args
from local.defaults import DEFAULT_MODEL


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from local.measure.replay import (
        DEFAULT_COOLDOWN_S,
        DEFAULT_EVALUATION_S,
        DEFAULT_FLEET_INSTANCES,
        DEFAULT_IDLE_TIMEOUT_S,
        DEFAULT_MAX_CONCURRENCY,
        DEFAULT_MEMORY_MB,
        DEFAULT_SEEDS,
        DEFAULT_SHAPE,
        DEFAULT_TARGET,
    )
    from local.report.scenario import DEFAULT_OUT

    parser = subparsers.add_parser(
        "replay", help="replay a scenario's arrivals for real (elastic emulator, local serve) and check the simulation",
        description="Sends the arrivals open loop (at their scheduled times, never waiting for answers) to the elastic "
                    "emulated Lambda and to local serve on this machine, simulates the same arrivals with figures "
                    "measured just before, and compares cold starts, throttles, 503s, p50 and p99.")
    add_traffic_args(parser, default_duration="3m")
    parser.set_defaults(**DEFAULT_SHAPE)
    parser.add_argument("--speedup", type=float, default=1.0,
                        help="replay a file's arrivals this many times faster (a day of log in minutes) (default: 1)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported model (default: %(default)s)")
    parser.add_argument("--memory", type=count, default=DEFAULT_MEMORY_MB,
                        help="the emulated function's memory size in MB (default: %(default)s: one thread per environment)")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S,
                        help="seconds an idle environment is kept: Lambda's, scaled down (default: %(default)g)")
    parser.add_argument("--max-concurrency", type=count, default=DEFAULT_MAX_CONCURRENCY,
                        help="environments at once, then 429 (default: %(default)s: what 2 CPUs bear)")
    parser.add_argument("--no-lambda", dest="lambda_side", action="store_false",
                        help="replay the server side only (no emulator, no Lambda figures)")
    parser.add_argument("--server", choices=("serve", "fleet"), default="serve",
                        help="the server side: one `local serve`, or `local fleet` (instances of one CPU each behind "
                             "HAProxy) (default: %(default)s)")
    parser.add_argument("--workers", type=count, default=1, help="local serve's worker processes (default: %(default)s)")
    parser.add_argument("--queue", type=int, default=16,
                        help="local serve's --max-queue per worker, or per fleet instance (default: %(default)s)")
    fleet = parser.add_argument_group("the fleet (--server fleet)")
    fleet.add_argument("--instances", type=count, default=DEFAULT_FLEET_INSTANCES, metavar="K",
                       help="instances (with --autoscale: the most) (default: %(default)s: one CPU each here)")
    fleet.add_argument("--autoscale", action="store_true",
                       help="start with one instance and autoscale up to K by target tracking (the simulation's rule; "
                            "the boot delay the fleet measures)")
    fleet.add_argument("--target-cpu", type=float, default=100 * DEFAULT_TARGET, metavar="PCT",
                       help="target CPU utilisation, in %% (default: %(default)g)")
    fleet.add_argument("--evaluation", type=float, default=DEFAULT_EVALUATION_S, metavar="SECONDS",
                       help="seconds between evaluations: AWS's 60, scaled down (default: %(default)g)")
    fleet.add_argument("--cooldown", type=float, default=DEFAULT_COOLDOWN_S, metavar="SECONDS",
                       help="seconds between scale-ins: AWS's 300, scaled down (default: %(default)g)")
    parser.add_argument("--seeds", type=count, default=DEFAULT_SEEDS,
                        help="simulations of the same arrivals to compare with (default: %(default)s)")
    parser.add_argument("--image", type=Path, help="image every request sends (default: the sample photo chelsea)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where replay[-fleet[-autoscaled]].json/.md/.png go (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the validation as JSON on stdout (progress to stderr)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from local.measure.replay import FleetTarget, arrivals_for, validate
    from local.measure.scenario.traffic import ArrivalsFormatError, parse_duration
    from local.report.replay import write_validation

    say = Progress(sys.stderr if args.json else sys.stdout)
    if not args.shape and not args.arrivals:
        args.shape = "spikes"  # the default scenario: idle expiries and bursts, a few minutes
    try:
        traffic = traffic_from_args(args)
        arrivals, description = arrivals_for(traffic, parse_duration(args.duration or "3m"), args.speedup, args.seed)
        image = args.image.read_bytes() if args.image else None
        fleet = FleetTarget(args.instances, args.autoscale, args.target_cpu / 100.0, args.evaluation,
                            args.cooldown) if args.server == "fleet" else None
        if args.autoscale and fleet is None:
            raise ValueError("--autoscale needs --server fleet")
    except (ValueError, ArrivalsFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {args.image}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if not args.model.is_file():
        print(f"error: no model at {args.model}: export it first (python -m export)", file=sys.stderr)
        return 1
    say(f"replay of {description}: {arrivals.size} requests")
    try:  # Ctrl-C and SIGTERM (local.__main__) go through the cleanup that stops the emulators and the server
        validation = validate(arrivals, model=args.model, scenario=description, memory_mb=args.memory,
                              idle_timeout_s=args.idle_timeout, max_concurrency=args.max_concurrency,
                              server_workers=args.workers, server_queue=args.queue, fleet=fleet,
                              lambda_side=args.lambda_side, seeds=args.seeds, image=image, on_progress=say)
        paths = write_validation(validation, args.out)
    except KeyboardInterrupt:
        print("interrupted: every emulator, server and fleet started was stopped", file=sys.stderr)
        return 130
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**validation.to_dict(), "outputs": {k: str(v) for k, v in paths.items()}}, indent=2))
    else:
        from local.report.replay import validation_markdown

        print("\n" + validation_markdown(validation))
        print(f"\n{'every goal met' if validation.ok else 'NOT every goal met'}; wrote " + ", ".join(map(str, paths.values())))
    return 0 if validation.ok else 1

