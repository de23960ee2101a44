"""``python -m local serve``: the local model behind ``POST /classify`` over HTTP."""

from __future__ import annotations

import argparse
import sys

from lambda_onnx.canary import CanaryResult
from local.commands.options import RANDOM_WEIGHTS_BANNER, add_model_args, count, describe_canary, run_command
from local.serve.config import HOST, PORT, QUEUE, ServeConfig
from local.serve.protocol import HTTP_CHOICES

DEFAULTS = ServeConfig()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve POST /classify over HTTP (same contract as the Lambda function)")
    add_model_args(parser, auto_runtime=True)
    parser.add_argument("--host", default=HOST, help="address to bind (default: %(default)s; loopback only)")
    parser.add_argument("--port", type=int, default=PORT, help="port (default: %(default)s)")
    parser.add_argument("--workers", type=count, default=None,
                        help="HTTP front processes, each with its own listening socket (SO_REUSEPORT), queue and lanes "
                             "(default: one; the CPUs are shared between them)")
    parser.add_argument("--max-concurrency", type=count, default=None, metavar="LANES",
                        help="requests classified at once per worker: lane processes, each with its own model, that "
                             "decode, preprocess and infer one request at a time from the worker's one queue; each lane "
                             "gets its share of the CPUs as inference threads unless --threads says otherwise "
                             "(default: one per CPU of the worker's share; with --threads alone, as many lanes as the "
                             "CPUs hold)")
    parser.add_argument("--max-queue", type=int, default=None,
                        help=f"requests that may wait per worker before the server answers 503 (default: {QUEUE} in all, "
                             "shared by the workers)")
    parser.add_argument("--retry-after", type=count, default=DEFAULTS.retry_after_s, metavar="SECONDS",
                        help="the Retry-After of a 503; within that time only a client address's first refusal is "
                             "answered at once, the others when it has passed (default: %(default)s)")
    parser.add_argument("--pace-refusals", action=argparse.BooleanOptionalAction, default=DEFAULTS.pace_refusals,
                        help="hold refusals to a client that asks again within Retry-After (default: on)")
    parser.add_argument("--refused-body", choices=("drain", "close"), default=DEFAULTS.refused_body,
                        help="a refused request's unread body: drain it and keep the connection, or close the "
                             "connection after the 503 (default: %(default)s)")
    parser.add_argument("--http", choices=HTTP_CHOICES, default=DEFAULTS.http,
                        help="HTTP parser: httptools (C), h11 (pure Python); auto: httptools if installed "
                             "(default: %(default)s)")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default=DEFAULTS.loop,
                        help="event loop: uvloop (C), asyncio; auto: uvloop if installed (default: %(default)s)")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=DEFAULTS.access_log,
                        help="uvicorn's line per answer at --log-level info; 503s are never logged one by one, they "
                             "are counted (GET /health) and summarised every 10 s (default: on)")
    parser.add_argument("--max-receiving", type=count, default=DEFAULTS.max_receiving,
                        help="requests that may be sending their bodies at once before the server answers 503 "
                             "(default: %(default)s)")
    parser.add_argument("--body-timeout", type=float, default=DEFAULTS.body_timeout_s,
                        help="seconds a client has to send its request body before 408 (default: %(default)s)")
    parser.add_argument("--lane-timeout", type=float, default=DEFAULTS.lane_timeout_s,
                        help="seconds a lane may take to answer one request; past that its process is stopped, the "
                             "request answered 500 and the lane started again (default: %(default)s)")
    parser.add_argument("--header-timeout", type=float, default=DEFAULTS.header_timeout_s,
                        help="seconds from connecting to the end of the request headers before the server hangs up "
                             "(default: %(default)s)")
    parser.add_argument("--drain-timeout", type=float, default=DEFAULTS.drain_timeout_s, metavar="SECONDS",
                        help="on SIGTERM, stop taking connections (new ones are refused) and answer every request "
                             "already accepted, queued ones included, within this many seconds; past it the rest are "
                             "answered 503, then the server exits 0 (default: %(default)s)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow cross-origin requests from this origin (repeatable; default: none)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from local.defaults import DEFAULT_MODEL
    from local.serve import ServeConfig, create_app, resolve_auto
    from local.serve import run as serve
    from local.serve.app import close_app

    model, runtime, why = resolve_auto(args.model, args.runtime, model_given=args.model != DEFAULT_MODEL)
    if why:
        print(f"runtime auto: {why}", flush=True)
    config = ServeConfig(model=str(model), runtime=runtime, threads=args.threads,
                         fast_preprocess=not args.exact_preprocess, max_concurrency=args.max_concurrency,
                         max_queue=args.max_queue, max_receiving=args.max_receiving, cors_origins=args.cors_origin,
                         workers=args.workers,
                         body_timeout_s=args.body_timeout, lane_timeout_s=args.lane_timeout, header_timeout_s=args.header_timeout,
                         drain_timeout_s=args.drain_timeout,
                         int8_kernel=args.int8_kernel, allow_canary_failure=args.allow_canary_failure,
                         retry_after_s=args.retry_after, pace_refusals=args.pace_refusals, refused_body=args.refused_body,
                         access_log=args.access_log, http=args.http, loop=args.loop)
    app = create_app(config)  # load now, so a bad model is a one-line error before anything binds
    info, split = app.state.info, app.state.split
    print(f"serving {info['label']} ({info['runtime']}, {split.workers} worker(s) x {split.lanes} lane(s) x "
          f"{split.threads} thread(s), queue {config.queue()} per worker) on http://{args.host}:{args.port}/classify",
          flush=True)
    print(f"host: {info['host_text']}; {describe_canary(CanaryResult(**info['canary']), info['int8_kernel'])}", flush=True)
    for warning in info["warnings"]:
        print(f"WARNING: {warning}", flush=True)
    if info["random_weights"]:
        print(RANDOM_WEIGHTS_BANNER, flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}, reachable from other machines", flush=True)
    if split.workers > 1:  # each worker starts lanes of its own: these were only the check
        close_app(app)
        serving = None
    else:
        serving = app
    try:
        serve(config, host=args.host, port=args.port, log_level=args.log_level, app=serving)
    except OSError as exc:  # the workers' sockets (uvicorn reports its own bind errors)
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        if serving is not None:  # stopped before its lifespan ran (e.g. the port was taken)
            close_app(serving)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m local.commands.serve [options]``: this command alone, importing nothing of the other
    commands (the server image runs it: ``deploy/server/Dockerfile``). SIGTERM is the drain's."""
    parser = argparse.ArgumentParser(prog="python -m local.commands.serve")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
