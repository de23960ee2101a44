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
from local.commands import DEFAULT_MODEL, RANDOM_WEIGHTS_BANNER


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from local.emulator import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S

    parser = subparsers.add_parser("emulator", help="run the Lambda function on the AWS Lambda emulator (no Docker)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="Invoke API port on 127.0.0.1 (default: a free one; --pool 1 only)")
    parser.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB,
                        help="the function's memory size in MB; sets the CPU share it assumes (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, help="the function's timeout in s (default: %(default)s)")
    parser.add_argument("--pool", type=int, default=1,
                        help="execution environments: concurrent requests each get one, with its own cold start (default: %(default)s)")
    parser.add_argument("--invoke", nargs="+", type=Path, metavar="IMAGE", help="classify these images through the emulator, then exit")
    parser.add_argument("--send", choices=("json", "binary"), default="json",
                        help="request body the HTTP API event carries: JSON base64 or raw binary (default: %(default)s)")
    parser.add_argument("--logs", action="store_true", help="echo the function's log lines (structured logs and EMF metrics)")
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
    from local.backends import EmulatorBackend
    from local.emulator import EmulatorPool

    if args.pool < 1 or (args.port is not None and args.pool != 1):
        print("error: --pool must be at least 1, and --port applies to a single emulator (--pool 1)", file=sys.stderr)
        return 2
    try:  # a missing, truncated or corrupt model is a one-line error now, not a 500 on the first invoke
        meta = load_verified(args.model)
    except ClassifierError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    on_line = _echo_function_output if args.logs else None
    pool = EmulatorPool(args.model, size=args.pool, memory_mb=args.memory, timeout_s=args.timeout, port=args.port, on_line=on_line)
    try:
        pool.start()
    except ClassifierError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    try:
        print(f"Lambda emulator (AWS RIE) running {meta.label}: {args.memory} MB, timeout {args.timeout} s, "
              f"{args.pool} environment(s)", flush=True)
        if meta.random_weights:
            print(RANDOM_WEIGHTS_BANNER, flush=True)
        if args.invoke:
            return _invoke(EmulatorBackend(pool, send=args.send, stop_on_close=False), args.invoke)
        for emulator in pool.emulators:
            print(f"  {emulator.name}: invoke URL {emulator.invoke_url}", flush=True)
        first = pool.emulators[0]
        print(f"Try: curl -s {first.invoke_url} -d '{{\"image\": \"'$(base64 -w0 IMAGE.jpg)'\"}}'\n"
              f"or boto3 with endpoint_url={first.url} and FunctionName='function'. Ctrl-C stops.", flush=True)
        return _wait(pool)
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


def _wait(pool) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            dead = [e for e in pool.emulators if not e.alive()]
            if dead:
                print(f"error: {dead[0].name} exited:\n{dead[0].stderr_tail()}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    print("stopping the emulator", flush=True)
    return 0
