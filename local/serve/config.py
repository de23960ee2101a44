"""``local serve``'s settings: one dataclass, every default stated here once; passed as an argument to
the app, the workers and (as JSON) the lane processes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from lambda_onnx.resources import ServerSplit, server_split
from local.defaults import DEFAULT_MODEL
from local.serve.refusal import RETRY_AFTER_S

HOST = "127.0.0.1"  # loopback only, unless asked
PORT = 8000
LANE_TIMEOUT_S = 60.0  # a lane that has not answered a request by then is stopped (and started again)
# Requests that may wait for a lane, in all the workers together, unless --max-queue says how many per worker.
QUEUE = 16
# Seconds a stopping server (SIGTERM) has to answer what it accepted before it answers the rest 503
# (local.serve.drain); deployments set the load balancer's deregistration delay to it (deploy/).
DRAIN_TIMEOUT_S = 30


@dataclass
class ServeConfig:
    """Everything ``create_app`` needs; serialisable so lane processes can rebuild it."""

    model: str = str(DEFAULT_MODEL)
    runtime: str = "onnxruntime"
    threads: int | None = None  # per lane; default: the lane's share of this worker's CPUs (server_split)
    fast_preprocess: bool = True
    max_concurrency: int | None = None  # lanes: processes classifying a request each, per worker; default: server_split's
    max_queue: int | None = None  # requests allowed to wait for a lane per worker before 503; default: QUEUE in all
    max_receiving: int = 64  # requests allowed to be sending their bodies at once before 503
    body_timeout_s: float = 30.0
    lane_timeout_s: float = LANE_TIMEOUT_S  # a lane that has not answered by then is stopped and started again
    header_timeout_s: float = 10.0  # from connecting to the end of the request head
    drain_timeout_s: float = DRAIN_TIMEOUT_S  # on SIGTERM: to answer what was accepted (local.serve.drain)
    cors_origins: list[str] = field(default_factory=list)  # empty: no cross-origin access
    workers: int | None = None  # HTTP fronts, each with lanes of its own; default: one
    int8_kernel: str | None = None  # None: $INT8_KERNEL or auto (lambda_onnx.cpu)
    allow_canary_failure: bool | None = None  # None: $ALLOW_CANARY_FAILURE
    retry_after_s: int = RETRY_AFTER_S  # the 503's Retry-After
    pace_refusals: bool = True  # within Retry-After, answer only a client's first refusal at once (local.serve.refusal)
    refused_body: str = "drain"  # a refused request's unread body: "drain" it and keep the connection, or "close" it
    access_log: bool = True  # uvicorn's line per answer (never for a 503: those are counted and summarised)
    http: str = "auto"  # the HTTP parser: "httptools" (C), "h11" (Python), "auto": httptools if installed
    loop: str = "auto"  # the event loop: "uvloop" (C), "asyncio", "auto": uvloop if installed (uvicorn's choice)

    def split(self) -> ServerSplit:
        """Workers, lanes per worker and threads per lane (the core's rule for what is not given)."""
        return server_split(workers=self.workers, lanes=self.max_concurrency, threads=self.threads)

    def queue(self) -> int:
        """Requests that may wait for a lane in each worker: ``max_queue``, or ``QUEUE`` shared by the workers."""
        if self.max_queue is not None:
            return self.max_queue
        return -(-QUEUE // self.split().workers)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))
