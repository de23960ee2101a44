"""The graceful drain: how ``local serve`` stops when an orchestrator stops it (SIGTERM).

ECS, Kubernetes and ``docker stop`` stop a container with SIGTERM, then SIGKILL after a grace period.
On SIGTERM, :class:`DrainingServer` (uvicorn's server) stops taking new connections: its listening
socket is closed, so a new connection is *refused* (the load balancer has already stopped sending, or
retries elsewhere), and idle keep-alive connections are closed. Every request already accepted, the
ones waiting in the lanes' queue included, is answered as usual, each connection closed after its
answer. If some are still unanswered ``drain_s`` after SIGTERM, they are answered 503 ``draining``
(:meth:`~local.serve.lanes.LanePool.expire`), so a client is told rather than cut off. Then the lanes
stop and the process exits 0: a stop asked for and carried out is not a failure.

The drain deadline is :data:`~local.serve.config.DRAIN_TIMEOUT_S` unless ``--drain-timeout`` says
otherwise; a deployment sets its load balancer's deregistration delay to it and its grace period above
it (``deploy/``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket
from typing import Any

import uvicorn

from lambda_onnx.errors import OverloadedError
from local.serve.lanes import LanePool

log = logging.getLogger("uvicorn.error")

# After the drain deadline's 503s are sent, how long uvicorn still waits for the tasks left (a body
# still arriving, say) before cancelling them.
DRAIN_MARGIN_S = 2


class DrainingError(OverloadedError):
    """The server was stopping and the drain deadline passed before this request's turn."""

    code = "draining"


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a deadline on its graceful shutdown, past which ``pool`` answers 503."""

    def __init__(self, config: uvicorn.Config, pool: LanePool, drain_s: float) -> None:
        super().__init__(config)
        self.pool, self.drain_s = pool, drain_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        log.info("draining: no new connections; answering the %d request(s) in progress (%d queued) within %g s",
                 len(self.server_state.tasks), self.pool.waiting, self.drain_s)
        timer = asyncio.get_running_loop().call_later(self.drain_s, self._deadline)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()
        # uvicorn raises the signals it caught again once it has stopped; a SIGTERM that was drained is
        # the end of the job (exit 0), not an interruption. SIGINT (Ctrl-C) still ends it as one.
        self._captured_signals = [sig for sig in self._captured_signals if sig != signal.SIGTERM]

    def _deadline(self) -> None:
        expired = self.pool.expire(DrainingError(f"the server is stopping and its drain deadline ({self.drain_s:g} s) "
                                                 "passed before this request was answered; retry"))
        if expired:
            log.error("drain deadline of %g s passed: %d request(s) answered 503", self.drain_s, expired)


def serve(app: Any, options: dict[str, Any], drain_s: float, *, sockets: list[socket.socket] | None = None,
          **where: Any) -> None:
    """Serve ``app`` (built by :func:`~local.serve.app.create_app`) with uvicorn ``options`` until
    stopped, draining for at most ``drain_s`` on SIGTERM; ``where`` is ``host=`` and ``port=`` when
    no ``sockets`` are given."""
    # uvicorn's own limit, whole seconds (its type); the 503s are sent at drain_s, this is the backstop.
    config = uvicorn.Config(app, timeout_graceful_shutdown=math.ceil(drain_s) + DRAIN_MARGIN_S, **where, **options)
    DrainingServer(config, app.state.pool, drain_s).run(sockets=sockets)
