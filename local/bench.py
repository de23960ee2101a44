"""``python -m local bench`` as a library: PyTorch, ONNX Runtime and OpenVINO side by side, one machine, one run.

What it measures (issue 5): batch-1 latency (median, p90) and batch-8 throughput of every runtime ×
precision against PyTorch eager fp32; the thread count the core picks against the alternatives;
cold start (fresh process to first prediction) and peak RSS of a PyTorch handler built as the
reference project built it (:mod:`local.torch_handler`) and of the real ONNX handler
(:mod:`lambda_onnx.handler`) with the fp32 and the INT8 model; preprocessing time of a 12 MP and a
0.3 MP JPEG; the compute floor (the model's FLOPs over this machine's measured fp32 GEMM rate, INT8
at a quarter of it for VNNI); the runtime payload (installed runtime packages + code + model);
the emulator's warm round trip against in-process; and the top-1 agreement of every runtime ×
precision with fp32 on real photos (a real-weights model: speed does not depend on the weights,
agreement does).

The result is a :class:`BenchReport`; :func:`write_outputs` turns it into Markdown, JSON and PNG.
Libraries do not print: progress goes to the ``on_step`` callback.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lambda_onnx.canary import Canary, canary_path
from lambda_onnx.classifier import Classifier
from lambda_onnx.cpu import cpu_info, int8_kernel_choice, int8_kernel_name, use_precise_int8
from lambda_onnx.preprocess import prepare
from lambda_onnx.resources import available_cpus, default_threads
from lambda_onnx.sidecar import Sidecar, int8_path, sidecar_path
from local import photos as sample_photos
from local.choice import cpu_identity
from local.defaults import BENCH_OUT, DEFAULT_ACCURACY_MODEL, DEFAULT_MODEL

Step = Callable[[str], None]
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = BENCH_OUT
LAMBDA_REQUIREMENTS = ROOT / "lambda_onnx" / "requirements.txt"
BATCH = 8
# The targets, as ratios from one run on one machine.
TARGET_ORT_FP32_VS_TORCH = 0.75
TARGET_INT8_VS_TORCH = 0.25
TARGET_INT8_VS_FLOOR = 1.25
TARGET_COLD_START_VS_TORCH = 0.2
TARGET_PREPROCESS_VS_INT8 = 2.0
TARGET_RSS_FP32_MB = 350
TARGET_RSS_INT8_MB = 200
TARGET_PAYLOAD_INT8_MB = 250
# VNNI does four int8 multiply-adds where fp32 FMA does one, per lane.
INT8_FLOOR_DIVISOR = 4
# A ResNet-50 image is 4.09 G multiply-adds (torchvision's weights.meta["_ops"] counts MACs),
# 8.2 GFLOP; the FLOPs of any arch are counted by torch's FlopCounterMode (2 per multiply-add).
RESNET50_GFLOP = 8.2


@dataclass
class BenchConfig:
    """What to measure and how often. ``quick`` is for tests: a few samples of everything."""

    model: Path | None = None  # fp32; None: models/resnet50.onnx, else a random ResNet-50 exported into the cache
    int8: Path | None = None  # None: <model>.int8.onnx next to it, else quantised into the cache
    accuracy_model: Path | None = None  # real weights, for agreement; None: models/efficientnet_lite0.onnx or the cache
    out: Path = DEFAULT_OUT
    repeats: int = 30  # batch-1 samples per variant
    batch_repeats: int = 5  # batch-8 samples per variant
    warmup: int = 3  # per round, before its samples
    rounds: int = 3  # interleaved blocks the batch-1 samples are split into (see _measure_in_rounds)
    cold_runs: int = 3  # fresh processes per handler
    threads: int | None = None  # None: resources.default_threads()
    quick: bool = False

    def __post_init__(self) -> None:
        if self.quick:
            self.repeats, self.batch_repeats, self.warmup, self.cold_runs = min(self.repeats, 3), 1, 1, 1
            self.rounds = 1

    @property
    def cache(self) -> Path:
        return Path(self.out) / "cache"


@dataclass
class Latency:
    """One runtime × precision: batch-1 latency and batch-8 throughput."""

    name: str
    runtime: str
    precision: str  # the model's
    computes_in: str  # what the runtime really computes in
    threads: int
    median_ms: float
    p90_ms: float
    batch_images_per_s: float | None  # None when no batch was measured
    samples: list[float] = field(default_factory=list)
    vs_pytorch: float | None = None
    floor_fraction: float | None = None  # compute floor / median: 1.0 would be the floor itself
    key: str = ""  # runtime/precision/hint/kernel: matches the agreement row of the same variant
    int8_kernel: str | None = None  # the INT8 kernel it ran with (lambda_onnx.cpu)
    canary: str = ""  # its canary on the benchmarked model, on this CPU: passed, failed, absent
    eligible: bool = True  # may be chosen as the fastest: its parity holds on this CPU
    why_not: str = ""  # why it may not


@dataclass
class BenchReport:
    created: str
    machine: dict[str, Any]
    config: dict[str, Any]
    models: dict[str, Any]
    inference: list[Latency] = field(default_factory=list)
    threads: list[dict[str, Any]] = field(default_factory=list)
    cold_start: list[dict[str, Any]] = field(default_factory=list)
    preprocess: list[dict[str, Any]] = field(default_factory=list)
    floor: dict[str, Any] = field(default_factory=dict)
    payload: list[dict[str, Any]] = field(default_factory=list)
    emulator: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    fastest: str = ""
    # The fastest runtime x precision whose parity holds on this CPU, for `local serve --runtime auto`.
    fastest_choice: dict[str, Any] = field(default_factory=dict)
    # Faster variants that were not chosen, and why (their parity does not hold here, or opt-in bf16).
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _noop(_: str) -> None:
    pass


# --- the machine --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model and the instruction sets that decide fp32/bf16/int8 speed, memory, versions."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(), **cpu_identity(),
                            "available_cpus": available_cpus(), "default_threads": default_threads(),
                            "load_average_before": _load()}
    info["vnni"] = cpu_info().vnni
    info["machine"] = cpu_info().machine
    try:
        mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
        info["memory_gb"] = round(int(mem.group(1)) / 2**20, 1) if mem else None
    except OSError:
        info["memory_gb"] = None
    for package in ("onnxruntime", "openvino", "torch", "numpy", "pillow"):
        try:
            info.setdefault("versions", {})[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info.setdefault("versions", {})[package] = "not installed"
    try:
        import torch

        info["torch_build"] = f"CUDA {torch.version.cuda} build, run on CPU" if torch.version.cuda else "CPU build"
    except ImportError:
        info["torch_build"] = "not installed"
    return info


def _load() -> float | None:
    """The 1-minute load average: other work on the machine inflates every number measured here."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def describe_machine(info: dict[str, Any]) -> str:
    """One line, e.g. ``AMD EPYC, 2 CPUs (avx2, fma; no VNNI), 23.5 GB, Linux …``."""
    vnni = "" if info.get("vnni") is None else ("; VNNI" if info["vnni"] else "; no VNNI")
    return (f"{info.get('cpu', '?')}, {info.get('cpus')} CPUs ({', '.join(info.get('isa', []))}{vnni}), "
            f"{info.get('memory_gb', '?')} GB, {info['platform']}, Python {info['python']}")


