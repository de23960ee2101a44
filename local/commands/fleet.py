"""``python -m local fleet``: K ``local serve`` instances behind HAProxy on this machine, fixed or autoscaled."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lambda_onnx.errors import ClassifierError
from local.commands.options import count
from local.defaults import DEFAULT_MODEL


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from local.fleet.autoscale import EVALUATION_S, SCALE_IN_COOLDOWN_S

    parser = subparsers.add_parser(
        "fleet", help="a fleet of `local serve` instances behind HAProxy (leastconn, health checks), optionally autoscaled",
        description="Starts K `python -m local serve` instances, each confined to its share of this machine's CPUs "
                    "(a cgroup CPU quota; CPU affinity where no cgroup can be made), behind HAProxy with balance "
                    "leastconn and health checks on /health, and prints one URL serving POST /classify. An instance "
                    "that dies is taken out and replaced. With --autoscale, instances are added and drained by the "
                    "scenario simulation's target-tracking rule on the instances' CPU utilisation. Ctrl-C stops "
                    "everything it started.")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx (default: %(default)s)")
    parser.add_argument("--instances", type=count, default=2, metavar="K",
                        help="instances to start (with --autoscale: the starting size) (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="HAProxy's port (default: a free one)")
    parser.add_argument("--cpus-per-instance", type=float, default=None,
                        help="each instance's CPU quota (default: this machine's CPUs over K, or over --max with --autoscale)")
    parser.add_argument("--confine", choices=("auto", "cgroup", "affinity", "none"), default="auto",
                        help="how instances are held to their CPUs: auto tries a cgroup, then CPU affinity (default: %(default)s)")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="an argument for every `local serve`, repeatable: --serve-arg=--max-queue --serve-arg=8 "
                             "(default: --runtime onnxruntime)")
    parser.add_argument("--no-replace", dest="replace", action="store_false",
                        help="do not start a replacement for an instance that dies (say so instead)")
    scaling = parser.add_argument_group("autoscaling (target tracking, the simulation's rule)")
    scaling.add_argument("--autoscale", action="store_true", help="add and drain instances by CPU utilisation")
    scaling.add_argument("--min", type=count, default=1, help="fewest instances (default: %(default)s)")
    scaling.add_argument("--max", type=count, default=None, help="most instances (default: this machine's CPUs)")
    scaling.add_argument("--target-cpu", type=float, default=50.0, metavar="PCT",
                         help="target CPU utilisation of the instances' quota, in %% (default: %(default)g)")
    scaling.add_argument("--evaluation", type=float, default=EVALUATION_S, metavar="SECONDS",
                         help="seconds between evaluations (default: %(default)g, as AWS's one-minute metrics)")
    scaling.add_argument("--cooldown", type=float, default=SCALE_IN_COOLDOWN_S, metavar="SECONDS",
                         help="seconds between scale-ins (default: %(default)g, AWS's default)")
    scaling.add_argument("--boot-delay", default="auto", metavar="auto|SECONDS",
                         help="auto: a new instance takes traffic once healthy (its boot is measured and reported); "
                              "SECONDS: not before that long after its launch, to play a cloud instance's boot "
                              "(default: %(default)s)")
    parser.add_argument("--status-every", type=float, default=None, metavar="SECONDS",
                        help="seconds between status lines (default: 1 on a terminal, rewritten in place; 10 otherwise)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop after this long (default: run until Ctrl-C)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os

    from local.fleet import AutoscalePolicy, Fleet

    tty = sys.stdout.isatty()
    every = args.status_every or (1.0 if tty else 10.0)
    policy = None
    if args.autoscale:
        try:
            boot_delay = None if args.boot_delay == "auto" else float(args.boot_delay)
        except ValueError:
            print(f"error: --boot-delay takes auto or a number of seconds, not {args.boot_delay!r}", file=sys.stderr)
            return 2
        maximum = args.max or max(args.instances, len(os.sched_getaffinity(0)))
        try:
            policy = AutoscalePolicy(target=args.target_cpu / 100.0, minimum=args.min, maximum=maximum,
                                     evaluation_s=args.evaluation, cooldown_s=args.cooldown, boot_delay_s=boot_delay)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    pending = [False]  # a status line is on screen, rewritten in place

    def say(line: str) -> None:
        if pending[0]:
            print(file=sys.stdout)
            pending[0] = False
        print(line, flush=True)

    try:
        fleet = Fleet(args.model, args.instances, serve_args=args.serve_arg or ["--runtime", "onnxruntime"],
                      port=args.port, cpus_per_instance=args.cpus_per_instance, confine=args.confine,
                      replace=args.replace, autoscale=policy, on_event=say)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say(f"starting {args.instances} x `local serve` ({args.model}) behind HAProxy, {fleet.cpus_per_instance:g} CPU(s) each"
        + (f"; autoscaling {policy.minimum}..{policy.maximum} at {policy.target:.0%} CPU, every {policy.evaluation_s:g} s, "
           f"scale-in cooldown {policy.cooldown_s:g} s" if policy else ""))
    try:
        with fleet:
            say(f"fleet ready: POST {fleet.url}/classify (HAProxy stats socket: {fleet.haproxy.socket_path})")
            boots = fleet.boot_times()
            say(f"boot (spawn to first healthy answer): {', '.join(f'{b:.1f} s' for b in boots)}")
            end = time.monotonic() + args.duration if args.duration else None
            try:
                while end is None or time.monotonic() < end:
                    time.sleep(every if end is None else max(0.0, min(every, end - time.monotonic())))
                    line = fleet.status().line()
                    if tty:
                        print("\r" + line + "\033[K", end="", flush=True)
                        pending[0] = True
                    else:
                        print(line, flush=True)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop what was started, then say what happened
                say("interrupted: stopping the instances and HAProxy")
            status = fleet.status()
    except ClassifierError as exc:
        say(f"error: {exc.message}")
        return 1
    say(f"stopped: {status.requests} requests, {status.errors_5xx} answered 5xx, {status.deaths} instance(s) died "
        f"(at most {status.unanswered} request(s) in progress on them lost), "
        f"{status.replacements} replaced; boots measured: {', '.join(f'{b:.1f} s' for b in fleet.boot_times())}")
    return 0
