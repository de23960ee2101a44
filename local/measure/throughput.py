"""Server throughput: how many answers a second one server gives a few clients sending back to back.

The figure the cost comparison needs ("requests/s one server sustains"). ``python -m local
throughput`` and the GUI's Cost tab ("Measure server throughput") both run :func:`measure_throughput`,
which is the monitor's request loop with no pause between a client's requests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lambda_onnx.errors import BackendError
from local.clients.base import Backend
from local.measure.monitor import run_monitor

# Enough requests for a steady figure within a few seconds; two clients keep a 2-CPU server busy
# without measuring its queue instead of its work.
DEFAULT_REQUESTS = 24
DEFAULT_CLIENTS = 2


@dataclass(frozen=True)
class Throughput:
    """One measurement: answers per second, and what it was measured on."""

    backend: str
    clients: int
    requests: int  # sent
    answered: int  # answered successfully; only these count
    elapsed_s: float  # from the first request sent to the last answer received
    requests_per_s: float  # answered / elapsed_s, to 0.01

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_throughput(backend: Backend, image: bytes, *, requests: int = DEFAULT_REQUESTS,
                       clients: int = DEFAULT_CLIENTS) -> Throughput:
    """Send ``image`` ``requests`` times from ``clients`` concurrent clients, each request as soon as
    the client's previous one is answered, and count the answers per second.

    Raises ValueError for fewer than one request or client, and :class:`BackendError` (with the
    first failure's reason) when not one request was answered successfully.
    """
    if requests < 1 or clients < 1:
        raise ValueError(f"requests and clients must be at least 1, not {requests} and {clients}")
    run = run_monitor([backend], image, interval_s=0, requests=requests, concurrency=clients)
    samples = run.samples
    ok = [s for s in samples if s.ok and s.round_trip_ms is not None]
    if not ok:
        first = samples[0] if samples else None
        raise BackendError(f"the server answered none of {len(samples)} requests: "
                           f"{first.error if first else 'no request was sent'}", status=first.status if first else 0)
    elapsed = max(s.t_s + s.round_trip_ms / 1e3 for s in ok if s.round_trip_ms is not None)
    return Throughput(backend=backend.name, clients=clients, requests=len(samples), answered=len(ok),
                      elapsed_s=round(elapsed, 3), requests_per_s=round(len(ok) / elapsed, 2))
