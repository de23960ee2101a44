"""``python -m local <command>``: the server side from the command line.

Every module in ``local/commands`` with ``add_parser(subparsers)`` is a subcommand. A command's
:class:`~lambda_onnx.errors.ClassifierError` becomes one ``error: ...`` line and exit status 1 here,
and SIGTERM ends every command as Ctrl-C does (:func:`~local.commands.options.stop_on_sigterm`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import local.commands
from lambda_onnx.errors import ClassifierError
from local.commands.options import stop_on_sigterm


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
    args = get_args_parser().parse_args(argv)
    try:
        return args.run(args)
    except ClassifierError as exc:  # every command's typed failure: one line and status 1
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `python -m local predict ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what was started is stopped on the way out, quietly
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    stop_on_sigterm()
    sys.exit(main())