# --- models ------------------------------------------------------------------------------------


def ensure_models(config: BenchConfig, on_step: Step = _noop) -> tuple[Path, Path, Path | None, Path | None]:
    """(fp32, int8, accuracy fp32, accuracy int8): the given models, or created in ``config.cache``.

    Nothing is ever written to ``models/``: a fresh clone gets a random-weight ResNet-50 (speed does
    not depend on weights) and the real-weights EfficientNet-Lite0 (agreement does), both with their
    INT8, exported into the cache once. Creating models needs the export's packages (torch).
    """
    cache = config.cache / "models"
    fp32 = config.model or (DEFAULT_MODEL if DEFAULT_MODEL.is_file() else cache / "resnet50.onnx")
    if not fp32.is_file():
        if config.model is not None:
            raise FileNotFoundError(f"model not found: {fp32}")
        from export.pipeline import export_model

        on_step(f"exporting a random-weight ResNet-50 to {fp32} (weights do not change speed)")
        export_model("resnet50", out=fp32, random_weights=True)
    int8 = config.int8 or _int8_for(fp32, cache, on_step)
    accuracy, accuracy_int8 = None, None
    candidate = config.accuracy_model or (DEFAULT_ACCURACY_MODEL if DEFAULT_ACCURACY_MODEL.is_file() else cache / "efficientnet_lite0.onnx")
    try:
        if not candidate.is_file():
            from export.pipeline import export_model

            on_step(f"exporting the real-weights EfficientNet-Lite0 to {candidate} (for agreement)")
            export_model("efficientnet_lite0", out=candidate)
        accuracy = candidate
        accuracy_int8 = int8 if candidate.resolve() == fp32.resolve() else _int8_for(candidate, cache, on_step)
    except Exception as exc:  # no weights package, no torch: agreement is then reported as not measured
        on_step(f"no real-weights model for agreement: {exc}")
    return fp32, int8, accuracy, accuracy_int8


def _int8_for(fp32: Path, cache: Path, on_step: Step) -> Path:
    """The INT8 model quantised from ``fp32`` (next to it, or in the cache), else quantised now."""

    source = Sidecar.load(sidecar_path(fp32)).sha256
    for candidate in (int8_path(fp32), cache / int8_path(fp32).name):
        if candidate.is_file() and Sidecar.load(sidecar_path(candidate)).extra.get("quantization", {}).get(
                "source", {}).get("sha256") == source:
            return candidate
    from export.quantize import quantize_model

    out = cache / int8_path(fp32).name
    on_step(f"quantising {fp32} to {out}")
    quantize_model(fp32, out)
    return out


# --- timing ------------------------------------------------------------------------------------


