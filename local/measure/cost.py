"""What each approach costs per month, from measured durations and throughput.

Serverless: requests x (price per request + billed GB-seconds), API Gateway per request, and the
billed INIT time of cold starts (container images have their INIT billed). Server: an hourly
price times the number of machines the measured throughput needs. Every price is an input with a
default; the defaults are AWS's published us-east-1 prices on the date below.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# https://aws.amazon.com/lambda/pricing/ and https://aws.amazon.com/api-gateway/pricing/ (us-east-1)
PRICES_DATE = "2025-11 (us-east-1, on-demand, no free tier)"
LAMBDA_GB_SECOND_USD = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
LAMBDA_REQUEST_USD = 0.20 / 1e6
HTTP_API_REQUEST_USD = 1.00 / 1e6  # first 300 million requests a month
# An on-demand c7i.large (2 vCPU, 4 GiB), the size of the machine the benchmarks here ran on.
# https://aws.amazon.com/ec2/pricing/on-demand/
SERVER_HOURLY_USD = 0.08925
# Provisioned concurrency, us-east-1, per GB-second: the configured environments for as long as
# they are configured, and the duration of the requests they serve (instead of the on-demand
# price). https://aws.amazon.com/lambda/pricing/ ("Provisioned Concurrency Pricing"), read 2025-11
# with the prices above.
PROVISIONED_USD_PER_GB_S = {"x86_64": 0.0000041667, "arm64": 0.0000033334}
PROVISIONED_DURATION_USD_PER_GB_S = {"x86_64": 0.0000097222, "arm64": 0.0000077778}
PROVISIONED_PRICES_DATE = "2025-11 (us-east-1)"
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class CostInputs:
    """Measured figures and prices; everything the cost view lets a user edit."""

    memory_mb: int = 3008
    architecture: str = "x86_64"
    warm_duration_ms: float = 50.0  # handler duration of a warm request (billed, rounded up to 1 ms)
    init_ms: float = 1000.0  # billed INIT duration of a cold start
    cold_start_fraction: float = 0.01  # share of requests that hit a new execution environment
    api_gateway: bool = True
    gb_second_usd: float | None = None  # None: the default for ``architecture``
    request_usd: float = LAMBDA_REQUEST_USD
    api_request_usd: float = HTTP_API_REQUEST_USD
    server_hourly_usd: float = SERVER_HOURLY_USD
    server_throughput_rps: float = 20.0  # measured requests per second one server sustains
    server_utilisation: float = 0.5  # plan servers to run at most this busy (headroom for peaks)


@dataclass(frozen=True)
class CostResult:
    serverless_per_request_usd: float
    serverless_per_million_usd: float
    server_monthly_usd_one: float  # one server, any volume it can carry
    server_capacity_per_month: float  # requests one server carries at the planned utilisation
    crossover_requests_per_month: float | None  # where serverless starts to cost more than servers
    inputs: CostInputs

    def to_dict(self) -> dict:
        return {**asdict(self), "inputs": asdict(self.inputs)}


def gb_second_price(inputs: CostInputs) -> float:
    if inputs.gb_second_usd is not None:
        return inputs.gb_second_usd
    try:
        return LAMBDA_GB_SECOND_USD[inputs.architecture]
    except KeyError:
        raise ValueError(f"architecture must be one of {sorted(LAMBDA_GB_SECOND_USD)}, got {inputs.architecture!r}") from None


def serverless_per_request(inputs: CostInputs) -> float:
    """Average cost of one request, cold starts' billed INIT included."""
    gb = inputs.memory_mb / 1024.0
    billed_s = (math.ceil(inputs.warm_duration_ms) + inputs.cold_start_fraction * math.ceil(inputs.init_ms)) / 1000.0
    api = inputs.api_request_usd if inputs.api_gateway else 0.0
    return gb * billed_s * gb_second_price(inputs) + inputs.request_usd + api


def server_capacity(inputs: CostInputs) -> float:
    """Requests a month one server carries at the planned utilisation."""
    return inputs.server_throughput_rps * 3600 * HOURS_PER_MONTH * inputs.server_utilisation


def servers_needed(requests_per_month: float, inputs: CostInputs) -> int:
    capacity = server_capacity(inputs)
    return max(1, math.ceil(requests_per_month / capacity)) if capacity > 0 else 1


def server_monthly(requests_per_month: float, inputs: CostInputs) -> float:
    return servers_needed(requests_per_month, inputs) * inputs.server_hourly_usd * HOURS_PER_MONTH


def serverless_monthly(requests_per_month: float, inputs: CostInputs) -> float:
    return requests_per_month * serverless_per_request(inputs)


