"""``python -m gui``: launch the comparison app."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gui.launch import LaunchOptions, UsageError, launch
from local.commands import DEFAULT_MODEL
from local.targets import DEFAULT_EMULATOR_MEMORY_MB, Targets


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gui", description="Compare serverless and server on the same ONNX model.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--share", action="store_true", help="also make a public Gradio link (needs --auth or --no-auth)")
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login")
    parser.add_argument("--no-auth", action="store_true", help="explicitly allow a shared app without a login")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx (default: %(default)s)")
    serverless = parser.add_argument_group("serverless side (default: the local Lambda emulator)")
    serverless.add_argument("--lambda-url", help="API Gateway or Function URL of a deployed function (…/classify)")
    serverless.add_argument("--sigv4", action="store_true", help="sign --lambda-url requests (IAM-protected Function URL)")
    serverless.add_argument("--lambda-function", help="function name or ARN, invoked through boto3")
    serverless.add_argument("--region", help="AWS region for --lambda-function, --sigv4 and the AWS view")
    serverless.add_argument("--emulator-memory", type=int, default=DEFAULT_EMULATOR_MEMORY_MB,
                            help="memory size the emulator reports to the function (default: %(default)s MB)")
    parser.add_argument("--server-url", help="a `python -m local serve` URL instead of the in-process runner")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    targets = Targets(model=args.model, server_url=args.server_url, lambda_url=args.lambda_url,
                      lambda_function=args.lambda_function, region=args.region, sigv4=args.sigv4,
                      emulator_memory_mb=args.emulator_memory)
    options = LaunchOptions(host=args.host, port=args.port, share=args.share, auth=args.auth, no_auth=args.no_auth)
    try:
        launch(targets, options, block=True)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
