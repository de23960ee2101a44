"""What the two simulated sides are made of: latency distributions, Lambda's limits, a fleet's shape.

Every AWS figure the simulation assumes is stated once here, with where it comes from. Prices are
not: they live in :mod:`local.measure.cost` (on-demand, API Gateway, provisioned concurrency), which
the simulation reuses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from lambda_onnx.resources import server_split
from local.fleet.autoscale import EVALUATION_S, SCALE_IN_COOLDOWN_S
from local.lambda_env.elastic import DEFAULT_IDLE_TIMEOUT_S  # stated where the emulator applies it
from local.measure import cost

# Lambda scales each function by 1,000 execution environments every 10 seconds (per function,
# since 2023-11-26), refilled continuously, up to the concurrency limit.
# https://docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html ("Concurrency scaling rate")
# https://aws.amazon.com/blogs/aws/aws-lambda-functions-now-scale-12-times-faster-when-handling-high-volume-requests/
SCALING_BURST = 1000
SCALING_REFILL_PER_S = 1000 / 10.0
SCALING_SOURCE = "AWS docs 'Lambda scaling behavior' (1,000 environments / 10 s per function, since 2023-11-26)"
# The default per-Region account quota of concurrent executions (new accounts may start lower).
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
ACCOUNT_CONCURRENCY = 1000
# API Gateway HTTP APIs give an integration at most 30 s; the client then gets 504.
# https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html
API_GATEWAY_TIMEOUT_S = 30.0
IDLE_TIMEOUT_SOURCE = ("not documented by AWS; 10 min measured by Shilkov (mikhail.io, 2019-08), also SimFaaS's default; "
                       "change it with --idle-timeout")
# A server instance that an autoscaler adds takes this long to take traffic: an EC2 launch plus
# `local serve` loading its model. Measure your own; it is a parameter.
DEFAULT_BOOT_S = 120.0
# Target tracking's evaluation period and scale-in cooldown: stated once, beside the rule that the
# real fleet (`local fleet`) and this simulation share.
DEFAULT_EVALUATION_S = EVALUATION_S
DEFAULT_SCALE_IN_COOLDOWN_S = SCALE_IN_COOLDOWN_S
DEFAULT_QUEUE_TIMEOUT_S = 30.0  # a request waiting longer for a server gets 503, as behind API Gateway's 30 s
# Fewer samples than this and a measured distribution is replaced by a lognormal fitted to it:
# resampling 20 values would make the 20th-largest the simulated p99.
MIN_EMPIRICAL_SAMPLES = 50
PLATFORMS = ("ec2", "fargate")
# What a request and its answer weigh through the load balancer (its processed-bytes LCUs): a 1 MP JPEG
# (lambda_onnx.photos' "chelsea", 240,512 bytes, the photo every measurement here sends) and a top-5 answer.
DEFAULT_REQUEST_BYTES = 240_512
DEFAULT_RESPONSE_BYTES = 1_000
_Z90 = 1.2815515655446004  # the standard normal's 90th percentile
# What a core's second hyperthread adds to its throughput when both run lanes of ONNX Runtime
# inference: the core then completes this many times what it completes with one thread, shared by the
# two lanes. Intel's "Hyper-Thread Tuning Guide for End to End Video AI Workload" (2023-07,
# intel.com/content/www/us/en/developer/articles/guide/hyper-thread-tuning-guide-for-video-ai-workload.html)
# measured about 10 % on Xeon for an AI pipeline; dense AVX-512 kernels gain least, since both threads
# wait for the same vector units. This machine has no SMT siblings to measure it on (lscpu: 1 thread per
# core); measure yours (`local loadtest` with 1 and 2 lanes on one core) and pass it (--smt-gain).
DEFAULT_SMT_GAIN = 1.1
SMT_GAIN_SOURCE = ("Intel, 'Hyper-Thread Tuning Guide for End to End Video AI Workload' (2023-07): about 10 % more "
                   "throughput from a core's second hyperthread on AI inference; not measurable here (no SMT siblings)")


def lanes_for(instance: cost.InstanceType) -> int:
    """Lanes ``local serve`` runs on the instance's vCPUs (:func:`~lambda_onnx.resources.server_split`)."""
    split = server_split(float(instance.vcpus))
    return split.workers * split.lanes


