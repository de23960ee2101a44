"""What the image decoders print, kept with the request that made them print it.

libtiff, libjpeg and OpenJPEG report trouble in a hostile file by writing to the process's stderr
(file descriptor 2) from C (``TIFFFillStrip: Read error on strip 4; ...``), and Pillow by Python
warnings. On Lambda each of those becomes a CloudWatch line of its own, outside the request's
structured log line and with text chosen by whoever sent the file. :func:`captured` wraps the
decoding: for its duration fd 2 points at a pipe and Python warnings are recorded; what was caught
goes to the :class:`DecoderLog` of the :func:`collecting` scope around it (the Lambda handler opens
one per request and attaches it to its log line), or, outside any such scope, to the
``lambda_onnx.decoder`` logger at DEBUG. Nothing reaches the real stderr.

- **Threads.** fd 2 and the warnings filters belong to the whole process, so one lock makes the
  captured sections take turns (``local serve`` decodes in worker threads; a decode is a few ms
  against tens of ms of inference). Whatever another thread writes to stderr during a section is
  caught with it: kept in that request's record rather than lost.
- **Bounded.** The pipe's write end is non-blocking, so a decoder that prints more than the pipe
  holds (64 KiB on Linux) loses the rest instead of blocking, and the record says ``truncated``;
  a record keeps the first :data:`MAX_MESSAGES` lines, each clipped, and counts them all.
- **Never worse than before.** The process's own fd 2 is restored whatever the decode raises; if it
  cannot be swapped (closed, out of descriptors), the section runs uncaptured.

The measured cost on a normal photo is in ``tests/test_decoder_log.py`` (tens of microseconds).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGES = 20  # kept per request; the count covers them all
MAX_MESSAGE_CHARS = 240
# A non-blocking write of at most PIPE_BUF bytes is all or nothing (POSIX), so once less than this
# is free in the pipe a decoder's next line may have been dropped.
_PIPE_BUF = 4096

log = logging.getLogger("lambda_onnx.decoder")


@dataclass
class DecoderLog:
    """The decoder output of one request: the first lines, how many there were, whether any were lost."""

    messages: list[str] = field(default_factory=list)
    count: int = 0
    truncated: bool = False

    def add(self, lines: list[str], truncated: bool = False) -> None:
        self.count += len(lines)
        room = MAX_MESSAGES - len(self.messages)
        self.messages += [line[:MAX_MESSAGE_CHARS] for line in lines[:max(room, 0)]]
        self.truncated = self.truncated or truncated or len(lines) > room

    def log_fields(self) -> dict[str, Any]:
        """Keys for a structured log line; none when the decoders were quiet."""
        if not self.count:
            return {}
        fields: dict[str, Any] = {"decoder_messages": self.messages, "decoder_message_count": self.count}
        if self.truncated:
            fields["decoder_messages_truncated"] = True
        return fields


_current: ContextVar[DecoderLog | None] = ContextVar("lambda_onnx_decoder_log", default=None)
_lock = threading.Lock()
_state = threading.local()


@contextlib.contextmanager
def collecting(record: DecoderLog | None = None) -> Iterator[DecoderLog]:
    """Collect what the decoders print in this context (this request) into ``record``.

    A context variable carries it, so a decode in a worker thread started from this context
    (``asyncio.to_thread``, Starlette's thread pool) reports here too.
    """
    record = record if record is not None else DecoderLog()
    token = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(token)


@contextlib.contextmanager
def captured() -> Iterator[None]:
    """Route fd 2 and Python warnings into the current :class:`DecoderLog` while the block runs.

    Nested use in one thread (``prepare`` around ``decode``) captures once, in the outermost block.
    """
    if getattr(_state, "active", False):
        yield
        return
    with _lock:
        _state.active = True
        swapped = _swap_stderr()
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # every occurrence, not once per code location
                yield
        finally:
            output, truncated = _restore_stderr(swapped)
            _state.active = False
            _deliver(output, truncated, caught)


def _swap_stderr() -> tuple[int, int] | None:
    """Point fd 2 at a fresh non-blocking pipe; ``(saved fd 2, read end)``, or None if impossible."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()  # text Python buffered for the real stderr goes there first
    try:
        read_end, write_end = os.pipe()
    except OSError:
        return None
    try:
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        saved = os.dup(2)
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    try:
        os.dup2(write_end, 2)
    except OSError:
        for fd in (read_end, saved):
            os.close(fd)
        return None
    finally:
        os.close(write_end)  # fd 2 holds the only write end now (or the swap failed)
    return saved, read_end


def _restore_stderr(swapped: tuple[int, int] | None) -> tuple[bytes, bool]:
    """Put the process's stderr back and drain the pipe: ``(output, truncated)``."""
    if swapped is None:
        return b"", False
    saved, read_end = swapped
    with contextlib.suppress(Exception):
        sys.stderr.flush()  # Python-level writes made during the section belong to it
    os.dup2(saved, 2)
    os.close(saved)
    chunks = []
    try:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    except BlockingIOError:  # drained (a child process may still hold a write end: never wait for it)
        pass
    try:
        import fcntl

        capacity = fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ)
    except (ImportError, AttributeError, OSError):
        capacity = 65536
    os.close(read_end)
    output = b"".join(chunks)
    return output, capacity - len(output) < _PIPE_BUF


def _deliver(output: bytes, truncated: bool, caught: list[warnings.WarningMessage]) -> None:
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
    # Deprecations are about this code, not about the file: they are not the sender's doing.
    lines += [f"{w.category.__name__}: {w.message}" for w in caught
              if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    if not lines and not truncated:
        return
    record = _current.get()
    if record is not None:
        record.add(lines, truncated)
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("image decoder output", extra={"decoder_messages": lines[:MAX_MESSAGES],
                                                 "decoder_message_count": len(lines), "decoder_messages_truncated": truncated})