def _times(fn: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _photo_batch(params, size: int) -> np.ndarray:
    """``size`` real preprocessed photos (repeated if needed): what the runtimes see when serving."""
    photos = sample_photos.available()
    tensors = [prepare(p.read(), params)[0].tensor for p in photos] or [np.zeros((1, 3, params.crop_size, params.crop_size), np.float32)]
    return np.concatenate([tensors[i % len(tensors)] for i in range(size)])


@dataclass
class _Variant:
    """One runtime × precision being measured, with the samples gathered so far."""

    name: str
    runtime: str
    precision: str
    computes_in: str
    threads: int
    run: Callable[[np.ndarray], object]
    samples: list[float] = field(default_factory=list)
    batch_samples: list[float] = field(default_factory=list)
    key: str = ""
    int8_kernel: str | None = None
    canary: str = ""


def _measure_in_rounds(variants: list[_Variant], batch: np.ndarray, config: BenchConfig, on_step: Step,
                       batch_repeats: int | None = None) -> list[Latency]:
    """Sample every variant in ``config.rounds`` interleaved blocks rather than one after another.

    On a shared machine a disturbance lasting a few seconds would otherwise land on whichever
    variant happened to run then and move its median by 10 % (seen here); spread over rounds it
    lands on all of them. Within a block the runtime keeps its caches warm, as a server would.
    """
    one = batch[:1]
    rounds = max(1, min(config.rounds, config.repeats))
    per_round = [config.repeats // rounds + (i < config.repeats % rounds) for i in range(rounds)]
    batches = config.batch_repeats if batch_repeats is None else batch_repeats
    per_round_batch = [batches // rounds + (i < batches % rounds) for i in range(rounds)]
    for index, (count, batch_count) in enumerate(zip(per_round, per_round_batch)):
        for variant in variants:
            on_step(f"round {index + 1}/{rounds}: {variant.name}, {variant.threads} thread(s)")
            variant.samples += _times(lambda run=variant.run: run(one), count, config.warmup)
            if batch_count:
                warm = 0 if variant.batch_samples else 1  # the batch shape's first run, once
                variant.batch_samples += _times(lambda run=variant.run: run(batch), batch_count, warm)
    return [Latency(v.name, v.runtime, v.precision, v.computes_in, v.threads, float(np.median(v.samples)),
                    float(np.percentile(v.samples, 90)),
                    len(batch) / (float(np.median(v.batch_samples)) / 1e3) if v.batch_samples else None,
                    [round(s, 3) for s in v.samples], key=v.key, int8_kernel=v.int8_kernel, canary=v.canary)
            for v in variants]


def torch_module(meta: Sidecar):
    """The PyTorch module for ``meta``'s architecture, random weights (speed does not depend on them)."""
    from export.registry import build

    return build(meta.arch, random_weights=True, seed=meta.seed or 0).module


@dataclass(frozen=True)
class VariantSpec:
    """One runtime x precision (x OpenVINO hint, x INT8 kernel) to load, for speed and for agreement."""

    path: Path
    runtime: str
    hint: str | None = None  # OpenVINO's precision hint
    kernel: str | None = None  # ONNX Runtime's INT8 kernel when forced ("fast"): measured, never chosen

    @property
    def key(self) -> str:
        return f"{self.runtime}/{Sidecar.load(sidecar_path(self.path)).precision}/{self.hint or '-'}/{self.kernel or 'auto'}"

    def name(self, classifier: Classifier) -> str:
        precision, engine = classifier.sidecar.precision, classifier.engine
        if self.runtime == "openvino":
            hint = "default hint" if self.hint == "auto" else f"{self.hint} hint"
            computes = getattr(engine, "precision", "f32")
            return f"openvino {precision} ({hint} → {computes})"
        return f"onnxruntime {precision}" + (f" ({engine.int8_kernel}, forced)" if self.kernel else "")


def variant_specs(fp32: Path, int8: Path) -> list[VariantSpec]:
    """Every runtime x precision measured. Where ONNX Runtime's default INT8 kernel saturates (x86-64
    without VNNI) it is measured too, forced, to show what the exact kernel costs; it is never chosen."""
    specs = [VariantSpec(fp32, "onnxruntime"), VariantSpec(int8, "onnxruntime")]
    if cpu_info().int8_saturates:
        specs.append(VariantSpec(int8, "onnxruntime", kernel="fast"))
    specs += [VariantSpec(fp32, "openvino", "auto"), VariantSpec(fp32, "openvino", "f32"),
              VariantSpec(int8, "openvino", "auto"), VariantSpec(int8, "openvino", "f32")]
    return specs


def load_variant(spec: VariantSpec, threads: int) -> Classifier:
    """The classifier of ``spec`` with its canary run on this CPU and recorded, never refused (the
    bench measures what fails too, and says so). A forced kernel is kept as forced: its canary
    result is recorded without the switch to the precise kernel a runner would make."""
    classifier = Classifier(spec.path, threads=threads, runtime=spec.runtime, precision_hint=spec.hint,
                            int8_kernel=spec.kernel or "auto", canary=False)
    if canary_path(spec.path).is_file():
        classifier.canary = classifier.run_canary(Canary.load(canary_path(spec.path)))
    return classifier


def measure_inference(fp32: Path, int8: Path, threads: int, config: BenchConfig, on_step: Step = _noop) -> list[Latency]:
    """PyTorch eager fp32 (the reference), then ONNX Runtime and OpenVINO on the fp32 and INT8 files."""
    meta = Sidecar.load(sidecar_path(fp32))
    batch = _photo_batch(meta.preprocessing, BATCH)
    variants: list[_Variant] = []
    try:
        import torch

        on_step(f"PyTorch eager fp32, {threads} thread(s)")
        torch.set_num_threads(threads)
        module = torch_module(meta)

        def run_torch(x: np.ndarray) -> object:
            with torch.inference_mode():
                return module(torch.from_numpy(x))

        variants.append(_Variant("pytorch eager fp32", "pytorch", "fp32", "fp32", threads, run_torch))
    except ImportError:
        on_step("PyTorch is not installed: the reference is not measured")
    for spec in variant_specs(fp32, int8):
        try:
            classifier = load_variant(spec, threads)
        except Exception as exc:  # e.g. OpenVINO missing: measure the others
            on_step(f"{spec.runtime} cannot load {spec.path.name}: {exc}")
            continue
        variants.append(_Variant(spec.name(classifier), spec.runtime, classifier.sidecar.precision,
                                 classifier.engine.computes_in, threads, classifier.infer, key=spec.key,
                                 int8_kernel=classifier.engine.int8_kernel, canary=classifier.canary.status))
    results = _measure_in_rounds(variants, batch, config, on_step)
    reference = next((r for r in results if r.runtime == "pytorch"), None)
    for result in results:
        if reference:
            result.vs_pytorch = result.median_ms / reference.median_ms
    return results


def measure_threads(fp32: Path, int8: Path, chosen: int, config: BenchConfig, on_step: Step = _noop) -> list[dict[str, Any]]:
    """ONNX Runtime batch-1 latency with the chosen thread count against the alternatives."""
    cpus = os.cpu_count() or 1
    counts = sorted({1, chosen, cpus, 2 * cpus} if not config.quick else {1, chosen})
    meta = Sidecar.load(sidecar_path(fp32))
    variants = []
    for path in (fp32, int8):
        for count in counts:
            classifier = Classifier(path, threads=count)
            precision = classifier.sidecar.precision
            variants.append(_Variant(f"onnxruntime {precision}", "onnxruntime", precision, precision, count,
                                     classifier.infer))
    results = _measure_in_rounds(variants, _photo_batch(meta.preprocessing, 1), config, on_step, batch_repeats=0)
    return [{"runtime": "onnxruntime", "precision": r.precision, "threads": r.threads, "chosen": r.threads == chosen,
             "median_ms": r.median_ms, "p90_ms": r.p90_ms} for r in results]


# --- cold start and memory ---------------------------------------------------------------------

# Run in a fresh interpreter: import a handler module, invoke it once, report. The parent times
# the whole thing, from before the process starts to the line after the first prediction.
_CHILD = r"""
import time
started = time.perf_counter()
import base64, importlib, json, resource, sys
module = importlib.import_module(sys.argv[1])
imported = time.perf_counter()

class Context:
    function_name = "bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bench"
    memory_limit_in_mb = 3008
    aws_request_id = "bench-1"
    log_group_name = log_stream_name = "bench"

    def get_remaining_time_in_millis(self):
        return 900000

with open(sys.argv[2], "rb") as fh:
    event = {"image": base64.b64encode(fh.read()).decode()}
response = module.handler(event, Context())
done = time.perf_counter()
body = json.loads(response["body"])
canary = getattr(getattr(getattr(module, "SERVICE", None), "classifier", None), "canary", None)
try:  # VmHWM: this program's peak. ru_maxrss would include the parent's, which exec does not reset.
    with open("/proc/self/status") as fh:
        peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024.0
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print("BENCH_RESULT " + json.dumps({
    "status": response["statusCode"], "top1": (body.get("predictions") or [{}])[0].get("label"),
    "import_ms": (imported - started) * 1e3, "first_invoke_ms": (done - imported) * 1e3, "peak_rss_mb": peak,
    "canary_ms": canary.ms if canary is not None else None, "canary": canary.status if canary is not None else None,
}), flush=True)
"""


def _cold_once(module: str, image: Path, env: dict[str, str], timeout: float = 300) -> dict[str, Any]:
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", _CHILD, module, str(image)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    result = None
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line.split(" ", 1)[1])
            result["wall_ms"] = (time.perf_counter() - start) * 1e3
            break
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise RuntimeError(f"{module} did not finish within {timeout:.0f} s") from None
    if result is None or result["status"] != 200:
        raise RuntimeError(f"{module} failed: {(stderr or '').strip().splitlines()[-1:] or result}")
    return result


def measure_cold_starts(fp32: Path, int8: Path, config: BenchConfig, on_step: Step = _noop) -> list[dict[str, Any]]:
    """Fresh process -> first prediction, and peak RSS after it, for each handler (median of runs)."""
    meta = Sidecar.load(sidecar_path(fp32))
    image = config.cache / "chelsea.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(sample_photos.upscaled_jpeg(sample_photos.by_name("chelsea"), megapixels=0.3))
    handlers: list[tuple[str, str, dict[str, str], str]] = []
    try:
        import torch

        weights = config.cache / f"{meta.arch}-state-dict.pth"
        if not weights.is_file():
            on_step(f"saving a {meta.arch} state dict for the PyTorch handler")
            torch.save(torch_module(meta).state_dict(), weights)
        build = f"torch {torch.__version__}, " + (f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build")
        handlers.append(("pytorch handler fp32", "local.torch_handler",
                         {"TORCH_ARCH": meta.arch, "TORCH_WEIGHTS": str(weights.resolve())}, build))
    except ImportError:
        on_step("PyTorch is not installed: its handler's cold start is not measured")
    for path in (fp32, int8):
        precision = Sidecar.load(sidecar_path(path)).precision
        # MODEL_VERIFY=size as in the image, which verified the model's sha256 when it was built.
        handlers.append((f"onnx handler {precision}", "lambda_onnx.handler",
                         {"MODEL_PATH": str(Path(path).resolve()), "MODEL_VERIFY": "size"},
                         f"onnxruntime {importlib.metadata.version('onnxruntime')}"))
    rows = []
    for name, module, env, build in handlers:
        runs = []
        for i in range(config.cold_runs):
            on_step(f"cold start {i + 1}/{config.cold_runs}: {name} ({module})")
            runs.append(_cold_once(module, image, env))
        rows.append({"handler": name, "module": module, "build": build, "runs": len(runs),
                     "median_ms": float(np.median([r["wall_ms"] for r in runs])),
                     "import_ms": float(np.median([r["import_ms"] for r in runs])),
                     "first_invoke_ms": float(np.median([r["first_invoke_ms"] for r in runs])),
                     "peak_rss_mb": float(max(r["peak_rss_mb"] for r in runs)), "top1": runs[-1]["top1"],
                     "canary": runs[-1].get("canary"),
                     "canary_ms": float(np.median([r["canary_ms"] for r in runs])) if runs[-1].get("canary_ms") is not None else None,
                     "samples_ms": [round(r["wall_ms"], 1) for r in runs]})
    return rows


# --- preprocessing -----------------------------------------------------------------------------


def measure_preprocess(params, config: BenchConfig, on_step: Step = _noop) -> list[dict[str, Any]]:
    """Decode + preprocess of a 12 MP phone-sized JPEG (fast and reference path) and a 0.3 MP one."""
    photo = sample_photos.by_name("chelsea")
    rows = []
    for megapixels, fast in ((sample_photos.PHONE_MEGAPIXELS, True), (sample_photos.PHONE_MEGAPIXELS, False), (0.3, True)):
        data = sample_photos.upscaled_jpeg(photo, megapixels=megapixels)
        on_step(f"preprocessing a {megapixels:g} MP JPEG ({'fast path allowed' if fast else 'reference path'})")
        prepared, decoded = prepare(data, params, fast=fast)
        samples = _times(lambda: prepare(data, params, fast=fast), max(3, config.repeats // 3), 1)
        rows.append({"image": f"{megapixels:g} MP JPEG", "width": decoded.width, "height": decoded.height,
                     "bytes": len(data), "fast_allowed": fast, "fast_path": prepared.fast_path,
                     "median_ms": float(np.median(samples)), "p90_ms": float(np.percentile(samples, 90))})
    return rows


# --- compute floor -----------------------------------------------------------------------------


def model_gflop(meta: Sidecar) -> tuple[float, str]:
    """FLOPs of one image through ``meta``'s architecture, counted by torch (2 per multiply-add)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        module = torch_module(meta)
        size = meta.preprocessing.crop_size
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            module(torch.zeros(1, 3, size, size))
        return counter.get_total_flops() / 1e9, "torch.utils.flop_counter (2 FLOP per multiply-add)"
    except ImportError:
        if meta.arch == "resnet50":
            return RESNET50_GFLOP, "the issue's 8.2 GFLOP per ResNet-50 image"
        raise


def gemm_gflops(threads: int, size: int = 4096, repeats: int = 4) -> dict[str, float]:
    """This machine's fp32 matrix-multiply rate with ``threads`` threads: NumPy's BLAS and ORT's MLAS."""
    rates = {}
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    flop = 2.0 * size**3
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=threads):
            rates["numpy"] = flop / min(_times(lambda: a @ b, repeats, 1)) / 1e6
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                                  [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "ab"],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rates["onnxruntime"] = flop / min(_times(lambda: session.run(None, {"a": a, "b": b}), repeats, 1)) / 1e6
    except ImportError:
        pass
    return rates


def int8_gemm_gops(threads: int, precise: bool, size: int = 2048, repeats: int = 4) -> float:
    """This machine's INT8 matrix-multiply rate (GOP/s) through ONNX Runtime's QLinearMatMul, uint8
    activations x int8 constant weights as the QDQ models hold them, with the precise U8U8 kernel
    (``session.x64quantprecision``) or the default one: the rate of the kernel a runner really uses."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    constants = [numpy_helper.from_array(rng.integers(-127, 127, (size, size), dtype=np.int8), "b")] + [
        numpy_helper.from_array(np.array(value, dtype=dtype), name)
        for name, value, dtype in (("a_scale", 0.02, np.float32), ("a_zero", 128, np.uint8), ("b_scale", 0.01, np.float32),
                                   ("b_zero", 0, np.int8), ("y_scale", 0.5, np.float32), ("y_zero", 128, np.uint8))]
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zero", "b", "b_scale", "b_zero", "y_scale", "y_zero"], ["y"])
    graph = helper.make_graph([node], "qgemm", [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [size, size])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if precise:
        options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 255, (size, size), dtype=np.uint8)
    return 2.0 * size**3 / min(_times(lambda: session.run(None, {"a": a}), repeats, 1)) / 1e6  # samples are in ms


def compute_floor(meta: Sidecar, threads: int, config: BenchConfig, on_step: Step = _noop) -> dict[str, Any]:
    """The model's FLOPs over this machine's measured GEMM rates: the fastest an inference could be.

    INT8: with VNNI a quarter of the fp32 floor (VNNI does four int8 multiply-adds where an fp32 FMA
    does one, per lane); without VNNI (or on arm64) that ratio does not hold, so the floor is the
    FLOPs over the measured INT8 GEMM rate of the kernel ONNX Runtime really uses here.
    """
    on_step(f"measuring the fp32 GEMM rate with {threads} thread(s) and counting {meta.arch}'s FLOPs")
    gflop, source = model_gflop(meta)
    # 4096: big enough that two threads reach their steady rate (at 2048 they did not, here).
    rates = gemm_gflops(threads, size=512 if config.quick else 4096, repeats=2 if config.quick else 4)
    best = max(rates.values())
    fp32_ms = gflop / best * 1e3
    floor = {"arch": meta.arch, "gflop_per_image": gflop, "gflop_source": source, "gemm_gflops": rates,
             "gemm_best_gflops": best, "threads": threads, "fp32_floor_ms": fp32_ms}
    info = cpu_info()
    if info.vnni:
        floor.update(int8_floor_ms=fp32_ms / INT8_FLOOR_DIVISOR, int8_floor_rule=f"fp32 floor / {INT8_FLOOR_DIVISOR} (VNNI)")
        return floor
    precise = use_precise_int8(int8_kernel_choice())
    kernel = int8_kernel_name(precise)
    on_step(f"measuring the INT8 GEMM rate of the {kernel} kernel (no VNNI here: the quarter rule does not hold)")
    size, repeats = (512, 2) if config.quick else (2048, 4)
    gops = {int8_kernel_name(p): int8_gemm_gops(threads, p, size, repeats) for p in dict.fromkeys((precise, not precise))}
    floor.update(int8_gemm_gops=gops, int8_floor_ms=gflop / gops[kernel] * 1e3,
                 int8_floor_rule=f"FLOPs / the measured INT8 GEMM rate of ONNX Runtime's {kernel} kernel "
                                 f"({gops[kernel]:.0f} GOP/s, QLinearMatMul {size}²; no VNNI on this CPU)")
    return floor


# --- payload -----------------------------------------------------------------------------------


def _requirement_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0])
    return names


def installed_size(names: Sequence[str]) -> tuple[int, dict[str, int]]:
    """Bytes the distributions ``names`` and their dependencies occupy in this environment.

    Read from each distribution's RECORD (what pip installed), following ``Requires-Dist`` with
    its markers evaluated here: no download, so it works offline; the Lambda image installs the
    same wheels for its own Python, so expect a few per cent of difference.
    """
    from packaging.requirements import Requirement

    seen: dict[str, int] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            seen[key] = 0
            continue
        total = 0
        for file in dist.files or []:
            try:
                total += file.locate().stat().st_size
            except OSError:
                continue
        seen[key] = total
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return sum(seen.values()), dict(sorted(seen.items(), key=lambda kv: -kv[1]))


def measure_payload(fp32: Path, int8: Path) -> list[dict[str, Any]]:
    """Runtime packages + the core's code + model (and sidecar), for each precision and runtime."""
    code = sum(p.stat().st_size for p in (ROOT / "lambda_onnx").glob("*.py")) + LAMBDA_REQUIREMENTS.stat().st_size
    requirements = _requirement_names(LAMBDA_REQUIREMENTS)
    ort_bytes, ort_packages = installed_size(requirements)
    with_openvino = ["openvino" if name == "onnxruntime" else name for name in requirements]
    ov_bytes, ov_packages = installed_size(with_openvino)
    rows = []
    for runtime, packages_bytes, packages in (("onnxruntime", ort_bytes, ort_packages), ("openvino", ov_bytes, ov_packages)):
        for path in (fp32, int8):
            model = Path(path).stat().st_size + sidecar_path(path).stat().st_size
            rows.append({"runtime": runtime, "precision": Sidecar.load(sidecar_path(path)).precision,
                         "packages_mb": packages_bytes / 1e6, "code_mb": code / 1e6, "model_mb": model / 1e6,
                         "total_mb": (packages_bytes + code + model) / 1e6,
                         "largest_packages_mb": {k: round(v / 1e6, 1) for k, v in list(packages.items())[:6]}})
    return rows


# --- emulator ----------------------------------------------------------------------------------


def measure_emulator(fp32: Path, config: BenchConfig, on_step: Step = _noop) -> dict[str, Any]:
    """HOOK (emulator vs in-process): the same image through the Lambda emulator and in-process.

    The emulator (:mod:`local.emulator`, built in parallel with this benchmark) is reached through
    the one client interface (:class:`local.backends.EmulatorBackend`). The in-process side uses
    the thread count the emulated function chose (Lambda's memory size decides it), so the
    difference is the invoke path, not the threads. Where the emulator is missing or cannot start
    (no ``aws-lambda-rie`` binary), the report says "not measured" and why.
    """
    try:
        from local.backends import EmulatorBackend, InProcessBackend
        from local.emulator import Emulator
    except ImportError as exc:
        return {"measured": False, "reason": f"not yet measured: the emulator is not available ({exc})"}
    image = sample_photos.upscaled_jpeg(sample_photos.by_name("chelsea"), megapixels=0.3)
    rounds = max(3, config.repeats // 3)
    try:
        on_step("starting the Lambda emulator (its first invoke is the function's cold start)")
        started = time.perf_counter()
        backend = EmulatorBackend(Emulator(fp32).start(), name="emulator")
        try:
            first = backend.classify(image)
            cold_ms = (time.perf_counter() - started) * 1e3
            on_step(f"emulator warm round trips ×{rounds}")
            warm = [backend.classify(image) for _ in range(rounds)]
        finally:
            backend.close()
    except Exception as exc:  # no emulator binary, a port problem, …: say so, measure the rest
        return {"measured": False, "reason": f"the emulator could not run: {exc}"}
    threads = int(warm[-1].model.get("threads") or 1)
    on_step(f"in-process round trips ×{rounds} with the emulated function's {threads} thread(s)")
    local_backend = InProcessBackend(Classifier(fp32, threads=threads))
    local_runs = [local_backend.classify(image) for _ in range(rounds + 1)][1:]
    return {"measured": True, "model": str(fp32), "threads": threads, "memory_mb": warm[-1].metrics.get("memory_mb"),
            "cold_start_end_to_end_ms": cold_ms, "first_round_trip_ms": first.round_trip_ms,
            "first_was_cold": first.cold_start, "init_ms": first.metrics.get("init_ms"),
            "warm_round_trip_median_ms": float(np.median([r.round_trip_ms for r in warm])),
            "warm_handler_median_ms": float(np.median([r.server_ms for r in warm])),
            "in_process_median_ms": float(np.median([r.round_trip_ms for r in local_runs])),
            "in_process_handler_median_ms": float(np.median([r.server_ms for r in local_runs]))}


# --- agreement on real photos ------------------------------------------------------------------


def measure_agreement(fp32: Path | None, int8: Path | None, threads: int, on_step: Step = _noop) -> dict[str, Any]:
    """Top-1 of every runtime × precision against ONNX Runtime fp32 on the EVALUATION photos."""
    if fp32 is None or int8 is None:
        return {"measured": False, "reason": "no real-weights model (python -m export --arch efficientnet_lite0 --int8)"}
    meta = Sidecar.load(sidecar_path(fp32))
    if meta.random_weights:
        return {"measured": False, "reason": f"{fp32} has random weights: agreement would prove nothing"}
    on_step(f"top-1 agreement on real photos with {meta.label}")
    photos = sample_photos.available()
    batch = np.concatenate([prepare(p.read(), meta.preprocessing)[0].tensor for p in photos])
    rows, reference = [], None
    for spec in variant_specs(fp32, int8):
        try:
            classifier = load_variant(spec, threads)
        except Exception as exc:
            on_step(f"{spec.runtime} cannot load {spec.path.name}: {exc}")
            continue
        top1 = np.concatenate([classifier.infer(x[None]) for x in batch]).argmax(axis=1)
        reference = top1 if reference is None else reference
        labels = [classifier.sidecar.categories[i] for i in top1]
        rows.append({"name": spec.name(classifier), "key": spec.key, "int8_kernel": classifier.engine.int8_kernel,
                     "canary": classifier.canary.status,
                     "top1_same_as_fp32": int(np.sum(top1 == reference)), "photos": len(photos),
                     "correct": sum(label in photo.expected for label, photo in zip(labels, photos)),
                     "differs_on": [p.name for p, a, b in zip(photos, top1, reference) if a != b]})
    return {"measured": True, "model": meta.label, "photos": [p.name for p in photos], "variants": rows}


def judge_parity(report: BenchReport) -> None:
    """Mark which variants may be chosen as the fastest here: only those whose parity holds on
    this CPU (their canary passes on the benchmarked model, and INT8 keeps fp32's top-1 on every real
    photo of the agreement model), computing in fp32 or int8 (bf16 is opt-in). Say why for the others."""
    agreement = {row.get("key"): row for row in report.accuracy.get("variants", [])}
    for result in report.inference:
        if result.runtime == "pytorch":
            result.eligible, result.why_not = False, "the reference, not a serving runtime"
            continue
        row = agreement.get(result.key)
        if result.computes_in not in ("fp32", "int8"):
            result.eligible, result.why_not = False, f"computes in {result.computes_in}: opt-in, changes the numbers by design"
        elif result.canary == "failed":
            result.eligible, result.why_not = False, f"its canary fails on this CPU ({result.int8_kernel or result.computes_in})"
        elif row is not None and row["canary"] == "failed":
            result.eligible, result.why_not = False, f"its canary fails on this CPU with {report.accuracy['model']}"
        elif row is not None and result.precision == "int8" and row["top1_same_as_fp32"] < row["photos"]:
            result.eligible, result.why_not = False, (f"top-1 differs from fp32 on {row['photos'] - row['top1_same_as_fp32']} of "
                                                      f"{row['photos']} real photos here ({', '.join(row['differs_on'])})")


def choose_fastest(report: BenchReport) -> None:
    """The fastest eligible variant (for ``local serve --runtime auto``), and every faster one skipped, with why."""
    judge_parity(report)
    candidates = [r for r in report.inference if r.runtime != "pytorch"]
    eligible = [r for r in candidates if r.eligible]
    if not eligible:
        report.fastest = "none: no runtime x precision passed its parity checks on this CPU"
        return
    best = min(eligible, key=lambda r: r.median_ms)
    report.fastest = f"{best.name}: {best.median_ms:.1f} ms batch-1 median on this machine"
    report.fastest_choice = {"runtime": best.runtime, "precision": best.precision, "median_ms": round(best.median_ms, 2),
                             "int8_kernel": best.int8_kernel}
    report.skipped = [{"name": r.name, "median_ms": round(r.median_ms, 2), "why": r.why_not}
                      for r in sorted(candidates, key=lambda r: r.median_ms) if r.median_ms < best.median_ms and not r.eligible]
    if report.skipped:
        report.fastest += "; faster but skipped: " + "; ".join(f"{x['name']} ({x['median_ms']:.1f} ms): {x['why']}"
                                                                for x in report.skipped)


# --- the run -----------------------------------------------------------------------------------


def _target(name: str, value: float | None, limit: float, unit: str = "×") -> dict[str, Any]:
    return {"target": name, "value": value, "limit": limit, "unit": unit,
            "met": None if value is None else bool(value <= limit)}


def evaluate_targets(report: BenchReport) -> list[dict[str, Any]]:
    """The issue's targets, met or not, from this run's numbers."""
    by = {r.name: r for r in report.inference}
    torch_ms = by["pytorch eager fp32"].median_ms if "pytorch eager fp32" in by else None
    ort32 = by.get("onnxruntime fp32")
    ort8 = by.get("onnxruntime int8")
    best8 = min((r for r in report.inference if r.precision == "int8" and r.eligible), key=lambda r: r.median_ms, default=None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    cold = {row["handler"]: row for row in report.cold_start}
    torch_cold = cold.get("pytorch handler fp32", {}).get("median_ms")
    pre = next((row for row in report.preprocess if row["fast_allowed"] and row["image"].startswith("12")), None)
    payload8 = next((row for row in report.payload if row["runtime"] == "onnxruntime" and row["precision"] == "int8"), None)
    agreement = next((row for row in report.accuracy.get("variants", []) if row["name"] == "onnxruntime int8"), None)
    targets = [
        _target("ONNX Runtime fp32 latency / PyTorch eager", ratio(ort32 and ort32.median_ms, torch_ms), TARGET_ORT_FP32_VS_TORCH),
        _target("ONNX Runtime INT8 latency / PyTorch eager", ratio(ort8 and ort8.median_ms, torch_ms), TARGET_INT8_VS_TORCH),
        _target(f"fastest INT8 ({best8.name if best8 else '-'}) latency / PyTorch eager",
                ratio(best8 and best8.median_ms, torch_ms), TARGET_INT8_VS_TORCH),
        _target("ONNX Runtime INT8 latency / INT8 compute floor", ratio(ort8 and ort8.median_ms, report.floor.get("int8_floor_ms")),
                TARGET_INT8_VS_FLOOR),
        _target("ONNX handler fp32 cold start / PyTorch handler", ratio(cold.get("onnx handler fp32", {}).get("median_ms"), torch_cold),
                TARGET_COLD_START_VS_TORCH),
        _target("ONNX handler INT8 cold start / PyTorch handler", ratio(cold.get("onnx handler int8", {}).get("median_ms"), torch_cold),
                TARGET_COLD_START_VS_TORCH),
        _target("12 MP JPEG decode + preprocess / ONNX Runtime INT8 inference",
                ratio(pre and pre["median_ms"], ort8 and ort8.median_ms), TARGET_PREPROCESS_VS_INT8),
        _target("ONNX handler fp32 peak RSS", cold.get("onnx handler fp32", {}).get("peak_rss_mb"), TARGET_RSS_FP32_MB, "MB"),
        _target("ONNX handler INT8 peak RSS", cold.get("onnx handler int8", {}).get("peak_rss_mb"), TARGET_RSS_INT8_MB, "MB"),
        _target("INT8 runtime payload (ONNX Runtime)", payload8 and payload8["total_mb"], TARGET_PAYLOAD_INT8_MB, "MB"),
    ]
    differing = None if agreement is None else agreement["photos"] - agreement["top1_same_as_fp32"]
    targets.append({"target": f"INT8 top-1 identical to fp32 on every real photo ({report.accuracy.get('model', '-')})",
                    "value": differing, "limit": 0, "unit": "photos differing",
                    "met": None if differing is None else differing == 0})
    return targets


def run_bench(config: BenchConfig, on_step: Step = _noop) -> BenchReport:
    """Measure everything the issue lists, in one process (plus fresh ones for cold starts)."""
    config.out = Path(config.out)
    config.cache.mkdir(parents=True, exist_ok=True)
    fp32, int8, accuracy_fp32, accuracy_int8 = ensure_models(config, on_step)
    threads = config.threads or default_threads()
    meta, meta8 = Sidecar.load(sidecar_path(fp32)), Sidecar.load(sidecar_path(int8))
    settings = {k: v for k, v in asdict(config).items() if k not in ("model", "int8", "accuracy_model", "out")}
    report = BenchReport(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        machine=machine(),
        config={**settings, "threads": threads, "batch": BATCH},
        models={"fp32": {"path": str(fp32), "label": meta.label, "bytes": meta.onnx_bytes},
                "int8": {"path": str(int8), "label": meta8.label, "bytes": meta8.onnx_bytes},
                "accuracy": {"fp32": str(accuracy_fp32) if accuracy_fp32 else None,
                             "int8": str(accuracy_int8) if accuracy_int8 else None}},
    )
    report.inference = measure_inference(fp32, int8, threads, config, on_step)
    report.floor = compute_floor(meta, threads, config, on_step)
    for result in report.inference:
        floor = report.floor["int8_floor_ms"] if result.precision == "int8" else report.floor["fp32_floor_ms"]
        result.floor_fraction = floor / result.median_ms
    report.threads = measure_threads(fp32, int8, threads, config, on_step)
    report.preprocess = measure_preprocess(meta.preprocessing, config, on_step)
    report.cold_start = measure_cold_starts(fp32, int8, config, on_step)
    on_step("measuring the runtime payload (installed packages + code + model)")
    report.payload = measure_payload(fp32, int8)
    report.emulator = measure_emulator(fp32, config, on_step)
    report.accuracy = measure_agreement(accuracy_fp32, accuracy_int8, threads, on_step)
    choose_fastest(report)
    report.targets = evaluate_targets(report)
    return report


# --- outputs -----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(report: BenchReport) -> str:
    """The report as Markdown tables (what the README shows)."""
    m = report.machine
    lines = [f"# Benchmark ({report.created})", "",
             f"Machine: {describe_machine(m)}. PyTorch: {m.get('torch_build')}. "
             f"Threads: {report.config['threads']} (resources.default_threads()). 1-minute load average before the run: "
             f"{m.get('load_average_before')} (other work on the machine inflates every number).",
             f"Models: {report.models['fp32']['label']} ({report.models['fp32']['bytes'] / 1e6:.1f} MB) and "
             f"{report.models['int8']['label']} ({report.models['int8']['bytes'] / 1e6:.1f} MB).", "",
             "## Inference", "",
             f"| runtime × precision | batch-1 median ms | p90 ms | batch-{BATCH} images/s | × PyTorch eager | share of compute floor "
             "| INT8 kernel | canary | parity holds here |",
             "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in report.inference:
        parity = "reference" if r.runtime == "pytorch" else ("yes" if r.eligible else f"**no**: {r.why_not}")
        lines.append(f"| {r.name} | {r.median_ms:.1f} | {r.p90_ms:.1f} | {_fmt(r.batch_images_per_s)} | "
                     f"{_fmt(r.vs_pytorch, 2)} | {_fmt(r.floor_fraction and r.floor_fraction * 100, 0)} % | "
                     f"{r.int8_kernel or '–'} | {r.canary or '–'} | {parity} |")
    f = report.floor
    lines += ["", f"Compute floor: {f['gflop_per_image']:.2f} GFLOP per image ({f['gflop_source']}) over the measured fp32 GEMM "
              f"rate {f['gemm_best_gflops']:.0f} GFLOP/s ({', '.join(f'{k} {v:.0f}' for k, v in f['gemm_gflops'].items())}; "
              f"{f['threads']} threads) = **{f['fp32_floor_ms']:.1f} ms** fp32, **{f['int8_floor_ms']:.1f} ms** INT8 "
              f"({f['int8_floor_rule']}).", "", f"Fastest runtime × precision here: **{report.fastest}**.", "",
              "## Threads (ONNX Runtime, batch 1)", "", "| precision | threads | median ms | p90 ms |", "|---|---:|---:|---:|"]
    for row in report.threads:
        lines.append(f"| {row['precision']} | {row['threads']}{' (chosen)' if row['chosen'] else ''} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} |")
    lines += ["", "## Cold start (fresh process → first prediction) and memory", "",
              "| handler | build | median ms | import ms (canary ms) | first invoke ms | peak RSS MB |", "|---|---|---:|---:|---:|---:|"]
    for row in report.cold_start:
        canary = f" ({row['canary_ms']:.0f}, {row['canary']})" if row.get("canary_ms") is not None else ""
        lines.append(f"| {row['handler']} (`{row['module']}`) | {row['build']} | {row['median_ms']:.0f} | {row['import_ms']:.0f}{canary} | "
                     f"{row['first_invoke_ms']:.0f} | {row['peak_rss_mb']:.0f} |")
    lines += ["", "## Preprocessing (decode + resize + crop + normalise)", "",
              "| image | size | path | median ms | p90 ms |", "|---|---|---|---:|---:|"]
    for row in report.preprocess:
        path = "fast" if row["fast_path"] else ("reference (too small for the fast path)" if row["fast_allowed"] else "reference")
        lines.append(f"| {row['image']} | {row['width']}×{row['height']}, {row['bytes'] / 1e6:.2f} MB | {path} | "
                     f"{row['median_ms']:.1f} | {row['p90_ms']:.1f} |")
    lines += ["", "## Runtime payload (installed runtime packages + `lambda_onnx/` + model)", "",
              "| runtime | precision | packages MB | code MB | model MB | total MB |", "|---|---|---:|---:|---:|---:|"]
    for row in report.payload:
        lines.append(f"| {row['runtime']} | {row['precision']} | {row['packages_mb']:.0f} | {row['code_mb']:.2f} | "
                     f"{row['model_mb']:.1f} | {row['total_mb']:.0f} |")
    e = report.emulator
    lines += ["", "## Emulator vs in-process (same image)", ""]
    if e.get("measured"):
        lines += ["| path | round trip median ms | inside the handler ms |", "|---|---:|---:|",
                  f"| emulator, warm ({e['threads']} thread(s), {e['memory_mb']} MB) | {e['warm_round_trip_median_ms']:.1f} | "
                  f"{e['warm_handler_median_ms']:.1f} |",
                  f"| in-process, same threads | {e['in_process_median_ms']:.1f} | {e['in_process_handler_median_ms']:.1f} |",
                  "", f"Emulator cold start end to end (start → first prediction): {e['cold_start_end_to_end_ms']:.0f} ms "
                  f"(first round trip {e['first_round_trip_ms']:.0f} ms, handler init {_fmt(e['init_ms'], 0)} ms)."]
    else:
        lines += [f"Not measured: {e.get('reason')}."]
    a = report.accuracy
    lines += ["", "## Top-1 agreement with ONNX Runtime fp32 on real photos", ""]
    if a.get("measured"):
        lines += [f"{a['model']}, {len(a['photos'])} photos never used for calibration.", "",
                  "| runtime × precision | top-1 same as fp32 | correct | differs on |", "|---|---:|---:|---|"]
        for row in a["variants"]:
            lines.append(f"| {row['name']} | {row['top1_same_as_fp32']}/{row['photos']} | {row['correct']}/{row['photos']} | "
                         f"{', '.join(row['differs_on']) or '–'} |")
    else:
        lines += [f"Not measured: {a.get('reason')}."]
    lines += ["", "## Targets", "", "| target | value | limit | met |", "|---|---:|---:|---|"]
    for t in report.targets:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "**not met**")
        value = "–" if t["value"] is None else (f"{t['value']:.2f}" if t["unit"] == "×" else f"{t['value']:.0f} {t['unit']}")
        limit = f"{t['limit']:.2f}" if t["unit"] == "×" else f"{t['limit']} {t['unit']}"
        lines.append(f"| {t['target']} | {value} | {limit} | {met} |")
    return "\n".join(lines) + "\n"


def chart(report: BenchReport, path: Path) -> None:
    """A PNG: batch-1 latency per runtime × precision (with the compute floors), cold start, peak RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.5), gridspec_kw={"width_ratios": [3, 1.3, 1.3]})
    names = [r.name for r in report.inference]
    medians = [r.median_ms for r in report.inference]
    errors = [max(0.0, r.p90_ms - r.median_ms) for r in report.inference]
    colours = ["#7f7f7f" if r.runtime == "pytorch" else ("#1f77b4" if r.runtime == "onnxruntime" else "#ff7f0e")
               for r in report.inference]
    ax = axes[0]
    ax.barh(names, medians, xerr=[[0] * len(errors), errors], color=colours)
    for y, (value, error) in enumerate(zip(medians, errors)):
        ax.text(value + error, y, f"  {value:.1f}", va="center", fontsize=8)
    if report.floor:
        ax.axvline(report.floor["fp32_floor_ms"], color="black", linestyle="--", linewidth=1, label="fp32 compute floor")
        ax.axvline(report.floor["int8_floor_ms"], color="green", linestyle=":", linewidth=1, label="INT8 compute floor")
        ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("batch-1 latency, ms (median; whisker to p90)")
    ax.set_title(f"{report.models['fp32']['label'].split(' (')[0]} inference")
    cold = report.cold_start
    axes[1].bar([c["handler"].replace(" handler", "\n") for c in cold], [c["median_ms"] / 1e3 for c in cold], color="#2ca02c")
    axes[1].set_ylabel("s")
    axes[1].set_title("cold start to first prediction")
    axes[2].bar([c["handler"].replace(" handler", "\n") for c in cold], [c["peak_rss_mb"] for c in cold], color="#9467bd")
    axes[2].set_ylabel("MB")
    axes[2].set_title("handler peak RSS")
    for axis in axes[1:]:
        axis.tick_params(axis="x", labelsize=8)
    fig.suptitle(describe_machine(report.machine), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: BenchReport, out: Path) -> dict[str, Path]:
    """``bench.md``, ``bench.json`` and ``bench.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "bench.md", "json": out / "bench.json", "png": out / "bench.png"}
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    chart(report, paths["png"])
    return paths


def ratios_text(report: BenchReport) -> list[str]:
    """What the CLI prints at the end: ratios against PyTorch eager, targets, the fastest variant."""
    lines = [f"machine: {describe_machine(report.machine)}; PyTorch {report.machine.get('torch_build')}"]
    for r in report.inference:
        lines.append(f"  {r.name:<42} {r.median_ms:7.1f} ms  ({_fmt(r.vs_pytorch, 2)} × PyTorch eager)")
    lines.append("targets:")
    for t in report.targets:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT MET")
        value = "–" if t["value"] is None else (f"{t['value']:.2f}" if t["unit"] == "×" else f"{t['value']:.0f} {t['unit']}")
        limit = f"≤ {t['limit']:.2f}" if t["unit"] == "×" else f"≤ {t['limit']} {t['unit']}"
        lines.append(f"  [{met:^7}] {t['target']}: {value} ({limit})")
    lines.append(f"fastest here: {report.fastest}")
    return lines

