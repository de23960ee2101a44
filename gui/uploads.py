"""What a visitor may send: uploads bounded before Gradio stores them, and arrivals files read under limits.

Gradio stores every upload (``/gradio_api/upload``) in its cache before any event sees it, and caps only
the size of each file. :class:`UploadGate` (ASGI middleware around the whole app) bounds the rest where
the request arrives: a declared length (no open-ended chunked body), the parts in one request, and the
uploads per visitor per minute. :func:`read_arrivals` reads an arrivals file, gzipped or not, without
trusting it: compressed and uncompressed bytes and lines are counted as it streams, so a gzip bomb stops
at the limit instead of filling memory.
"""

from __future__ import annotations

import collections
import gzip
import json
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from gui.access import Limits
from local.measure.scenario.traffic import Arrivals, parse_lines

UPLOAD_SUFFIX = "/gradio_api/upload"
MAX_PARTS = 16  # files in one upload request (the page sends one request per pick)
MULTIPART_SLACK = 64 * 1024  # headers and boundaries around the file bytes
WINDOW_S = 60.0
GZIP_MAGIC = b"\x1f\x8b"


class UploadGate:
    """ASGI middleware: every upload request declares a length within bounds, holds few parts, and each
    visitor (address) makes at most ``limits.uploads_per_minute`` of them; others get a one-line 4xx.
    Uploads to the app mounted at ``operator_path`` (behind the operator's login) get ``operator_limits``."""

    def __init__(self, app: Any, limits: Limits, max_parts: int = MAX_PARTS, operator_path: str | None = None,
                 operator_limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits
        self.max_parts = max_parts
        self.operator_path = operator_path
        self.operator_limits = operator_limits or limits
        self._recent: dict[tuple[bool, str], collections.deque[float]] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").rstrip("/").endswith(UPLOAD_SUFFIX):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        operator = bool(self.operator_path) and scope["path"].startswith(f"{self.operator_path}/")
        limits = self.operator_limits if operator else self.limits
        length = headers.get("content-length", "")
        if not length.isdigit():
            await _refuse(send, 411, "an upload must declare its length (Content-Length)")
            return
        if int(length) > limits.upload_bytes + MULTIPART_SLACK:
            await _refuse(send, 413, f"an upload may be at most {limits.upload_bytes / 2**20:.0f} MB (the maximum allowed size)")
            return
        if not self._admit((operator, _visitor(scope, headers)), limits.uploads_per_minute):
            await _refuse(send, 429, f"at most {limits.uploads_per_minute} uploads a minute: wait a little")
            return
        boundary = _boundary(headers.get("content-type", ""))
        if boundary is None:
            await _refuse(send, 400, "an upload is a multipart/form-data body")
            return
        started = False

        async def tracking(message: dict) -> None:
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _counting(receive, boundary, self.max_parts, int(length)), tracking)
        except TooManyParts as exc:  # Gradio's parser stopped mid-body; what it had written is its temporary files'
            if not started:
                await _refuse(send, 413, str(exc))

    def _admit(self, visitor: tuple[bool, str], per_minute: int) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault(visitor, collections.deque())
            while recent and now - recent[0] > WINDOW_S:
                recent.popleft()
            if len(recent) >= per_minute:
                return False
            recent.append(now)
            if len(self._recent) > 10_000:  # forget idle visitors
                for key in [k for k, v in self._recent.items() if not v]:
                    del self._recent[key]
            return True


class TooManyParts(Exception):
    """An upload body with more parts than allowed, or longer than it declared."""


def _counting(receive: Any, boundary: bytes, max_parts: int, declared: int) -> Any:
    """``receive`` that counts the body's parts and bytes as they arrive and stops the upload past either bound."""
    marker = b"--" + boundary
    tail = b""
    parts = received = 0

    async def wrapped() -> dict:
        nonlocal tail, parts, received
        message = await receive()
        if message.get("type") == "http.request":
            body = message.get("body", b"")
            received += len(body)
            window = tail + body
            parts += window.count(marker)  # the tail is shorter than the marker: nothing counted twice
            tail = window[-(len(marker) - 1):]
            if parts > max_parts + 1 or received > declared:  # +1: the closing boundary
                raise TooManyParts(f"an upload holds at most {max_parts} files")
        return message

    return wrapped


def _boundary(content_type: str) -> bytes | None:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None


def _visitor(scope: dict, headers: dict[str, str]) -> str:
    host = (scope.get("client") or ("?", 0))[0]
    if host in ("127.0.0.1", "::1") and headers.get("x-forwarded-for"):
        host = headers["x-forwarded-for"].split(",")[0].strip()
    return host


async def _refuse(send: Any, status: int, reason: str) -> None:
    body = json.dumps({"error": reason}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# ---- arrivals files -------------------------------------------------------------------------------------


def _bounded_lines(path: Path, limits: Limits) -> Iterator[str]:
    """The file's lines, decompressed if it is gzip (by its bytes, not its name), within ``limits``."""
    size = path.stat().st_size
    if size > limits.arrivals_bytes:
        raise gr.Error(f"an arrivals file may be at most {limits.arrivals_bytes / 2**20:.0f} MB")
    with path.open("rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
    total = lines = 0
    opener: Any = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as handle:
            while True:
                # Bounded reads: a line is at most the remaining allowance, so a file of one endless line stops too.
                line = handle.readline(limits.arrivals_uncompressed_bytes - total + 1)
                if not line:
                    return
                total += len(line)
                lines += 1
                if total > limits.arrivals_uncompressed_bytes:
                    raise gr.Error(f"an arrivals file may hold at most {limits.arrivals_uncompressed_bytes / 2**20:.0f} MB "
                                   "uncompressed")
                if lines > limits.arrivals_lines:
                    raise gr.Error(f"an arrivals file may hold at most {limits.arrivals_lines:,} lines")
                yield line.decode("utf-8", errors="replace")
    except (OSError, EOFError, zlib.error):
        raise gr.Error("the arrivals file is not readable (a damaged gzip file?)") from None


def read_arrivals(path: str | Path, limits: Limits) -> Arrivals:
    """Arrival times from an uploaded file (CSV, API Gateway or ALB log; gzip too) within ``limits``; the
    format errors name the file by its name only."""
    path = Path(path)
    return parse_lines(_bounded_lines(path, limits), path.name)
