"""``python -m local <command>``: the server side from the command line.

Every module in ``local/commands`` with ``add_parser(subparsers)`` is a subcommand. A command's
:class:`~lambda_onnx.errors.ClassifierError` becomes one ``error: ...`` line and exit status 1
(:func:`~local.commands.options.run_command`, also the server image's entry point's),
and SIGTERM ends every command as Ctrl-C does (:func:`~local.commands.options.stop_on_sigterm`).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import local.commands
from local.commands.options import run_command, stop_on_sigterm


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local", description="Local ONNX Runtime runner and tools.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(local.commands.__path__), key=lambda m: m.name):
        if info.name == "options":  # the options the commands share, not a command
            continue
        module = importlib.import_module(f"local.commands.{info.name}")
        if hasattr(module, "add_parser"):
            module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    stop_on_sigterm()
    sys.exit(main())