def compare(inputs: CostInputs) -> CostResult:
    """Per-request serverless cost, one server's cost and capacity, and the crossover volume."""
    per_request = serverless_per_request(inputs)
    one_server = inputs.server_hourly_usd * HOURS_PER_MONTH
    capacity = server_capacity(inputs)
    # Serverless grows linearly (p x V); servers step up by one machine per ``capacity`` (C). If
    # the line meets the first step (S / p <= C) that is the crossover; if not, p < S / C: Lambda
    # is cheaper per request than even a fully busy server, at every volume.
    crossover = one_server / per_request if per_request > 0 and one_server / per_request <= capacity else None
    return CostResult(per_request, per_request * 1e6, one_server, capacity, crossover, inputs)


def curve(inputs: CostInputs, volumes: list[float]) -> list[dict[str, float]]:
    """Monthly cost of both approaches at each volume (for the chart)."""
    return [{"requests_per_month": v, "serverless_usd": serverless_monthly(v, inputs), "server_usd": server_monthly(v, inputs)}
            for v in volumes]


def log_volumes(low: float = 1e4, high: float = 1e9, points: int = 61) -> list[float]:
    step = (math.log10(high) - math.log10(low)) / (points - 1)
    return [10 ** (math.log10(low) + i * step) for i in range(points)]


# --- a server fleet as AWS bills it: instance types, Fargate, the Application Load Balancer ---------------
# (us-east-1, on-demand, Linux; the scenario's fleet, :mod:`local.measure.scenario`). Prices read 2026-12.
FLEET_PRICES_DATE = "2026-12 (us-east-1, on-demand, Linux)"
EC2_PRICES_SOURCE = "https://aws.amazon.com/ec2/pricing/on-demand/ (us-east-1, Linux), read 2026-12"
# How the vCPUs sit on cores: "Amazon EC2 CPU options: supported CPU cores and threads per CPU core"
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/cpu-options-supported-instances-values.html
# (C7i: 2 threads per core, so a c7i.large's 2 vCPUs are the two hyperthreads of one core; C7a: 1 thread
# per core, every vCPU a core of its own).
CPU_LAYOUT_SOURCE = ("AWS docs 'CPU options: supported CPU cores and threads per CPU core' (C7i: 2 threads per core; "
                     "C7a: 1, a vCPU is a physical core)")


@dataclass(frozen=True)
class InstanceType:
    """An EC2 instance type as the fleet sees it: its CPUs, their layout, its memory and price."""

    name: str
    vcpus: int
    memory_mib: int
    cores_per_vcpu: float  # physical cores per vCPU: 0.5 where each core's two hyperthreads are two vCPUs
    hourly_usd: float
    source: str = EC2_PRICES_SOURCE

    @property
    def threads_per_core(self) -> int:
        return max(1, round(1.0 / self.cores_per_vcpu))

    def describe(self) -> str:
        layout = (f"{self.vcpus} vCPU = {self.vcpus * self.cores_per_vcpu:g} core(s) x {self.threads_per_core} hyperthreads"
                  if self.threads_per_core > 1 else f"{self.vcpus} vCPU = {self.vcpus} core(s), no SMT")
        return f"{self.name} ({layout}, {self.memory_mib // 1024} GiB, ${self.hourly_usd:g}/h)"


INSTANCE_TYPES = {t.name: t for t in (
    InstanceType("c7a.medium", 1, 2048, 1.0, 0.05132),
    InstanceType("c7i.large", 2, 4096, 0.5, 0.08925),
    InstanceType("c7a.large", 2, 4096, 1.0, 0.10264),
    InstanceType("c7i.xlarge", 4, 8192, 0.5, 0.1785),
    InstanceType("c7a.xlarge", 4, 8192, 1.0, 0.20528),
)}
DEFAULT_INSTANCE_TYPE = "c7i.large"  # the size the benchmarks' machine is closest to, and SERVER_HOURLY_USD's


def instance_type(name: str) -> InstanceType:
    try:
        return INSTANCE_TYPES[name]
    except KeyError:
        raise ValueError(f"instance type must be one of {', '.join(INSTANCE_TYPES)}, got {name!r}") from None


# Fargate, Linux/x86, per second with a one-minute minimum: https://aws.amazon.com/fargate/pricing/
# (confirmed against vantage.sh's and factualminds.com's us-east-1 tables, 2026-06).
FARGATE_VCPU_HOUR_USD = 0.04048
FARGATE_GB_HOUR_USD = 0.004445
FARGATE_PRICES_SOURCE = "https://aws.amazon.com/fargate/pricing/ (Linux/x86, us-east-1), read 2026-12"
# A task of 1 vCPU or more needs at least 2 GB per vCPU:
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size
FARGATE_MIN_GB_PER_VCPU = 2


