"""``python -m local soak serve|emulator``: concurrent clients for a bounded time; prints the figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from local.defaults import DEFAULT_MODEL
from local.measure.core.images import DEFAULT_PHOTO


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("soak", help="load and soak runs against local serve or the Lambda emulator; prints figures")
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")

    serve = targets.add_parser("serve", help="concurrent clients against `local serve` (started here, or --url), then past its capacity")
    serve.add_argument("--url", help="an already running `local serve` (default: start one with --model on a free loopback port)")
    serve.add_argument("--clients", type=int, default=8, help="concurrent clients in the steady phase (default: %(default)s)")
    serve.add_argument("--seconds", type=float, default=60.0, help="length of the steady phase (default: %(default)s)")
    serve.add_argument("--overload-clients", type=int, default=None,
                       help="clients in the overload phase (default: the server's capacity plus --clients; 0: skip it)")
    serve.add_argument("--overload-seconds", type=float, default=None,
                       help="length of the overload phase (default: a quarter of --seconds, at least 2)")
    serve.add_argument("--send", choices=("json", "binary"), default="binary", help="request body (default: %(default)s)")
    serve.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                       help="passed to the `local serve` started here, e.g. --serve-arg=--max-queue=4 (repeatable)")
    _common(serve)

    emulator = targets.add_parser("emulator", help="concurrent clients on one emulated environment, then on a pool")
    emulator.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    emulator.add_argument("--seconds", type=float, default=30.0, help="length of each phase (default: %(default)s)")
    emulator.add_argument("--pool", type=int, default=None, help="environments in the pool phase (default: --clients; 0: skip it)")
    emulator.add_argument("--memory", type=int, default=3008, help="the function's memory size in MB (default: %(default)s)")
    _common(emulator)
    parser.set_defaults(run=run)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx (default: %(default)s)")
    parser.add_argument("--photo", default=DEFAULT_PHOTO,
                        help="sample photo every client sends; its known class is checked in every answer (default: %(default)s)")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _print_phase(phase) -> None:
    print(f"\n[{phase.name}] {phase.clients} clients, {phase.elapsed_s:.1f} s")
    errors = ", ".join(f"{key}: {count}" for key, count in sorted(phase.errors.items())) or "none"
    print(f"  requests {phase.requests}, ok {phase.ok}, errors {phase.error_count} ({errors})")
    for key, reason in sorted(phase.reasons.items()):
        print(f"    {key}: {reason}")
    print(f"  latency p50 {_ms(phase.p50_ms)}, p90 {_ms(phase.p90_ms)}, p99 {_ms(phase.p99_ms)}, max {_ms(phase.max_ms)}"
          f" (as each client saw it, waiting included)")
    print(f"  throughput {phase.throughput_rps:.1f} answers/s" + (f", cold starts {phase.cold_starts}" if phase.cold_starts else ""))
    if phase.environments:
        print("  per environment: " + ", ".join(f"{name} {count}" for name, count in phase.environments.items()))
    if phase.memory is not None:
        m = phase.memory
        print(f"  server RSS: start {m.start_mb:.0f} MB, max {m.max_mb:.0f} MB, end {m.end_mb:.0f} MB "
              f"(growth {m.growth_mb:+.0f} MB over {len(m.samples)} samples)")
    else:
        print("  server RSS: not visible from here")
    for note in phase.notes:
        print(f"  note: {note}")


def run(args: argparse.Namespace) -> int:
    from lambda_onnx import photos
    from local.measure.soak import soak_emulator, soak_serve

    try:
        photo = photos.by_name(args.photo)
        image = photo.read()
    except (KeyError, FileNotFoundError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.clients < 1 or args.seconds <= 0:
        print("error: --clients must be at least 1 and --seconds positive", file=sys.stderr)
        return 2
    def progress(text: str) -> None:
        print(f"running {text}…", flush=True)

    if args.target == "serve":
        report = soak_serve(image, url=args.url, model=None if args.url else args.model, clients=args.clients,
                            seconds=args.seconds, overload_clients=args.overload_clients,
                            overload_seconds=args.overload_seconds, expected=photo.expected,
                            serve_args=["--log-level", "warning", *args.serve_arg], send=args.send, on_phase=progress)
    else:
        report = soak_emulator(image, args.model, clients=args.clients, seconds=args.seconds, pool=args.pool,
                               memory_mb=args.memory, expected=photo.expected, on_phase=progress)
    print(f"\nsoak of {report.target}: {report.model}; every answer checked against {photo.name}'s class "
          f"({', '.join(photo.expected)})")
    if report.facts.get("capacity"):
        print(f"capacity: {report.facts['capacity']} requests admitted at once (classifying + waiting); past it, 503")
    for phase in report.phases:
        _print_phase(phase)
    failed = []
    for phase in report.phases:
        unexpected = {k: v for k, v in phase.errors.items() if not (phase.name == "overload" and k.startswith("503 "))}
        if unexpected:
            failed.append(f"{phase.name}: {unexpected}")
    if "after" in report.facts:
        print(f"\nafter the load: {report.facts['after']}")
    if report.target.startswith("Lambda") and not (report.facts.get("single_alive") and report.facts.get("pool_alive", True)):
        failed.append("an emulator died")
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0
