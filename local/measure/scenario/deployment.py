"""What the scenario says to deploy on the server side: one record, filled by the sizing, read by the
writers of the ECS stack's parameters and the Kubernetes overlay (:mod:`local.report.deploy`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from local.serve.config import DRAIN_TIMEOUT_S, QUEUE

PLATFORMS = ("ec2", "fargate")
ARCHITECTURES = ("x86_64", "arm64")


@dataclass(frozen=True)
class FleetDeployment:
    """A server fleet's shape: what runs where, how many, and when it scales."""

    platform: str  # "ec2" or "fargate"
    instance_type: str  # e.g. "c7i.large" (ec2) or "fargate"
    vcpus: int  # per instance / task
    memory_mib: int  # per instance / task
    lanes: int  # local serve lanes per instance (one per vCPU)
    min_instances: int
    max_instances: int
    target_cpu_pct: float  # target tracking on average CPU utilisation
    drain_s: int = DRAIN_TIMEOUT_S  # the server's drain deadline = ALB deregistration delay
    boot_s: float = 60.0  # measured or assumed time for a new instance to take traffic
    max_queue: int = QUEUE  # local serve --max-queue
    model: str = "resnet50.onnx"  # the model file name baked into the image
    architecture: str = "x86_64"  # the image's and the instances' CPU: "x86_64" or "arm64" (Graviton)
    image: str = ""  # the pushed image by digest (REPOSITORY@sha256:...); empty: given at deploy time

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform must be one of {PLATFORMS}, not {self.platform!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, not {self.architecture!r}")
        if not 1 <= self.min_instances <= self.max_instances:
            raise ValueError(f"expected 1 <= min_instances <= max_instances, got {self.min_instances} and {self.max_instances}")
        if self.vcpus < 1 or self.lanes < 1 or self.memory_mib < 512:
            raise ValueError(f"expected at least 1 vCPU, 1 lane and 512 MiB, got {self.vcpus}, {self.lanes}, {self.memory_mib}")
        if not 0 < self.target_cpu_pct < 100:
            raise ValueError(f"target_cpu_pct must be between 0 and 100, not {self.target_cpu_pct}")
        if self.drain_s < 0 or self.max_queue < 0:
            raise ValueError(f"drain_s and max_queue must not be negative, got {self.drain_s} and {self.max_queue}")
        if self.image and "@sha256:" not in self.image:
            raise ValueError(f"image must be pinned by digest (REPOSITORY@sha256:...), not {self.image!r}")

    def to_dict(self) -> dict[str, Any]:
        """The record as ``--json`` prints it (plain types, the field names as keys)."""
        return asdict(self)