def fargate_hourly(vcpus: float, memory_mib: int) -> float:
    """USD an hour for one Fargate task of ``vcpus`` and ``memory_mib``."""
    return vcpus * FARGATE_VCPU_HOUR_USD + memory_mib / 1024.0 * FARGATE_GB_HOUR_USD


# The Application Load Balancer: every hour it runs, plus LCU-hours; an hour's LCUs are its largest
# dimension's (https://aws.amazon.com/elasticloadbalancing/pricing/, us-east-1; confirmed against
# cloud-horizons.com's 2026-05 reading): 25 new connections a second, 3,000 active connections a
# minute, 1 GB processed an hour (EC2, container and IP targets), 1,000 rule evaluations a second
# beyond the first 10 rules of a request.
ALB_HOURLY_USD = 0.0225
ALB_LCU_HOUR_USD = 0.008
ALB_NEW_CONNECTIONS_PER_S = 25.0
ALB_ACTIVE_CONNECTIONS_PER_MIN = 3000.0
ALB_GB_PER_HOUR = 1.0
ALB_RULE_EVALUATIONS_PER_S = 1000.0
ALB_FREE_RULES = 10
ALB_PRICES_SOURCE = "https://aws.amazon.com/elasticloadbalancing/pricing/ (us-east-1), read 2026-12"


def alb_lcus(requests: float, hours: float, *, request_bytes: float, response_bytes: float,
             requests_per_connection: float = 1.0, rules: int = 1) -> dict[str, float]:
    """The LCUs of ``requests`` served in ``hours`` (at most one hour: AWS bills each hour's largest
    dimension), by dimension, and ``lcus``, the one billed. A connection lasts far less than a minute,
    so the connections active in a minute are those opened in it."""
    if hours <= 0:
        return {"new_connections": 0.0, "active_connections": 0.0, "processed_bytes": 0.0, "rule_evaluations": 0.0,
                "lcus": 0.0}
    connections = requests / max(requests_per_connection, 1e-9)
    dimensions = {
        "new_connections": connections / (hours * 3600.0) / ALB_NEW_CONNECTIONS_PER_S,
        "active_connections": connections / (hours * 60.0) / ALB_ACTIVE_CONNECTIONS_PER_MIN,
        "processed_bytes": requests * (request_bytes + response_bytes) / 1e9 / hours / ALB_GB_PER_HOUR,
        "rule_evaluations": requests * max(0, rules - ALB_FREE_RULES) / (hours * 3600.0) / ALB_RULE_EVALUATIONS_PER_S,
    }
    return {**dimensions, "lcus": max(dimensions.values())}


def alb_cost(hourly_requests: list[float], *, request_bytes: float, response_bytes: float,
             requests_per_connection: float = 1.0, rules: int = 1, last_hour: float = 1.0) -> dict[str, Any]:
    """USD for a load balancer running for ``len(hourly_requests)`` hours (the last one ``last_hour``
    long), each hour billed its own LCUs: ``hours`` and ``lcus`` parts, and the dimension that cost most."""
    hours = [1.0] * len(hourly_requests)
    if hours:
        hours[-1] = last_hour
    by_dimension: dict[str, float] = {}
    lcu_usd = 0.0
    for count, length in zip(hourly_requests, hours):
        lcus = alb_lcus(count, length, request_bytes=request_bytes, response_bytes=response_bytes,
                        requests_per_connection=requests_per_connection, rules=rules)
        lcu_usd += lcus.pop("lcus") * length * ALB_LCU_HOUR_USD
        top = max(lcus, key=lambda k: lcus[k])
        by_dimension[top] = by_dimension.get(top, 0.0) + length
    return {"hours_usd": sum(hours) * ALB_HOURLY_USD, "lcus_usd": lcu_usd,
            "dominant": max(by_dimension, key=lambda k: by_dimension[k]) if by_dimension else "none"}


