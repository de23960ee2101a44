"""Thin command-line shells over the ``local`` library: one module per ``python -m local`` subcommand.

Each module has ``add_parser(subparsers)`` and ``run(args) -> int`` and only parses, calls the
library and prints.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from lambda_onnx.engines import RUNTIMES

DEFAULT_MODEL = Path("models/resnet50.onnx")


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


def load_classifier(args: argparse.Namespace):
    """Build the classifier the shared options describe (raises ModelLoadError with a reason)."""
    from lambda_onnx.classifier import Classifier

    return Classifier(args.model, threads=args.threads, runtime=args.runtime, fast_preprocess=not args.exact_preprocess)


RANDOM_WEIGHTS_BANNER = "WARNING: RANDOM WEIGHTS — predictions are meaningless (offline demo/test model)"


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
