"""``local serve``'s settings: one dataclass, serialisable so that uvicorn's worker processes rebuild it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from local.defaults import DEFAULT_MODEL

# Environment variables carry the configuration into each uvicorn worker process.
_ENV = "LOCAL_SERVE_CONFIG"


@dataclass
class ServeConfig:
    """Everything ``create_app`` needs; serialisable so uvicorn workers can rebuild it."""

    model: str = str(DEFAULT_MODEL)
    runtime: str = "onnxruntime"
    threads: int | None = None  # per worker; default: this worker's share of the CPUs
    fast_preprocess: bool = True
    max_concurrency: int = 1  # inferences at once per worker (each already uses all its threads)
    max_queue: int = 16  # requests allowed to wait for a slot before 503
    max_receiving: int = 64  # requests allowed to be sending their bodies at once before 503
    body_timeout_s: float = 30.0
    header_timeout_s: float = 10.0  # from connecting to the end of the request head
    cors_origins: list[str] = field(default_factory=list)  # empty: no cross-origin access
    workers: int = 1
    int8_kernel: str | None = None  # None: $INT8_KERNEL or auto (lambda_onnx.cpu)
    allow_canary_failure: bool | None = None  # None: $ALLOW_CANARY_FAILURE

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        return cls(**json.loads(os.environ[_ENV]))


def header_timeout_s() -> float:
    """This process's request-head deadline (a worker reads it from the environment)."""
    return ServeConfig.from_env().header_timeout_s if _ENV in os.environ else ServeConfig.header_timeout_s
