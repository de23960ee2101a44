"""What a power-tuning sweep measures and how it judges: the settings, stated once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lambda_onnx.resources import LAMBDA_MIN_MB
from local.defaults import DEFAULT_FUNCTION_TIMEOUT_S, TUNE_OUT
from local.lambda_env.cgroups import CGROUP_ROOT, PROC_CGROUP
from local.measure import cost

DEFAULT_SIZES = (512, 1024, 1769, 2048, 3008, 4096)
DEFAULT_REQUESTS = 20
DEFAULT_OUT = TUNE_OUT
PRECISIONS = ("fp32", "int8")
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
# What "latency" means: the function's duration as Lambda reports and bills it (the REPORT line),
# the handler's own time, or the client's round trip (locally: the emulator's HTTP hop on top).
METRICS = {"duration": "function duration (REPORT Duration, what Lambda bills)",
           "handler": "handler time (the handler's own handler_ms)",
           "round_trip": "client round trip (invoke HTTP exchange)"}
LAMBDA_MAX_MB = 10_240  # https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html
# Other processes using more than this much CPU during a warm series may have slowed it.
DISTURBED_OTHER_CPUS = 0.5

EMULATION_NOTE = ("EMULATED on this machine, not measured on AWS Lambda: the same handler code and the same Lambda "
                  "runtime client (the AWS Lambda Runtime Interface Emulator), with CPU and memory constrained by Linux "
                  "cgroups the way Lambda sizes a function (memory / 1,769 MB vCPU, a memory limit without swap). No "
                  "network, no API Gateway, no container image pull; this machine's CPU ({cpu}) may differ from Lambda's.")



@dataclass(frozen=True)
class TuneProgress:
    """One step of a sweep: ``message`` is a line worth showing, empty for a plain step."""

    done: int
    total: int
    message: str = ""


Progress = Callable[[TuneProgress], None]



@dataclass(frozen=True)
class TuneConfig:
    """What to sweep and how to judge it.

    ``prices`` carries the cost view's price inputs and cold-start share (its memory size and
    durations are replaced per configuration by the measured ones).
    """

    model: Path
    int8_model: Path | None = None  # None: <stem>.int8.onnx next to ``model`` if there, else INT8 is skipped
    precisions: tuple[str, ...] = PRECISIONS
    sizes: tuple[int, ...] = DEFAULT_SIZES
    requests: int = DEFAULT_REQUESTS
    budget_ms: float | None = None
    percentile: str = "p90"
    metric: str = "duration"
    image: Path | None = None  # None: the sample photo DEFAULT_PHOTO
    prices: cost.CostInputs = field(default_factory=cost.CostInputs)
    timeout_s: int = DEFAULT_FUNCTION_TIMEOUT_S
    function: str | None = None  # a real Lambda function to sweep too (its memory is changed, then restored)
    region: str | None = None
    cgroup_root: Path = CGROUP_ROOT
    proc_cgroup: Path = PROC_CGROUP

    def __post_init__(self) -> None:
        sizes = tuple(sorted({int(s) for s in self.sizes}))
        bad = [s for s in sizes if not LAMBDA_MIN_MB <= s <= LAMBDA_MAX_MB]
        if not sizes or bad:
            raise ValueError(f"memory sizes must be between {LAMBDA_MIN_MB} and {LAMBDA_MAX_MB} MB (Lambda's range), "
                             f"got {list(self.sizes)}")
        object.__setattr__(self, "sizes", sizes)
        if self.requests < 1:
            raise ValueError(f"at least one warm request per configuration is needed, got {self.requests}")
        if self.percentile not in PERCENTILES:
            raise ValueError(f"percentile must be one of {', '.join(PERCENTILES)}, got {self.percentile!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        unknown = set(self.precisions) - set(PRECISIONS)
        if unknown or not self.precisions:
            raise ValueError(f"precisions must be among {', '.join(PRECISIONS)}, got {list(self.precisions)}")
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise ValueError(f"the latency budget must be positive, got {self.budget_ms} ms")
        cost.gb_second_price(self.prices)  # an unknown architecture without a price: refused now, not mid-sweep


