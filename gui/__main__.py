"""``python -m gui``: launch the comparison app."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gui.launch import LaunchOptions, UsageError, launch
from lambda_onnx.errors import ClassifierError
from local.commands.options import add_target_args, stop_on_sigterm, targets_from_args

PASSWORD_ENV = "GUI_PASSWORD"
OPERATOR_PASSWORD_ENV = "GUI_OPERATOR_PASSWORD"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gui", description="Compare serverless and server on the same ONNX model.",
        epilog="Roles: on loopback without --share the app is the operator's. Shared (--share) or on another --host, "
               "visitors get the viewer role (compare, scenarios, cost, reports); the operator's app (export, model "
               f"switch, tune, AWS) is then at /operator/ behind --operator's login. Passwords come from ${PASSWORD_ENV} "
               f"and ${OPERATOR_PASSWORD_ENV} or from files, never only from the command line.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--share", action="store_true",
                        help="also make a public Gradio link (viewer role; a login is generated unless --auth or --no-auth)")
    parser.add_argument("--auth", metavar="USER",
                        help=f"require this login; its password from ${PASSWORD_ENV} or --password-file "
                             "(USER:PASS also works, but shows the password to anyone who can list processes)")
    parser.add_argument("--password-file", type=Path, metavar="FILE", help="--auth's password: the file's first line")
    parser.add_argument("--operator", metavar="USER",
                        help=f"when shared: the operator's login, for the operator's app at /operator/; its password "
                             f"from ${OPERATOR_PASSWORD_ENV} or --operator-password-file")
    parser.add_argument("--operator-password-file", type=Path, metavar="FILE", help="--operator's password: the file's first line")
    parser.add_argument("--no-auth", action="store_true", help="explicitly allow a shared or non-loopback app without a login")
    add_target_args(parser)
    return parser


def read_password(path: Path | None, env: str) -> str | None:
    """A password from a file (its first line) or an environment variable; None when neither gives one."""
    if path is not None:
        try:
            text = path.read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the password file {path}: {exc.strerror or exc}") from None
        if not text or not text[0]:
            raise UsageError(f"the password file {path} is empty")
        return text[0]
    return os.environ.get(env) or None


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    targets = targets_from_args(args)
    try:
        if args.auth and ":" in args.auth:
            print("warning: --auth USER:PASS shows the password to anyone who can list processes; use "
                  f"${PASSWORD_ENV} or --password-file", file=sys.stderr)
        if args.operator and ":" in args.operator:
            raise UsageError(f"--operator takes USER only: its password from ${OPERATOR_PASSWORD_ENV} or "
                             "--operator-password-file, never the command line")
        options = LaunchOptions(host=args.host, port=args.port, share=args.share, auth=args.auth,
                                auth_password=read_password(args.password_file, PASSWORD_ENV) if args.auth else None,
                                operator=args.operator,
                                operator_password=read_password(args.operator_password_file, OPERATOR_PASSWORD_ENV)
                                if args.operator else None,
                                no_auth=args.no_auth)
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
