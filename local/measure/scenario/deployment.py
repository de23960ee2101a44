"""What to deploy for the server side: the record a scenario's sizing gives and the deploy files are written from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FleetDeployment:
    platform: str            # "ec2" or "fargate"
    instance_type: str       # e.g. "c7i.large" (ec2) or "fargate"
    vcpus: int
    memory_mib: int
    lanes: int               # local serve lanes per instance (one per vCPU)
    min_instances: int
    max_instances: int
    target_cpu_pct: float
    drain_s: int
    boot_s: float
    max_queue: int
    model: str
