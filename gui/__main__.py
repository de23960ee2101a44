"""``python -m gui``: launch the comparison app."""

from __future__ import annotations

import argparse
import sys

from gui.launch import LaunchOptions, UsageError, launch
from lambda_onnx.errors import ClassifierError
from local.commands.options import add_target_args, stop_on_sigterm, targets_from_args


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gui", description="Compare serverless and server on the same ONNX model.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--share", action="store_true", help="also make a public Gradio link (needs --auth or --no-auth)")
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login")
    parser.add_argument("--no-auth", action="store_true", help="explicitly allow a shared app without a login")
    add_target_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    targets = targets_from_args(args)
    options = LaunchOptions(host=args.host, port=args.port, share=args.share, auth=args.auth, no_auth=args.no_auth)
    try:
        launch(targets, options, block=True)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ClassifierError as exc:  # a broken model, an emulator that cannot start
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    stop_on_sigterm()
    sys.exit(main())
