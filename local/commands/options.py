"""The options every command line shares (``python -m local ...`` and ``python -m gui``), and the
small things each shell does the same way: parse, build what the options describe, print.
Libraries never see ``argparse``: they take the typed values these produce."""

from __future__ import annotations

import argparse
import signal
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
