"""``python -m local throughput``: answers per second of one server, the Cost view's measured figure."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from local.commands.options import count
from local.defaults import DEFAULT_MODEL


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from local.measure.core.images import DEFAULT_PHOTO
    from local.measure.throughput import DEFAULT_CLIENTS, DEFAULT_REQUESTS

    parser = subparsers.add_parser("throughput", help="requests per second one server answers (the cost comparison's figure)",
                                   description="Concurrent clients send a sample photo back to back to the in-process "
                                               "runner (or a running `local serve`) and count the answers per second; "
                                               "the GUI's Cost tab measures the same way.")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="exported .onnx, run in this process (default: %(default)s)")
    parser.add_argument("--server-url", help="a `python -m local serve` URL to measure instead of the in-process runner")
    parser.add_argument("--requests", type=count, default=DEFAULT_REQUESTS, help="requests in all (default: %(default)s)")
    parser.add_argument("--clients", type=count, default=DEFAULT_CLIENTS, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--photo", default=DEFAULT_PHOTO, help="the sample photo every request sends (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lambda_onnx import photos
    from local.clients.targets import Targets, server_backend
    from local.measure.throughput import measure_throughput

    try:
        image = photos.by_name(args.photo).read()
    except (KeyError, FileNotFoundError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    backend = server_backend(Targets(model=args.model, server_url=args.server_url))
    try:
        result = measure_throughput(backend, image, requests=args.requests, clients=args.clients)
    finally:
        backend.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{result.backend}: {result.requests_per_s} requests/s ({result.answered} of {result.requests} requests "
              f"answered, {result.clients} clients, {result.elapsed_s:.2f} s)")
    if result.answered < result.requests:
        print(f"error: {result.requests - result.answered} requests were not answered", file=sys.stderr)
        return 1
    return 0
