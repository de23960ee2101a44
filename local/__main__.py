"""``python -m local <command>``: the server side from the command line."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each name is a module under local/commands with add_parser() and run().
COMMANDS = ("predict",)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local", description="Local ONNX Runtime runner and tools.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"local.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
