"""Closed-loop HTTP load for ``python -m local loadtest``: N connections, each POSTing a raw image body
again as soon as it has its answer, for a fixed time; every answer counted by status and timed.

Two generators with one result type (:class:`LoadResult`):

- :class:`WrkLoad`: Debian's ``wrk`` (C, an event loop per thread) with ``http_load.lua``, which
  times each answer itself so that accepted requests' latency is not mixed with 503s'. It costs the
  machine under test little CPU, which matters when client and server share 2 CPUs.
- :class:`PythonLoad`: the fallback where ``wrk`` is not installed, an asyncio client in this
  process. It says it is one: it costs more CPU per request than ``wrk``, taken from the server.

As ``wrk`` does, only answers that arrive before the time is up count; a request still in flight
then is dropped, and a connection the server closes is opened again.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

LUA_SCRIPT = Path(__file__).with_name("http_load.lua")
GENERATORS = ("auto", "wrk", "python")
REQUEST_TIMEOUT_S = 30.0  # an answer slower than this counts as a timeout
_RESULT_MARK = "LOADTEST_RESULT "


@dataclass
class LoadResult:
    """What one closed-loop run saw, from the client's side."""

    generator: str  # "wrk 4.1.0" or "python asyncio (fallback)"
    connections: int
    elapsed_s: float
    statuses: dict[int, int]  # HTTP status -> answers
    ok_ms: list[float]  # latency of each 200, sending to the end of the answer
    refused_ms: list[float]  # latency of each 503
    retry_after: int  # 503s that carried Retry-After
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect, read, write, timeout
    client_cpu_s: float | None = None  # CPU the generator itself used

    @property
    def answers(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)


class LoadGenerator(Protocol):
    name: str

    def run(self, url: str, body: bytes, *, content_type: str, connections: int, seconds: float) -> LoadResult: ...


def wrk_version() -> str | None:
    """``wrk``'s version (``"4.1.0-3+b2"``), or None if it is not installed."""
    path = shutil.which("wrk")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    words = (out.stdout + out.stderr).split()
    return words[1].removeprefix("debian/") if len(words) > 1 and words[0] == "wrk" else "unknown version"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class WrkLoad:
    """``wrk -t N -c N`` with ``http_load.lua`` (one connection per thread: see the script)."""

    def __init__(self) -> None:
        version = wrk_version()
        if version is None:
            raise FileNotFoundError("wrk is not installed (apt-get install wrk; bash .ci/run installs it)")
        self.name = f"wrk {version}"

    def run(self, url: str, body: bytes, *, content_type: str, connections: int, seconds: float) -> LoadResult:
        with tempfile.NamedTemporaryFile(prefix="loadtest-body-", suffix=".bin") as file:
            file.write(body)
            file.flush()
            env = {**os.environ, "LOADTEST_BODY": file.name, "LOADTEST_CONTENT_TYPE": content_type}
            command = ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                       "--timeout", f"{REQUEST_TIMEOUT_S:.0f}s", "-s", str(LUA_SCRIPT), url]
            before = _children_cpu_s()
            out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + REQUEST_TIMEOUT_S + 30)
            cpu = _children_cpu_s() - before
        line = next((x for x in out.stdout.splitlines() if x.startswith(_RESULT_MARK)), None)
        if out.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()[-500:]}")
        data = json.loads(line.removeprefix(_RESULT_MARK))
        errors = {k: v for k, v in data["errors"].items() if k != "status" and v}
        return LoadResult(generator=self.name, connections=connections, elapsed_s=data["duration_us"] / 1e6,
                          statuses={int(k): v for k, v in data["statuses"].items()}, ok_ms=data["ok_ms"],
                          refused_ms=data["refused_ms"], retry_after=data["retry_after"], socket_errors=errors,
                          client_cpu_s=cpu)


class PythonLoad:
    """The fallback generator: asyncio connections in this process (see the module docstring)."""

    name = "python asyncio (the fallback load generator)"

    def run(self, url: str, body: bytes, *, content_type: str, connections: int, seconds: float) -> LoadResult:
        start = time.process_time()
        result = asyncio.run(_closed_loop(url, body, content_type, connections, seconds))
        result.generator = self.name
        result.client_cpu_s = time.process_time() - start
        return result


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers


async def _closed_loop(url: str, body: bytes, content_type: str, connections: int, seconds: float) -> LoadResult:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    request = (f"POST {parsed.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
    result = LoadResult(generator="", connections=connections, elapsed_s=seconds, statuses={}, ok_ms=[], refused_ms=[],
                        retry_after=0)
    errors: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds

    async def connection() -> None:
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        while loop.time() < deadline:
            if writer is None:
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        reader, writer = await asyncio.open_connection(host, port)
                except (OSError, TimeoutError):
                    errors["connect"] = errors.get("connect", 0) + 1
                    await asyncio.sleep(0.1)
                    continue
            assert reader is not None
            sent = loop.time()
            try:
                writer.write(request)
                await writer.drain()
                async with asyncio.timeout(min(REQUEST_TIMEOUT_S, max(0.0, deadline - sent) + 1.0)):
                    status, headers = await _read_answer(reader)
            except TimeoutError:
                if loop.time() < deadline:
                    errors["timeout"] = errors.get("timeout", 0) + 1
                writer.close()
                writer = None
                continue
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                if loop.time() < deadline:
                    errors["read"] = errors.get("read", 0) + 1
                writer.close()
                writer = None
                continue
            now = loop.time()
            if now > deadline:
                break
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.ok_ms.append((now - sent) * 1e3)
            elif status == 503:
                result.refused_ms.append((now - sent) * 1e3)
                result.retry_after += "retry-after" in headers
            if headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    result.elapsed_s = min(loop.time(), deadline) - started
    result.socket_errors = errors
    return result


def load_generator(kind: str = "auto") -> LoadGenerator:
    """``"wrk"``, ``"python"``, or ``"auto"``: wrk where it is installed, else the Python fallback."""
    if kind not in GENERATORS:
        raise ValueError(f"load generator must be one of {', '.join(GENERATORS)}, not {kind!r}")
    if kind == "python" or (kind == "auto" and wrk_version() is None):
        return PythonLoad()
    return WrkLoad()
