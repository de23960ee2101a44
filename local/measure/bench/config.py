"""What the benchmark measures and what it returns: settings, targets, and typed rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from local.defaults import BENCH_OUT

Step = Callable[[str], None]
DEFAULT_OUT = BENCH_OUT
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




def noop(_: str) -> None:
    pass


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
    rounds: int = 3  # interleaved blocks the batch-1 samples are split into (see measure_in_rounds)
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


class ThreadRow(TypedDict):
    runtime: str
    precision: str
    threads: int
    chosen: bool
    median_ms: float
    p90_ms: float


class ColdStartRow(TypedDict):
    handler: str
    module: str
    build: str
    runs: int
    median_ms: float
    import_ms: float
    first_invoke_ms: float
    peak_rss_mb: float
    top1: str | None
    canary: str | None
    canary_ms: float | None
    samples_ms: list[float]


class PreprocessRow(TypedDict):
    image: str
    width: int
    height: int
    bytes: int
    fast_allowed: bool
    fast_path: bool
    median_ms: float
    p90_ms: float


class PayloadRow(TypedDict):
    runtime: str
    precision: str
    packages_mb: float
    code_mb: float
    model_mb: float
    total_mb: float
    largest_packages_mb: dict[str, float]


class AgreementRow(TypedDict):
    name: str
    key: str
    same_as: list[str]  # keys of the variants that compute exactly this one (the row stands for them too)
    int8_kernel: str | None
    canary: str
    top1_same_as_fp32: int
    photos: int
    correct: int
    differs_on: list[str]


class Target(TypedDict):
    target: str
    value: float | None
    limit: float
    unit: str
    met: bool | None


class Skipped(TypedDict):
    name: str
    median_ms: float
    why: str


@dataclass
class BenchReport:
    created: str
    machine: dict[str, Any]
    config: dict[str, Any]
    models: dict[str, Any]
    inference: list[Latency] = field(default_factory=list)
    threads: list[ThreadRow] = field(default_factory=list)
    cold_start: list[ColdStartRow] = field(default_factory=list)
    preprocess: list[PreprocessRow] = field(default_factory=list)
    floor: dict[str, Any] = field(default_factory=dict)
    payload: list[PayloadRow] = field(default_factory=list)
    emulator: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    fastest: str = ""
    # The fastest runtime x precision whose parity holds on this CPU, for `local serve --runtime auto`.
    fastest_choice: dict[str, Any] = field(default_factory=dict)
    # Faster variants that were not chosen, and why (their parity does not hold here, or opt-in bf16).
    skipped: list[Skipped] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


