"""``python -m local emulator``: the Lambda function on the real AWS Lambda emulator, locally.

Starts the emulator (or a pool of them) with an exported model, prints the invoke URL and waits
for Ctrl-C; ``--invoke IMAGE`` classifies images through it instead and exits.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from lambda_onnx.errors import ClassifierError
from local.commands.options import RANDOM_WEIGHTS_BANNER, add_int8_args, count, function_env
from local.defaults import DEFAULT_MODEL


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from local.defaults import DEFAULT_MEMORY_MB
    from local.lambda_env.rie import DEFAULT_TIMEOUT_S

    parser = subparsers.add_parser("emulator", help="run the Lambda function on the AWS Lambda emulator (no Docker)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None,
                        help="port on 127.0.0.1 of the one Invoke API URL in front of the environment(s) (default: a free one)")
    parser.add_argument("--memory", type=count, default=DEFAULT_MEMORY_MB,
                        help="the function's memory size in MB; sets the CPU share it assumes (default: %(default)s)")
    parser.add_argument("--timeout", type=count, default=DEFAULT_TIMEOUT_S, help="the function's timeout in s (default: %(default)s)")
    parser.add_argument("--pool", type=count, default=1,
                        help="execution environments: concurrent requests each get one, with its own cold start (default: %(default)s)")
    parser.add_argument("--elastic", action="store_true",
                        help="start execution environments on demand as Lambda does: reuse idle ones, stop them after "
                             "--idle-timeout, throttle (429) past --max-concurrency (instead of a fixed --pool)")
    parser.add_argument("--max-concurrency", type=count, default=None, metavar="N",
                        help="with --elastic: environments at once, as a function's reserved concurrency (default: 4)")
    parser.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                        help="with --elastic: seconds an idle environment is kept (default: 600; AWS does not document "
                             "Lambda's)")
    parser.add_argument("--async-queue", type=count, default=None, metavar="N",
                        help="asynchronous invokes (InvocationType=Event) that may wait for an environment; past it the "
                             "Invoke API answers 429 (default: 100)")
    parser.add_argument("--invoke", nargs="+", type=Path, metavar="IMAGE", help="classify these images through the emulator, then exit")
    parser.add_argument("--send", choices=("json", "binary"), default="json",
                        help="request body the HTTP API event carries: JSON base64 or raw binary (default: %(default)s)")
    parser.add_argument("--logs", action="store_true", help="echo the function's log lines (structured logs and EMF metrics)")
    add_int8_args(parser)
    parser.set_defaults(run=run)


def _print_result(path: Path, result) -> None:
    m, extra = result.metrics, result.extra
    cold = f"COLD start, init {m['init_ms']:.0f} ms in the handler" if result.cold_start else "warm"
    print(f"{path}  ({cold}; environment {extra.get('environment')})")
    for rank, p in enumerate(result.predictions, 1):
        print(f"  {rank}. {p.label:<28} {p.probability:7.2%}  (class {p.class_id})")
    print(f"  round trip {result.round_trip_ms:.1f} ms, handler {m['handler_ms']:.1f} ms (inference {m['inference_ms']:.1f} ms), "
          f"peak RSS {m['peak_rss_mb']:.0f} MB of {m['memory_mb']} MB")


def run(args: argparse.Namespace) -> int:
    from lambda_onnx.sidecar import load_verified
    from local.clients.emulator import EmulatorBackend
    from local.lambda_env import DEFAULT_MAX_CONCURRENCY, ElasticPool
    from local.lambda_env.async_queue import DEFAULT_ASYNC_QUEUE
    from local.lambda_env.elastic import DEFAULT_IDLE_TIMEOUT_S
    from local.lambda_env.front import InvokeFront
    from local.lambda_env.pool import EmulatorPool

    meta = load_verified(args.model)  # a missing, truncated or corrupt model is a one-line error now, not a 500 later
    on_line = _echo_function_output if args.logs else None
    if not args.elastic and (args.max_concurrency is not None or args.idle_timeout is not None):
        print("error: --max-concurrency and --idle-timeout go with --elastic", file=sys.stderr)
        return 2
    pool: ElasticPool | EmulatorPool
    if args.elastic:
        try:
            idle = DEFAULT_IDLE_TIMEOUT_S if args.idle_timeout is None else args.idle_timeout
            pool = ElasticPool(args.model, max_concurrency=args.max_concurrency or DEFAULT_MAX_CONCURRENCY,
                               idle_timeout_s=idle, memory_mb=args.memory, timeout_s=args.timeout, on_line=on_line,
                               env=function_env(args))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        shape = (f"elastic: environments on demand, up to {pool.max_concurrency}, each stopped after "
                 f"{pool.idle_timeout_s:g} s idle")
    else:
        pool = EmulatorPool(args.model, size=args.pool, memory_mb=args.memory, timeout_s=args.timeout, on_line=on_line,
                            env=function_env(args))
        shape = f"{args.pool} environment(s)"
    pool.start()
    try:
        print(f"Lambda emulator (AWS RIE) running {meta.label}: {args.memory} MB, timeout {args.timeout} s, {shape}",
              flush=True)
        if meta.random_weights:
            print(RANDOM_WEIGHTS_BANNER, flush=True)
        if args.invoke:
            return _invoke(EmulatorBackend(pool, send=args.send, stop_on_close=False), args.invoke)
        queue = args.async_queue or DEFAULT_ASYNC_QUEUE
        try:
            front = InvokeFront(pool, port=args.port or 0, async_queue=queue)
        except OSError as exc:
            print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        with front:
            print(f"  invoke URL {front.invoke_url}  ({shape}; concurrent requests are safe: each "
                  f"environment takes one at a time, as on Lambda)", flush=True)
            print(f"  function {front.function.name} = {front.function.arn} ('function' works too); Lambda's Invoke API: "
                  f"Event (202, runs in the background, at most {queue} waiting), DryRun (204), LogType Tail", flush=True)
            print(f"Try: curl -s {front.invoke_url} -d '{{\"image\": \"'$(base64 -w0 IMAGE.jpg)'\"}}'\n"
                  f"or boto3 with endpoint_url={front.url}, or the AWS CLI: aws lambda invoke --endpoint-url {front.url} "
                  f"--function-name {front.function.name} --log-type Tail --payload fileb://event.json out.json. "
                  f"Ctrl-C stops.", flush=True)
            return _wait(pool)  # asynchronous invokes still queued then are dropped, with a warning
    finally:
        pool.stop()


def _echo_function_output(stream: str, line: str) -> None:
    if stream == "stdout":  # the function's output; the emulator's own log (stderr) stays quiet
        print(f"  | {line}", flush=True)


def _invoke(backend, images: list[Path]) -> int:
    failed = 0
    for path in images:
        try:
            _print_result(path, backend.classify(path.read_bytes()))
        except OSError as exc:
            failed += 1
            print(f"error: {path}: {exc.strerror or exc}", file=sys.stderr)
        except ClassifierError as exc:
            failed += 1
            print(f"error: {path}: {exc.message}", file=sys.stderr)
    return 1 if failed else 0


RESTARTS = 3  # an environment that keeps dying (out of memory, a broken runtime) ends the command


def _wait(pool) -> int:
    """Serve until Ctrl-C or SIGTERM; an environment that died is started again (a cold start, as
    Lambda replaces a crashed environment), unless it keeps dying."""
    stop = threading.Event()
    # SIGINT too, explicitly: Python raises KeyboardInterrupt on Ctrl-C only if the process did not
    # start with SIGINT ignored, and a shell without job control (a script's `cmd &`, nohup, some CI
    # runners) starts its background commands so; `kill -INT` would then do nothing.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    restarts = 0
    while not stop.wait(0.5):
        if hasattr(pool, "idle_timeout_s"):  # elastic: a dead environment is dropped, the next request starts one
            continue
        for emulator in pool.emulators:
            if emulator.alive():
                continue
            tail = emulator.stderr_tail()
            if restarts == RESTARTS:
                print(f"error: {emulator.name} exited again after {RESTARTS} restarts:\n{tail}", file=sys.stderr)
                return 1
            restarts += 1
            print(f"{emulator.name} exited; starting it again (restart {restarts} of {RESTARTS}; the next "
                  f"request it takes is a cold start)", file=sys.stderr, flush=True)
            emulator.restart()
    print("stopping the emulator", flush=True)
    return 0
