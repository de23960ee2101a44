"""The lanes of ``local serve``: processes that each classify one request at a time, fed from one queue.

The HTTP front (one event loop: parsing, admission, answers) never decodes or infers; it puts each
complete request in one first-in-first-out queue, and whichever lane is free takes the next. Each
lane is a process of its own with its own copy of the model (no interpreter lock shared with the
front or the other lanes), holding ``threads`` ONNX Runtime intra-op threads that never spin.

Why one queue for every lane, and not one per process: with a worker process per lane, each
listening on a socket of its own (``SO_REUSEPORT``), the kernel spreads *connections* over the
workers by a hash of their addresses, and a few keep-alive connections seldom split evenly (the
README's server side has the figures). A request on the busier worker waited while the other
worker's queue was shorter; here no request waits while an earlier one is still queued, so an
accepted request waits for at most the places ahead of it.

A lane that dies (a crash in a native library, killed) costs only the request it was classifying:
that request is answered 500 ``lane_failed`` with the reason, and the lane is started again while
the others go on serving.

The wire between the front and a lane is a Unix socket pair and two frames: a request (its id,
content type and body) and an answer (status and the JSON body the lane rendered). The first frame a
lane sends is ``ready`` (what it loaded, its canary, its CPU) or ``error`` (why it could not load).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lambda_onnx.errors import ClassifierError, ModelLoadError
from local.serve.config import LANE_TIMEOUT_S, ServeConfig

log = logging.getLogger("uvicorn.error")

_HEAD = struct.Struct("!II")  # two lengths: the frame's JSON head, then its body
READY_TIMEOUT_S = 300.0  # importing the runtime, loading the model and its canary (an INT8 kernel retry included)
RESTART_PAUSE_S = 1.0  # between a lane's failed start and the next attempt
STOP_TIMEOUT_S = 5.0

multiprocessing.allow_connection_pickling()  # the lane's end of the socket pair passes to the spawned process


class LaneFailedError(ClassifierError):
    """The lane classifying a request stopped before answering (it is started again)."""

    status = 500
    code = "lane_failed"


def json_bytes(payload: Mapping[str, Any]) -> bytes:
    """A body exactly as Starlette's ``JSONResponse`` renders it."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


# --- frames ----------------------------------------------------------------------------------------------


def _frame(head: Mapping[str, Any], body: bytes = b"") -> bytes:
    encoded = json.dumps(head).encode()
    return _HEAD.pack(len(encoded), len(body)) + encoded + body


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("the other end closed the socket")
        got += n
    return bytes(buffer)