def lane_time_factor(here_threads_per_core: int, there_threads_per_core: int, smt_gain: float = DEFAULT_SMT_GAIN) -> float:
    """How many times longer a lane takes over a request there than here, every lane busy: a core
    running ``t`` lanes as hyperthreads completes ``smt_gain`` times what it completes with one (1 when
    ``t`` is 1), shared by the ``t`` lanes."""
    if smt_gain <= 0:
        raise ValueError(f"the SMT gain must be positive, got {smt_gain}")

    def per_lane(threads: int) -> float:
        return threads / (smt_gain if threads > 1 else 1.0)

    return per_lane(max(1, there_threads_per_core)) / per_lane(max(1, here_threads_per_core))


@dataclass(frozen=True)
class Distribution:
    """A latency distribution in milliseconds, and where it came from.

    Measured samples are resampled as they are (enough of them) or through a lognormal fitted to
    their median and 90th percentile (too few for the tail); a summary alone (tune's p50/p90) is
    that lognormal too. One sample is a constant: the hand-computable cases of the tests.
    """

    samples: tuple[float, ...] = ()
    median_ms: float | None = None
    p90_ms: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not self.samples and self.median_ms is None:
            raise ValueError("a distribution needs samples or a median")
        if any(not math.isfinite(s) or s < 0 for s in self.samples):
            raise ValueError("latency samples must be finite and non-negative")

    @classmethod
    def constant(cls, ms: float, source: str = "given") -> Distribution:
        return cls(samples=(float(ms),), source=source)

    @classmethod
    def measured(cls, values: Sequence[float], source: str) -> Distribution:
        """From measured values: resampled when there are enough, else a lognormal fitted to them."""
        values = [float(v) for v in values]
        if not values:
            raise ValueError(f"no samples measured ({source})")
        if len(values) >= MIN_EMPIRICAL_SAMPLES or len(set(values)) == 1:
            return cls(samples=tuple(values), source=source)
        median, p90 = (float(np.percentile(values, q)) for q in (50, 90))
        return cls(median_ms=median, p90_ms=max(p90, median),
                   source=f"{source}; lognormal fitted to the median and p90 of {len(values)} samples")

    @classmethod
    def summary(cls, median_ms: float, p90_ms: float | None, source: str) -> Distribution:
        return cls(median_ms=float(median_ms), p90_ms=float(p90_ms) if p90_ms else float(median_ms), source=source)

    @property
    def sigma(self) -> float:
        if self.median_ms is None or not self.p90_ms or self.p90_ms <= self.median_ms or self.median_ms <= 0:
            return 0.0
        return math.log(self.p90_ms / self.median_ms) / _Z90

    @property
    def mean_ms(self) -> float:
        if self.samples:
            return float(np.mean(self.samples))
        return (self.median_ms or 0.0) * math.exp(self.sigma**2 / 2)

    @property
    def p50_ms(self) -> float:
        return float(np.median(self.samples)) if self.samples else (self.median_ms or 0.0)

    def scaled_above(self, offset_ms: float, factor: float, source: str) -> Distribution:
        """Every latency's part above ``offset_ms`` times ``factor`` (the part a lane holds, carried to
        another CPU layout or load; the rest, outside the lane, unchanged)."""
        if factor == 1.0:
            return self

        def move(ms: float) -> float:
            return offset_ms + max(0.0, ms - offset_ms) * factor

        if self.samples:
            return Distribution(samples=tuple(move(s) for s in self.samples), source=source)
        return Distribution(median_ms=move(self.median_ms or 0.0), p90_ms=move(self.p90_ms or self.median_ms or 0.0),
                            source=source)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` latencies (ms)."""
        if self.samples:
            if len(self.samples) == 1:
                return np.full(n, self.samples[0])
            return rng.choice(np.asarray(self.samples), size=n)
        return (self.median_ms or 0.0) * np.exp(self.sigma * rng.standard_normal(n))

    def shifted(self, ms: float, source: str) -> Distribution:
        """Every latency ``ms`` later (earlier when negative, never below 0): a lognormal moves its median and p90."""
        if self.samples:
            return Distribution(samples=tuple(max(0.0, s + ms) for s in self.samples), source=source)
        median = max(0.0, (self.median_ms or 0.0) + ms)
        return Distribution(median_ms=median, p90_ms=max(median, (self.p90_ms or median) + ms), source=source)

    def describe(self) -> str:
        kind = (f"{len(self.samples)} samples" if len(self.samples) > 1 else "constant") if self.samples else "lognormal"
        return f"p50 {self.p50_ms:.1f} ms, mean {self.mean_ms:.1f} ms ({kind}; {self.source})"

    def to_dict(self) -> dict[str, object]:
        return {"p50_ms": round(self.p50_ms, 2), "mean_ms": round(self.mean_ms, 2), "p90_ms": self.p90_ms,
                "samples": len(self.samples), "source": self.source}


@dataclass(frozen=True)
class LambdaParams:
    """One function: latencies, limits and prices.

    ``warm_ms`` and ``cold_ms`` are what a client sees (round trip); ``overhead_ms`` is the part of
    a warm round trip Lambda does not bill (invoke, network), so a request is billed
    ``ceil(warm - overhead)`` ms plus, when it is a cold start, ``ceil(init_ms)``: the Cost module's
    model (:func:`local.measure.cost.serverless_per_request`), per request.
    """

    warm_ms: Distribution
    cold_ms: Distribution
    init_ms: float = 0.0
    overhead_ms: float = 0.0
    memory_mb: int = 3008
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    concurrency_limit: int = ACCOUNT_CONCURRENCY  # the account's, or the function's reserved concurrency
    scaling_burst: int = SCALING_BURST
    scaling_refill_per_s: float = SCALING_REFILL_PER_S
    provisioned: int = 0  # provisioned concurrency: always initialised, priced by the hour
    # The zip package with SnapStart: a cold start is a restore, init_ms its billed restore duration, and
    # SnapStart's cache and restore charges apply (local.measure.cost; for_option builds these).
    snapstart: bool = False
    api_timeout_s: float | None = API_GATEWAY_TIMEOUT_S  # None: invoked directly, no gateway limit
    prices: cost.CostInputs = field(default_factory=cost.CostInputs)
    # Only to simulate the emulator on this machine (the replay's validation): environments share its
    # 2 CPUs, so cold starts that overlap take longer, and so do warm requests served while another
    # environment initialises; Lambda's isolated environments do neither.
    cold_overlap_ms: Distribution | None = None
    warm_during_cold_ms: Distribution | None = None

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= 0 or self.concurrency_limit < 1 or self.provisioned < 0:
            raise ValueError("the idle timeout must be positive, the concurrency limit at least 1 and provisioned "
                             "concurrency not negative")
        if self.snapstart and self.provisioned:
            raise ValueError("SnapStart cannot be combined with provisioned concurrency")
        if self.provisioned > self.concurrency_limit:
            raise ValueError(f"provisioned concurrency ({self.provisioned}) cannot exceed the concurrency limit "
                             f"({self.concurrency_limit})")
        cost.gb_second_price(self.prices)  # an unknown architecture is refused now


def restore_estimate_ms(params: LambdaParams) -> float:
    """SnapStart's restore latency as measured here, where a process snapshot cannot be restored: the median
    cold start with the INIT taken out (what a restored environment still pays: starting the environment and
    its first request), at least the warm median. A lower bound: a real restore also pages the snapshot's
    memory in (AWS: "as low as sub-second"); a real function's REPORT lines (``Restore Duration``) replace it."""
    return max(params.cold_ms.p50_ms - params.init_ms, params.warm_ms.p50_ms)


def for_option(params: LambdaParams, option: cost.LambdaOption, *, restore_ms: float | None = None,
               billed_restore_ms: float | None = None) -> LambdaParams:
    """``params`` (measured for the container image) as ``option`` runs: its architecture's prices, its
    provisioned environments, or SnapStart's restores in place of cold starts. A restore replaces the INIT in
    what a client waits (cold start - INIT + restore) and in what is billed (the billed restore duration);
    ``restore_ms`` defaults to :func:`restore_estimate_ms`, ``billed_restore_ms`` to ``restore_ms``."""
    prices = replace(params.prices, architecture=option.architecture)
    if not option.snapstart:
        return replace(params, provisioned=option.provisioned, prices=prices, snapstart=False)
    restore = restore_estimate_ms(params) if restore_ms is None else float(restore_ms)
    source = ("Restore Duration of a real function's REPORT lines" if restore_ms is not None
              else "estimated: the emulator's cold start less its INIT")
    cold = params.cold_ms.shifted(restore - params.init_ms, f"SnapStart: cold start - INIT {params.init_ms:.0f} ms + "
                                                            f"restore {restore:.0f} ms ({source})")
    billed = restore if billed_restore_ms is None else float(billed_restore_ms)
    return replace(params, cold_ms=cold, init_ms=billed, provisioned=0, snapstart=True, prices=prices)


@dataclass(frozen=True)
class FleetParams:
    """K instances x W workers behind a load balancer (least outstanding requests), each with a
    bounded queue; fixed, or target-tracking autoscaled with a boot delay.

    The workers are the lanes ``local serve`` runs on the instance type's vCPUs unless given, and the
    service time is a request's on such an instance with every lane busy (its capacity; see
    :meth:`~local.measure.scenario.calibrate.Calibration.fleet_params`)."""

    service_ms: Distribution  # one request's round trip on an instance of this type, every lane busy
    # The part of service_ms spent outside a worker (the client, the network, the HTTP event loop reading the
    # body and writing the answer): it overlaps with other requests, so a worker is held for service - overhead.
    overhead_ms: float = 0.0
    workers: int | None = None  # requests one instance serves at once; None: local serve's lanes on its vCPUs
    queue: int = 16  # requests that may wait per instance before it answers 503
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S
    instances: int = 1  # fixed size, or the autoscaler's starting size
    autoscale: bool = False
    target_utilisation: float = 0.5
    min_instances: int = 1
    max_instances: int = 100
    boot_s: float = DEFAULT_BOOT_S
    evaluation_s: float = DEFAULT_EVALUATION_S
    scale_in_cooldown_s: float = DEFAULT_SCALE_IN_COOLDOWN_S
    instance: cost.InstanceType = field(default_factory=lambda: cost.instance_type(cost.DEFAULT_INSTANCE_TYPE))
    platform: str = "ec2"  # "ec2": the instance type's hourly price; "fargate": a task of its vCPUs and memory
    load_balancer: bool = True  # an Application Load Balancer in front, priced by the hour and its LCUs
    request_bytes: int = DEFAULT_REQUEST_BYTES
    response_bytes: int = DEFAULT_RESPONSE_BYTES
    prices: cost.CostInputs = field(default_factory=cost.CostInputs)

    def __post_init__(self) -> None:
        if self.workers is None:
            object.__setattr__(self, "workers", lanes_for(self.instance))
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}, got {self.platform!r}")
        if self.overhead_ms < 0 or self.overhead_ms >= self.service_ms.mean_ms:
            raise ValueError(f"the overhead outside a worker ({self.overhead_ms} ms) must be at least 0 and less than "
                             f"the mean service time ({self.service_ms.mean_ms:.1f} ms)")
        if self.lanes < 1 or self.queue < 0 or self.instances < 1 or self.queue_timeout_s <= 0:
            raise ValueError("a fleet needs at least one instance and one worker, a queue of 0 or more and a "
                             "positive queue timeout")
        if not 0 < self.target_utilisation <= 1 or not 1 <= self.min_instances <= self.max_instances:
            raise ValueError("the target utilisation must be in (0, 1] and 1 <= min instances <= max instances")

    @property
    def lanes(self) -> int:
        """``workers``, resolved (never None after construction)."""
        return int(self.workers or 1)

    @property
    def instance_type(self) -> str:
        return self.instance.name if self.platform == "ec2" else f"Fargate task ({self.instance.vcpus} vCPU)"

    @property
    def hourly_usd(self) -> float:
        """One instance-hour (EC2) or task-hour (Fargate)."""
        if self.platform == "fargate":
            return cost.fargate_hourly(self.instance.vcpus, self.instance.memory_mib)
        return self.instance.hourly_usd

    @property
    def capacity_rps(self) -> float:
        """Requests per second one instance completes when always busy."""
        return self.lanes * 1000.0 / (self.service_ms.mean_ms - self.overhead_ms)
