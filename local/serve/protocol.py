"""The HTTP protocol uvicorn serves with: h11 plus a deadline for every request head."""

from __future__ import annotations

import asyncio
import functools

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from local.serve.config import header_timeout_s


@functools.cache
def _header_timeout_s() -> float:
    return header_timeout_s()


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head (see the module docstring).

    uvicorn's keep-alive timer only covers a connection that sends nothing after a response, and
    any byte disarms it; here every head, the first included, must be complete within
    ``header_timeout_s`` of the connection opening or of the previous response. Module-level, so
    that uvicorn's worker processes can import it."""

    _head_deadline: asyncio.TimerHandle | None = None

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(_header_timeout_s(), self._head_expired)

    def _head_expired(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no complete head yet
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)