def _recv_frame(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """One frame, blocking (in a lane, and at start-up in the front)."""
    head_len, body_len = _HEAD.unpack(_recv_exactly(sock, _HEAD.size))
    head = json.loads(_recv_exactly(sock, head_len))
    return head, _recv_exactly(sock, body_len) if body_len else b""


async def _read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """One frame, from the front's event loop."""
    head_len, body_len = _HEAD.unpack(await reader.readexactly(_HEAD.size))
    head = json.loads(await reader.readexactly(head_len))
    return head, await reader.readexactly(body_len) if body_len else b""


# --- the lane process ------------------------------------------------------------------------------------


def _say(sock: socket.socket, head: Mapping[str, Any]) -> bool:
    """Send the start-up frame; False if the front has already gone (another lane failed to load, say)."""
    try:
        sock.sendall(_frame(head))
    except ConnectionError:
        return False
    return True


def lane_main(sock: socket.socket, config_json: str, index: int) -> None:
    """A lane: load the model, say ``ready`` (or ``error``), then answer one request at a time until the front goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the front stops the lanes
    from dataclasses import asdict

    from lambda_onnx.classifier import Classifier
    from lambda_onnx.contract import Service, host_section
    from lambda_onnx.resources import intra_op_spinning

    config = ServeConfig.from_json(config_json)
    try:
        classifier = Classifier(config.model, threads=config.split().threads, runtime=config.runtime,
                                fast_preprocess=config.fast_preprocess, int8_kernel=config.int8_kernel,
                                allow_canary_failure=config.allow_canary_failure,
                                spinning=intra_op_spinning(server=True))
    except ClassifierError as exc:
        _say(sock, {"type": "error", "status": exc.status, "code": exc.code, "message": exc.message})
        return
    except Exception as exc:  # a fault of ours or of a library: said, not swallowed
        _say(sock, {"type": "error", "status": 500, "code": "internal_error", "message": f"{type(exc).__name__}: {exc}"})
        raise
    service = Service(classifier)
    meta = classifier.sidecar
    if not _say(sock, {
        "type": "ready", "pid": os.getpid(), "lane": index, "model": classifier.model.body(),
        "runtime": classifier.engine.runtime, "int8_kernel": classifier.engine.int8_kernel,
        "canary": asdict(classifier.canary), "host": dict(host_section()), "host_text": classifier.host.describe(),
        "init_ms": round(service.init_ms, 1), "warnings": list(classifier.warnings), "label": meta.label,
        "random_weights": meta.random_weights, "opset": meta.opset, "num_classes": meta.num_classes,
        "preprocessing": asdict(meta.preprocessing),
    }):
        return
    while True:
        try:
            head, body = _recv_frame(sock)
        except (EOFError, ConnectionError):  # the front has gone: so does the lane
            return
        status, payload = service.respond(body=body, content_type=head["content_type"], request_id=head["request_id"])
        try:
            sock.sendall(_frame({"status": status}, json_bytes(payload)))
        except ConnectionError:  # the front stopped while this request ran
            return


# --- the front's side ------------------------------------------------------------------------------------


@dataclass
class Job:
    """One request waiting for, or in, a lane; ``future`` gets ``(status, rendered JSON body)``."""

    body: bytes
    content_type: str | None
    request_id: str
    future: asyncio.Future[tuple[int, bytes]]
    running: bool = False

    def cancel(self) -> bool:
        """Withdraw the request if no lane has taken it yet (True); a running one finishes (False)."""
        if self.running:
            return False
        return self.future.cancel()


@dataclass
class _Lane:
    index: int
    process: Any  # multiprocessing's SpawnProcess
    sock: socket.socket
    ready: dict[str, Any] = field(default_factory=dict)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Block until the lane has loaded its model; raise the lane's own error if it could not."""
        self.sock.settimeout(timeout_s)
        try:
            head, _ = _recv_frame(self.sock)
        except (EOFError, ConnectionError):
            self.process.join(5)
            raise ModelLoadError(f"lane {self.index} stopped while loading the model (exit code {self.process.exitcode})") from None
        except TimeoutError:
            raise ModelLoadError(f"lane {self.index} did not load the model within {timeout_s:.0f} s") from None
        finally:
            self.sock.settimeout(None)
        if head.get("type") != "ready":
            error = ModelLoadError(head.get("message", "the lane could not load the model"))
            error.status, error.code = head.get("status", 500), head.get("code", error.code)
            raise error
        self.ready = head
        return head

    def exit_reason(self) -> str:
        self.process.join(STOP_TIMEOUT_S)
        code = self.process.exitcode
        if code is None:
            return "it stopped answering"
        if code < 0:
            return f"it was ended by {signal.Signals(-code).name}"
        return f"it exited with code {code}"

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()  # an idle lane sees the end of its socket and exits
        self.process.join(STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(STOP_TIMEOUT_S)


class LanePool:
    """``count`` lane processes fed first in, first out from one queue.

    :meth:`start` (before the event loop runs) spawns them and waits until every one has loaded the
    model, raising the first lane's error if one could not; :meth:`open` (in the loop) begins feeding
    them; :meth:`submit` queues a request and returns its :class:`Job`; :meth:`close` stops them.
    """

    def __init__(self, config_json: str, count: int, timeout_s: float = LANE_TIMEOUT_S) -> None:
        self.config_json, self.count, self.timeout_s = config_json, count, timeout_s
        self.lanes: list[_Lane] = []
        self.queue: deque[Job] = deque()
        self.restarts = 0
        self.failed = 0  # requests lost to a lane that stopped
        self._current: dict[int, Job] = {}  # each lane's latest request (answered or not)
        self.expired: ClassifierError | None = None  # set by expire(): every request from then on is answered with it
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._context = multiprocessing.get_context("spawn")

    @property
    def info(self) -> dict[str, Any]:
        """What the first lane loaded (every lane loads the same model with the same settings)."""
        return self.lanes[0].ready

    @property
    def waiting(self) -> int:
        return sum(1 for job in self.queue if not job.future.done())

    def _spawn(self, index: int) -> _Lane:
        front, lane = socket.socketpair()
        process = self._context.Process(target=lane_main, args=(lane, self.config_json, index),
                                        name=f"local-serve-lane-{index}", daemon=True)
        process.start()
        lane.close()
        return _Lane(index, process, front)

    def start(self) -> dict[str, Any]:
        """Spawn every lane and wait until each has loaded the model (they load side by side)."""
        self.lanes = [self._spawn(i) for i in range(self.count)]
        try:
            for lane in self.lanes:
                lane.wait_ready()
        except BaseException:
            for lane in self.lanes:  # the others are only loading: no need to let them finish
                if lane.process.is_alive():
                    lane.process.terminate()
            for lane in self.lanes:
                lane.stop()
            raise
        log.info("%d lane(s) ready (pids %s)", self.count, ", ".join(str(lane.process.pid) for lane in self.lanes))
        return self.info

    async def open(self) -> None:
        """Begin feeding the lanes from the queue (in the event loop that serves)."""
        self._wake = asyncio.Event()
        for lane in self.lanes:
            await self._connect(lane)
        self._tasks = [asyncio.create_task(self._feed(lane.index)) for lane in self.lanes]

    async def _connect(self, lane: _Lane) -> None:
        lane.reader, lane.writer = await asyncio.open_connection(sock=lane.sock, limit=2**22)

    def submit(self, body: bytes, content_type: str | None, request_id: str) -> Job:
        job = Job(body, content_type, request_id, asyncio.get_running_loop().create_future())
        if self.expired is not None:
            job.future.set_exception(self.expired)
            return job
        self.queue.append(job)
        assert self._wake is not None, "open() the pool before submitting"
        self._wake.set()
        return job

    async def _next(self) -> Job:
        assert self._wake is not None
        while True:
            while self.queue:
                job = self.queue.popleft()
                if not job.future.done():  # not withdrawn while it waited
                    if not self.queue:
                        self._wake.clear()
                    return job
            self._wake.clear()
            await self._wake.wait()

    async def _feed(self, index: int) -> None:
        """One lane's loop: take the next request, send it, await the answer; restart the lane if it dies.

        A lane that died before the whole request reached it never saw it: the request goes back to
        the head of the queue. One that died after it did may have been classifying it (a crash in a
        native library on that very input, say): that request is answered 500 ``lane_failed``. So is
        one whose lane gave no answer within ``timeout_s`` (stuck, or stopped): the lane is killed.
        """
        while True:
            job = await self._next()
            job.running, sent = True, False
            self._current[index] = job
            lane = self.lanes[index]
            assert lane.reader is not None and lane.writer is not None
            try:
                async with asyncio.timeout(self.timeout_s):
                    lane.writer.write(_frame({"content_type": job.content_type, "request_id": job.request_id}, job.body))
                    await lane.writer.drain()
                    sent = True
                    head, payload = await _read_frame(lane.reader)
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
                if isinstance(exc, TimeoutError):  # hung (or stopped): it will not answer
                    lane.process.kill()
                    reason = f"it gave no answer within {self.timeout_s:g} s and was stopped"
                else:
                    reason = await asyncio.to_thread(lane.exit_reason)
                if not sent:  # it never had the whole request: another lane takes it
                    job.running = False
                    self.queue.appendleft(job)
                    assert self._wake is not None
                    self._wake.set()
                    await self._restart(index, reason, None)
                    continue
                self.failed += 1
                if not job.future.done():
                    job.future.set_exception(LaneFailedError(
                        f"the process classifying this request stopped ({reason}); it is being restarted"))
                await self._restart(index, reason, job.request_id)
                continue
            if not job.future.done():
                job.future.set_result((head["status"], payload))

    async def _restart(self, index: int, reason: str, request_id: str | None) -> None:
        old = self.lanes[index]
        during = f" while classifying request {request_id}" if request_id else " while idle"
        log.error("lane %d (pid %s) stopped%s: %s; starting it again", index, old.process.pid, during, reason)
        if old.writer is not None:
            old.writer.close()
        await asyncio.to_thread(old.stop)
        while True:
            lane = self._spawn(index)
            try:
                await asyncio.to_thread(lane.wait_ready)
            except ClassifierError as exc:
                log.error("lane %d could not start again: %s; trying again in %.0f s", index, exc.message, RESTART_PAUSE_S)
                await asyncio.to_thread(lane.stop)
                await asyncio.sleep(RESTART_PAUSE_S)
                continue
            await self._connect(lane)
            self.lanes[index] = lane
            self.restarts += 1
            log.info("lane %d started again (pid %s)", index, lane.process.pid)
            return

    def expire(self, error: ClassifierError) -> int:
        """Answer every request not yet answered, queued or running, with ``error``, and every later
        one too (the drain's deadline, :mod:`local.serve.drain`); returns how many were waiting."""
        self.expired = error
        pending = {id(job): job for job in (*self.queue, *self._current.values()) if not job.future.done()}
        unanswered = list(pending.values())
        for job in unanswered:
            job.future.set_exception(error)
        self.queue.clear()
        return len(unanswered)

    async def aclose(self) -> None:
        """Stop feeding and stop every lane (queued requests are withdrawn)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for job in self.queue:
            job.future.cancel()
        self.queue.clear()
        for lane in self.lanes:
            if lane.writer is not None:
                lane.writer.close()  # closes the front's end: an idle lane sees it and exits
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop every lane (blocking; in the event loop, :meth:`aclose`)."""
        for lane in self.lanes:
            lane.stop()

