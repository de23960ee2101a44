"""``python -m local monitor``: the GUI's monitor run from the command line (same code)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lambda_onnx.errors import ClassifierError
from local.commands.options import RANDOM_WEIGHTS_BANNER, add_target_args, targets_from_args
from local.measure.core.images import DEFAULT_PHOTO


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("monitor", help="send requests at an interval to both sides; percentiles, CSV, HTML report")
    add_target_args(parser)
    parser.add_argument("--backends", default="server,serverless", help="which sides: server, serverless or both (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between a worker's requests (default: %(default)s)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="seconds to run (default: 3600 unless --requests)")
    stop.add_argument("--requests", type=int, help="requests per backend")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="workers per backend; on the emulator, a pool of this many environments (default: %(default)s)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--photo", default=DEFAULT_PHOTO, help="a sample photo by name (default: %(default)s)")
    source.add_argument("--image", type=Path, help="an image file to send instead")
    parser.add_argument("--out", type=Path, default=Path("artifacts/monitor"), help="where CSV and HTML go (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lambda_onnx import photos
    from local.clients.targets import server_backend, serverless_backend
    from local.measure.monitor import MonitorSettings, model_facts, start_monitor
    from local.report.monitor import answered_on, write_monitor_outputs

    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(wanted) - {"server", "serverless"}
    if unknown or not wanted:
        print(f"error: --backends takes server and/or serverless, not {', '.join(sorted(unknown)) or 'nothing'}", file=sys.stderr)
        return 2
    try:
        image = args.image.read_bytes() if args.image else photos.by_name(args.photo).read()
    except (OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    targets = targets_from_args(args)
    backends = []
    try:
        if "server" in wanted:
            backends.append(server_backend(targets))
        if "serverless" in wanted:
            backends.append(serverless_backend(targets, pool=args.concurrency))
    except ClassifierError:  # one-line error in local.__main__, after what was started is stopped
        for backend in backends:
            backend.close()
        raise
    duration = args.duration if args.duration is not None or args.requests is not None else 3600.0
    model, random_weights = model_facts(targets.model)
    settings = MonitorSettings(backends=tuple(b.name for b in backends), model=model, random_weights=random_weights,
                               photo=str(args.image) if args.image else args.photo, interval_s=args.interval,
                               concurrency=args.concurrency, requests=args.requests,
                               duration_s=None if args.requests else duration)
    total = f"{args.requests} requests per backend" if args.requests else f"{duration:.0f} s"
    print(f"monitoring {', '.join(settings.backends)}: every {args.interval} s, concurrency {args.concurrency}, {total}",
          flush=True)
    if random_weights:
        print(RANDOM_WEIGHTS_BANNER, flush=True)

    def show(sample) -> None:
        what = (f"{sample.round_trip_ms:8.1f} ms" + (" cold" if sample.cold_start else "")) if sample.ok else f"ERROR {sample.error}"
        print(f"  {sample.t_s:8.1f} s  {sample.backend:<40} {what}", flush=True)

    run_ = start_monitor(backends, image, interval_s=settings.interval_s, duration_s=settings.duration_s,
                         requests=settings.requests, concurrency=settings.concurrency, on_sample=show)
    try:
        run_.finished.wait()
    except KeyboardInterrupt:
        print("stopping…", flush=True)
        run_.stop.set()
        run_.finished.wait()
    finally:
        for backend in backends:
            backend.close()
    csv_path, html_path = write_monitor_outputs(run_, args.out, settings)
    print(f"\n{'backend':<40} {'n':>5} {'err':>4} {'cold':>4} {'min':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'mean':>8}")
    for s in run_.stats():
        cells = [f"{v:8.1f}" if v is not None else f"{'—':>8}" for v in (s.min_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.mean_ms)]
        print(f"{s.backend + (' @ ' + s.cpu if s.cpu else ''):<40} {s.count:>5} {s.errors:>4} {s.cold_starts:>4} " + " ".join(cells))
    for row in answered_on(run_.samples):
        print(f"answered by {row['backend']} on {row['cpu']}: {row['answers']} (INT8 kernel {row['int8 kernel']}, "
              f"canary {row['canary']})")
    print(f"\nwrote {csv_path} and {html_path}")
    return 0 if all(s.errors == 0 for s in run_.stats()) else 1
