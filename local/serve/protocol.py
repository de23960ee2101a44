"""The HTTP protocol uvicorn serves with: a C parser where it is installed, and a deadline for every
request head either way.

uvicorn's keep-alive timer only covers a connection that sends nothing after a response, and any
byte disarms it; here every head, the first included, must be complete within ``header_timeout_s``
of the connection opening or of the previous response. A request answered from its head (a 503
before its body was read) counts as answered: the rest of its body and the next head must arrive
within that time too. Each server gets its own deadline: :func:`protocol_class` returns a subclass
that carries it, so two servers in one process keep their own.

:func:`protocol_class` prefers :class:`HeadTimeoutHttpToolsProtocol` (uvicorn's ``httptools``
protocol: the llhttp parser in C) over :class:`HeadTimeoutProtocol` (uvicorn's pure-Python ``h11``
protocol): h11's parsing and response serialisation cost the event loop CPU that the lanes
classifying need (the README's server side has the figures).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from local.serve.config import ServeConfig

HTTP_CHOICES = ("auto", "httptools", "h11")


class _HeadDeadline:
    """The deadline for each request head, shared by both protocols (see the module docstring)."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    header_timeout_s: float = ServeConfig.header_timeout_s
    _head_deadline: asyncio.TimerHandle | None = None

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_expired)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _awaiting_head(self) -> bool:
        raise NotImplementedError

    def _head_expired(self) -> None:
        if self._awaiting_head() and not self.transport.is_closing():  # no complete head yet
            self.transport.close()


class HeadTimeoutProtocol(_HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head."""

    def _awaiting_head(self) -> bool:
        answered_early = self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY
        return self.conn.their_state is h11.IDLE or answered_early

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)


if importlib.util.find_spec("httptools") is not None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeadTimeoutHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol with a deadline for each request head."""

        _head_pending = True  # between a connection's start or a response's end and the next complete head

        def _awaiting_head(self) -> bool:
            return self._head_pending

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_pending = True
            self._arm_head_deadline()

        def on_headers_complete(self) -> None:
            self._head_pending = False
            self._disarm_head_deadline()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self.pipeline:
                self._head_pending = True
                self._arm_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_deadline()
            super().connection_lost(exc)


def protocol_class(http: str = "auto", header_timeout_s: float = ServeConfig.header_timeout_s) -> type[asyncio.Protocol]:
    """The protocol for ``http``: ``httptools`` (needs the package), ``h11``, or ``auto`` (httptools if
    installed), with ``header_timeout_s`` as its request-head deadline."""
    if http not in HTTP_CHOICES:
        raise ValueError(f"http must be one of {HTTP_CHOICES}, not {http!r}")
    if http == "h11" or (http == "auto" and "HeadTimeoutHttpToolsProtocol" not in globals()):
        base: type[asyncio.Protocol] = HeadTimeoutProtocol
    elif "HeadTimeoutHttpToolsProtocol" not in globals():
        raise ValueError("--http httptools needs the httptools package (pip install httptools)")
    else:
        base = globals()["HeadTimeoutHttpToolsProtocol"]
    return type(base.__name__, (base,), {"header_timeout_s": header_timeout_s})


# Open connections per worker before uvicorn answers 503 (well under the usual 1,024 descriptors).
MAX_CONNECTIONS = 512


def uvicorn_options(config: ServeConfig, log_level: str) -> dict[str, Any]:
    """What every worker's uvicorn is given, whichever way it is started. ``limit_concurrency`` bounds the
    open connections (and their tasks): past it uvicorn answers 503 at once instead of taking file
    descriptors until there are none (each idle one is closed by the head deadline or keep-alive)."""
    return {"log_level": log_level, "timeout_keep_alive": 5,
            "http": protocol_class(config.http, config.header_timeout_s), "loop": config.loop,
            "access_log": config.access_log, "limit_concurrency": MAX_CONNECTIONS}