# --- the Lambda options: container image or zip with SnapStart, x86_64 or arm64, provisioned -------------
# What a cold start bills. Container images (and custom runtimes and provisioned concurrency) have always
# had their INIT phase billed; since 2025-08-01 so has every on-demand zip function on a managed runtime
# (AWS Compute Blog, "AWS Lambda standardizes billing for INIT Phase", 2025-04: "This change specifically
# affects on-demand invocations of Lambda functions packaged as ZIP files that use managed runtimes, for
# which the INIT phase duration was previously unbilled"). So a cold start of either package bills its INIT
# at the duration price (CostInputs.init_ms). With SnapStart the INIT runs once per published version and
# a cold start is a restore instead: its Billed Restore Duration at the duration price, plus SnapStart's
# two charges for Python (and .NET), us-east-1: the cache, per GB of memory per second the version is
# active (at least 3 hours), and the restore, per GB of memory restored. Figures as AWS's pricing page
# gives them (https://aws.amazon.com/lambda/pricing/, "Lambda SnapStart pricing"), read through
# awsnegotiations.com's "Lambda SnapStart Cost Impact" (2026-05) and the AWS agent toolkit's Lambda
# reference ("caching charge (by memory, min 3 hours) + per-restore charge"); the pricing page itself was
# not reachable from here. No separate arm64 figure was found: the same is assumed.
INIT_BILLED_FOR_ZIP_SINCE = "2025-08-01"
SNAPSTART_CACHE_USD_PER_GB_S = 0.0000015046
SNAPSTART_RESTORE_USD_PER_GB = 0.0001397998
SNAPSTART_CACHE_MIN_S = 3 * 3600.0
SNAPSTART_PRICES_SOURCE = ("https://aws.amazon.com/lambda/pricing/ (Lambda SnapStart pricing, Python, us-east-1): cache "
                           "$0.0000015046 per GB-s (at least 3 h per version), restore $0.0001397998 per GB restored")

# The ways to run the function the scenario prices side by side (template.yaml deploys each).
LAMBDA_OPTIONS = ("x86-image", "arm64-image", "zip-snapstart", "provisioned")


@dataclass(frozen=True)
class LambdaOption:
    """One way to deploy the function: the package, the architecture, provisioned environments."""

    name: str
    architecture: str = "x86_64"
    snapstart: bool = False  # the zip package with SnapStart: a cold start is a restore
    provisioned: int = 0  # provisioned concurrency (the container image)

    def __post_init__(self) -> None:
        if self.name not in LAMBDA_OPTIONS:
            raise ValueError(f"the Lambda option must be one of {', '.join(LAMBDA_OPTIONS)}, got {self.name!r}")
        if self.architecture not in LAMBDA_GB_SECOND_USD:
            raise ValueError(f"architecture must be one of {sorted(LAMBDA_GB_SECOND_USD)}, got {self.architecture!r}")
        if self.snapstart and self.provisioned:
            raise ValueError("SnapStart cannot be combined with provisioned concurrency (AWS: 'Supported features and limitations')")
        if (self.name == "provisioned") != (self.provisioned > 0):
            raise ValueError("the provisioned option needs at least one provisioned environment, and only it has any")

    def describe(self) -> str:
        what = {"x86-image": "container image", "arm64-image": "container image",
                "zip-snapstart": "zip package with SnapStart", "provisioned": f"container image, {self.provisioned} provisioned"}
        return f"{what[self.name]}, {self.architecture}"


# Lambda's limit on a zip package, unzipped, layers included
# (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html); the Makefile's zip target refuses more.
ZIP_UNZIPPED_LIMIT_BYTES = 262_144_000
# What the zip package holds besides the model: the lock's runtime wheels for CPython 3.12 on manylinux x86_64
# (185.0 MB) and the core (0.13 MB), as tests/test_zip.py measured them on 2026-12-06 (README, "What fits").
ZIP_BYTES_BESIDE_MODEL = 185_130_000


def zip_package_bytes(model_bytes: int) -> int:
    """The zip package's unzipped size holding a model of ``model_bytes`` (its ONNX file, sidecar and canary)."""
    return ZIP_BYTES_BESIDE_MODEL + model_bytes

def lambda_option(name: str, *, architecture: str = "x86_64", provisioned: int = 0) -> LambdaOption:
    """An option by name: the images fix their architecture, SnapStart and provisioned take ``architecture``;
    provisioned concurrency defaults to one environment for the provisioned option."""
    if name == "x86-image":
        return LambdaOption(name, "x86_64", provisioned=provisioned)
    if name == "arm64-image":
        return LambdaOption(name, "arm64", provisioned=provisioned)
    if name == "zip-snapstart":
        return LambdaOption(name, architecture, snapstart=True, provisioned=provisioned)
    return LambdaOption(name, architecture, provisioned=provisioned or 1)


def snapstart_cache_usd(memory_mb: float, active_s: float, versions: int = 1) -> float:
    """SnapStart's cache charge: each active version's memory, for as long as it is active (3 hours at least)."""
    return versions * memory_mb / 1024.0 * max(active_s, SNAPSTART_CACHE_MIN_S) * SNAPSTART_CACHE_USD_PER_GB_S


def snapstart_restore_usd(memory_mb: float, restores: int) -> float:
    """SnapStart's restore charge: the function's memory, per restore."""
    return restores * memory_mb / 1024.0 * SNAPSTART_RESTORE_USD_PER_GB
