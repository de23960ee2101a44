"""``python -m export``: parse arguments, call the library, print progress and the parity report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from export import registry
from export.convert import OPSET
from lambda_onnx.errors import ClassifierError
from lambda_onnx.sidecar import RANDOM_WEIGHTS_WARNING


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
    parser.add_argument("--pretrained", default="DEFAULT",
                        help="which torchvision weights, e.g. IMAGENET1K_V1 (default: the arch's DEFAULT)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="output .onnx path (default: models/<arch>.onnx)")
    parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--check", type=Path, metavar="MODEL",
                        help="re-run the parity check of an existing export and exit: fp32 against PyTorch; "
                             "INT8 (<name>.int8.onnx) against its fp32 source and PyTorch")
    parser.add_argument("--list", action="store_true", help="list the model names --arch accepts")
    int8 = parser.add_argument_group("INT8", "static QDQ quantisation with ONNX Runtime's tools (export/quantize.py)")
    int8.add_argument("--int8", action="store_true",
                      help="quantise the fp32 export (--out, default models/<arch>.onnx; exported first if missing) "
                           "to <name>.int8.onnx with its own sidecar and parity report")
    int8.add_argument("--calibration-dir", type=Path, metavar="DIR",
                      help="calibrate on the images under DIR (default: the calibration photos shipped in installed packages)")
    int8.add_argument("--reduce-range", action="store_true",
                      help="7-bit weights (avoids U8S8 saturation on CPUs without VNNI for runtimes without an exact "
                           "INT8 kernel, e.g. OpenVINO; ONNX Runtime picks its exact kernel there by itself; costs precision)")
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


def _check_reusable(fp32: Path, args: argparse.Namespace) -> None:
    """``--int8`` reuses an existing fp32 export only if it is the model the other options describe."""
    from lambda_onnx.sidecar import Sidecar, sidecar_path

    meta = Sidecar.load(sidecar_path(fp32))
    wanted = []
    if meta.arch != args.arch:
        wanted.append(f"--arch {args.arch}")
    if args.random_weights and not (meta.random_weights and meta.seed == args.seed):
        wanted.append(f"--random-weights --seed {args.seed}")
    if args.weights and meta.weights != f"file:{args.weights.name}":
        wanted.append(f"--weights {args.weights}")
    if wanted:
        raise ValueError(f"{fp32} holds {meta.label}, not the model {' '.join(wanted)} asks for; "
                         "delete it or choose another --out")


def main(args: argparse.Namespace) -> int:
    if (args.calibration_dir or args.reduce_range) and not args.int8:
        print("error: --calibration-dir and --reduce-range only apply with --int8", file=sys.stderr)
        return 2
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
            from export.check import check_model

            report = check_model(args.check, on_step=progress.step, on_check=show)
            progress.finish()
            report.raise_if_failed()
            print(f"parity passed: {args.check}")
            return 0
        from export.pipeline import default_path, export_model

        out = args.out or default_path(args.arch)
        if args.int8 and out.is_file():
            _check_reusable(out, args)
            print(f"quantising the existing fp32 export {out}")
        else:
            meta = export_model(args.arch, out=out, weights_file=args.weights, random_weights=args.random_weights,
                                seed=args.seed, pretrained=args.pretrained, opset=args.opset, on_step=progress.step,
                                on_check=show, download_progress=True)
            progress.finish()
        if args.int8:
            from export.quantize import quantize_model

            meta = quantize_model(out, calibration_dir=args.calibration_dir, reduce_range=args.reduce_range,
                                  on_step=progress.step, on_check=show)
            progress.finish()
            out = out.with_name(meta.onnx_file)
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
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
