"""``python -m export``: parse arguments, call the library, print progress and the parity report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from export import registry
from export.convert import OPSET
from lambda_onnx.errors import ClassifierError


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a torchvision classifier to one self-contained ONNX file with a sidecar and a parity report.",
    )
    parser.add_argument("--arch", default=registry.DEFAULT_ARCH,
                        help=f"torchvision classification model or {registry.EFFICIENTNET_LITE0} (default: %(default)s); --list shows all")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", type=Path, metavar="FILE", help="a local state dict instead of the pretrained download")
    source.add_argument("--random-weights", action="store_true",
                        help="random weights, for offline demos and tests: predictions are meaningless")
    parser.add_argument("--pretrained", default="DEFAULT", help="which torchvision weights, e.g. IMAGENET1K_V1 (default: the arch's DEFAULT)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="output .onnx path (default: models/<arch>.onnx)")
    parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--check", type=Path, metavar="MODEL",
                        help="re-run the parity check of an existing export against PyTorch, and exit")
    parser.add_argument("--list", action="store_true", help="list the model names --arch accepts")
    return parser


class _Progress:
    """One line per long step, with the time the previous one took."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.count = 0

    def step(self, message: str) -> None:
        self.finish()
        self.count += 1
        self.started = time.perf_counter()
        print(f"[{self.count}] {message} …", flush=True)

    def finish(self, ok: bool = True) -> None:
        if self.started is not None:
            print(f"    {'done' if ok else 'failed'} after {time.perf_counter() - self.started:.1f} s", flush=True)
            self.started = None


def main(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(registry.classification_models()))
        return 0
    progress = _Progress()

    def show(check) -> None:
        if progress.started is not None:
            progress.finish()
        print(f"    {check.line()}", flush=True)

    try:
        if args.check:
            from export.pipeline import check_model

            report = check_model(args.check, on_step=progress.step, on_check=show)
            progress.finish()
            report.raise_if_failed()
            print(f"parity passed: {args.check}")
            return 0
        from export.pipeline import default_path, export_model

        out = args.out or default_path(args.arch)
        meta = export_model(args.arch, out=out, weights_file=args.weights, random_weights=args.random_weights,
                            seed=args.seed, pretrained=args.pretrained, opset=args.opset, on_step=progress.step,
                            on_check=show, download_progress=True)
        progress.finish()
    except ClassifierError as exc:
        progress.finish(ok=False)
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        progress.finish(ok=False)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({meta.onnx_bytes / 1e6:.1f} MB, sha256 {meta.sha256[:12]}…) and {out.with_suffix('.json')}")
    if meta.random_weights:
        print("WARNING: RANDOM WEIGHTS — this model's predictions are meaningless (for demos and tests only)")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
