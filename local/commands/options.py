"""The options every command line shares (``python -m local ...`` and ``python -m gui``), and the
small things each shell does the same way: parse, build what the options describe, print.
Libraries never see ``argparse``: they take the typed values these produce."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lambda_onnx.canary import ALLOW_CANARY_FAILURE_ENV, CanaryResult
from lambda_onnx.cpu import INT8_KERNEL_CHOICES, INT8_KERNEL_ENV
from lambda_onnx.engines import RUNTIMES
from lambda_onnx.sidecar import RANDOM_WEIGHTS_WARNING
from local.defaults import DEFAULT_MEMORY_MB, DEFAULT_MODEL

if TYPE_CHECKING:  # imported where it is used: `local serve` alone (the server image) has no clients
    from local.clients.targets import Targets


def count(text: str) -> int:
    """An argparse type for a whole number of at least 1 (repeats, clients, threads, ...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_model_args(parser: argparse.ArgumentParser, *, auto_runtime: bool = False) -> None:
    """The options every command that loads a model shares; ``auto_runtime`` adds ``--runtime auto``
    (the fastest runtime x precision the benchmark measured on this machine)."""
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx (default: %(default)s)")
    if auto_runtime:
        parser.add_argument("--runtime", choices=("auto", *RUNTIMES), default="auto",
                            help="inference runtime; auto: the fastest that `python -m local bench` measured on this "
                                 "machine, with its precision's model if --model is not given (default: %(default)s)")
    else:
        parser.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime", help="inference runtime (default: %(default)s)")
    parser.add_argument("--threads", type=count, default=None,
                        help="inference threads (default: one per CPU this process may use)")
    parser.add_argument("--exact-preprocess", action="store_true",
                        help="always use the reference preprocessing path, even for large photos")
    add_int8_args(parser)


def add_int8_args(parser: argparse.ArgumentParser) -> None:
    """The expert options for INT8 and the load-time canary (see README, "INT8 on every CPU")."""
    parser.add_argument("--int8-kernel", choices=INT8_KERNEL_CHOICES, default=None,
                        help="ONNX Runtime's INT8 kernel: auto picks the exact one for this CPU (U8U8 on x86-64 without "
                             f"VNNI); precise/fast force one (default: ${INT8_KERNEL_ENV} or auto)")
    parser.add_argument("--allow-canary-failure", action="store_true", default=None,
                        help="serve the model even if its canary fails on this CPU; every answer then carries a warning "
                             f"(default: ${ALLOW_CANARY_FAILURE_ENV})")


def function_env(args: argparse.Namespace) -> dict[str, str]:
    """The INT8 options as the Lambda function reads them (its environment variables), for the emulator."""
    env = {}
    if args.int8_kernel:
        env[INT8_KERNEL_ENV] = args.int8_kernel
    if args.allow_canary_failure:
        env[ALLOW_CANARY_FAILURE_ENV] = "1"
    return env


def load_classifier(args: argparse.Namespace):
    """Build the classifier the shared options describe (raises ModelLoadError with a reason)."""
    from lambda_onnx.classifier import Classifier

    return Classifier(args.model, threads=args.threads, runtime=args.runtime, fast_preprocess=not args.exact_preprocess,
                      int8_kernel=args.int8_kernel, allow_canary_failure=args.allow_canary_failure)


def describe_canary(result: CanaryResult, int8_kernel: str | None) -> str:
    """``int8 kernel u8u8 precise, canary china passed (rel. error 0.073)``: how the model runs on this CPU."""
    text = f"int8 kernel {int8_kernel}, " if int8_kernel else ""
    if result.status == "absent":
        return text + f"canary absent ({result.reason})"
    text += f"canary {result.photo} {result.status}"
    if result.rel_rms is not None:
        text += f" (rel. error {result.rel_rms:.3f}, {result.limit})"
    if result.kernel_fallback:
        text += f"; {result.kernel_fallback}"
    return text


RANDOM_WEIGHTS_BANNER = f"WARNING: {RANDOM_WEIGHTS_WARNING}"


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command (``args.run(args)``), the one place its failures become an exit status: a
    :class:`ClassifierError` one ``error: ...`` line and 1, a reader that left the pipe 0, Ctrl-C (or
    SIGTERM, :func:`stop_on_sigterm`) 130, what was started being stopped on the way out."""
    from lambda_onnx.errors import ClassifierError

    try:
        return args.run(args)
    except ClassifierError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `python -m local predict ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def stop_on_sigterm() -> None:
    """Make SIGTERM (``kill``, ``docker stop``, systemd) end the command as Ctrl-C does.

    Killed by SIGTERM's default action, Python runs neither ``finally`` blocks nor ``atexit``
    handlers, so the emulators and servers a command started (each in a session of its own) were
    left running; as a KeyboardInterrupt they are stopped on the way out. Commands that handle
    SIGTERM themselves (``serve`` under uvicorn, ``emulator``) replace this handler.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def add_target_args(parser) -> None:
    """The options that say where the two sides run (shared by ``python -m gui`` and ``local monitor``)."""
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx (default: %(default)s)")
    serverless = parser.add_argument_group("serverless side (default: the local Lambda emulator)")
    serverless.add_argument("--lambda-url", help="API Gateway or Function URL of a deployed function (…/classify)")
    serverless.add_argument("--sigv4", action="store_true", help="sign --lambda-url requests (IAM-protected Function URL)")
    serverless.add_argument("--lambda-function", help="function name or ARN, invoked through boto3")
    serverless.add_argument("--region", help="AWS region for --lambda-function, --sigv4 and the AWS view")
    serverless.add_argument("--emulator-memory", type=int, default=DEFAULT_MEMORY_MB,
                            help="memory size the emulator gives the function (default: %(default)s MB)")
    parser.add_argument("--server-url", help="a `python -m local serve` URL instead of the in-process runner")


def targets_from_args(args) -> Targets:
    from local.clients.targets import Targets

    return Targets(model=args.model, server_url=args.server_url, lambda_url=args.lambda_url,
                   lambda_function=args.lambda_function, region=args.region, sigv4=args.sigv4,
                   emulator_memory_mb=args.emulator_memory)


class Progress:
    """Progress lines with the time since the start: every statement, and counts (a ``fraction``) at most
    every 2 s (``scenario`` and ``replay``)."""

    def __init__(self, stream) -> None:
        self.stream, self.started, self.last = stream, time.perf_counter(), 0.0

    def __call__(self, message: str, fraction: float | None = None) -> None:
        now = time.perf_counter()
        if fraction is not None and now - self.last < 2.0 and fraction < 1.0:
            return
        self.last = now
        share = f"{fraction:4.0%} " if fraction is not None else "     "
        print(f"{now - self.started:7.1f} s {share} {message}", file=self.stream, flush=True)


def add_traffic_args(parser: argparse.ArgumentParser, default_duration: str = "1d") -> None:
    """A built-in shape and its parameters, or ``--arrivals FILE`` (``scenario`` and ``replay``)."""
    from local.measure.scenario.traffic import SHAPES

    parser.add_argument("shape", nargs="?", choices=SHAPES, help="a built-in traffic shape")
    traffic = parser.add_argument_group("traffic")
    traffic.add_argument("--arrivals", type=Path, metavar="FILE",
                         help="your own arrivals: a CSV of arrival times in seconds (header optional), or an API Gateway "
                              "(JSON/CLF/CSV/XML) or ALB access log (.gz too)")
    traffic.add_argument("--duration", default=None,
                         help=f"period: 90s, 15m, 2h, 30d (default: {default_duration} for a shape; a file's whole span)")
    traffic.add_argument("--rate", type=float, default=None,
                         help="requests/s: steady's rate, diurnal's mean, spikes' baseline (default: 1); with --breakeven, "
                              "your mean rate: its cheapest option and p99 are printed")
    traffic.add_argument("--peak-to-trough", type=float, default=4.0, help="diurnal: peak / trough (default: %(default)s)")
    traffic.add_argument("--period", default="1d", help="diurnal: the length of its cycle (default: %(default)s)")
    traffic.add_argument("--spike-every", default="1h", help="spikes: time between bursts (default: %(default)s)")
    traffic.add_argument("--spike-length", default="1m", help="spikes: how long a burst lasts (default: %(default)s)")
    traffic.add_argument("--spike-multiplier", type=float, default=20.0,
                         help="spikes: the burst's rate over the baseline (default: %(default)s)")
    traffic.add_argument("--every", default="30s", help="sparse: one request every ... (default: %(default)s)")
    traffic.add_argument("--jitter", type=float, default=0.0, help="sparse: +/- this share of the interval (default: 0)")
    traffic.add_argument("--seed", type=int, default=0, help="random seed of the traffic and the service times")


def traffic_from_args(args: argparse.Namespace):
    """The shape or the file's arrivals the options name (ValueError / ArrivalsFormatError otherwise)."""
    from local.measure.scenario.traffic import Shape, parse_duration, read_arrivals

    if args.arrivals:
        return read_arrivals(args.arrivals)
    return Shape(args.shape, rate=args.rate if args.rate is not None else 1.0, peak_to_trough=args.peak_to_trough,
                 period_s=parse_duration(args.period), spike_every_s=parse_duration(args.spike_every),
                 spike_length_s=parse_duration(args.spike_length), spike_multiplier=args.spike_multiplier,
                 every_s=parse_duration(args.every), jitter=args.jitter)
