"""The AWS Lambda Runtime Interface Emulator (RIE), run natively: the local stand-in for Lambda.

``aws-lambda-rie`` (extracted from the pinned aws-sam-cli wheel by ``.ci/install``) serves Lambda's
Invoke API on a loopback port and runs the real Python runtime client (``awslambdaric``) with our
handler, exactly as the container image does, but without Docker:

    aws-lambda-rie --runtime-interface-emulator-address 127.0.0.1:P1 --runtime-api-address 127.0.0.1:P2 \
        python -m awslambdaric lambda_onnx.handler.handler

Like Lambda, the function initialises lazily: the first invoke after :meth:`Emulator.start` is the
cold start. :mod:`local.lambda_env.pool` runs N emulators so that N concurrent requests get N execution
environments, each with its own cold start; :mod:`local.lambda_env.elastic` starts them on demand.

Known emulator limits handled here (https://github.com/aws/aws-lambda-runtime-interface-emulator):

- overlapping invokes crash it: :meth:`Emulator.invoke` serialises them with a lock;
- its REPORT line's ``Max Memory Used`` is the configured size and its ``Init Duration`` is not the
  init phase (cmd/aws-lambda-rie/handlers.go, ``printEndReports``): neither is reported; the
  handler's own ``peak_rss_mb`` and ``init_ms`` are the truth. The rapid core's ``INIT REPORT``
  line (the real init phase) is;
- it listens on 0.0.0.0:8080 unless told otherwise: every address here is an explicit loopback one;
- it does not pass ``X-Amzn-Trace-Id`` on to the runtime, so ``_X_AMZN_TRACE_ID`` is never set
  (checked with awslambdaric 4.2.2): the emulator backend puts the trace id in the event's headers,
  where API Gateway puts it too.
"""

from __future__ import annotations

import atexit
import collections
import http.client
import ipaddress
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lambda_onnx.errors import BackendTimeoutError, BackendUnavailableError
from local.defaults import DEFAULT_FUNCTION_TIMEOUT_S as DEFAULT_TIMEOUT_S
from local.defaults import DEFAULT_MEMORY_MB
from local.ports import free_ports, release, reserve
from local.wire import EMULATOR_PLACEHOLDERS, parse_report, refuse_oversized_invoke

ROOT = Path(__file__).resolve().parents[2]
HANDLER = "lambda_onnx.handler.handler"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
DEFAULT_FUNCTION_NAME = "resnet-serverless"
DEFAULT_REGION = "us-east-1"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
DEATH_WAIT_S = 1.0  # after a dropped connection, how long a dying emulator gets to exit
LOG_LINES_KEPT = 2000  # per stream: enough for a stderr tail and REPORT lookups, bounded for long runs

_INIT_REPORT = re.compile(r"INIT REPORT\(durationMs: (?P<ms>[\d.]+)\)")
_IN_USE = "address already in use"
# Passed on to the function's processes, which otherwise inherit nothing but PATH: a supervisor (the
# test suite) sets it to find, at its end, any process started under it that is still alive.
PROCESS_TAG_ENV = "RSLS_PROCESS_TAG"

log = logging.getLogger(__name__)


def rie_binary() -> Path:
    """Where the emulator binary is: ``$AWS_LAMBDA_RIE``, next to this Python (the venv's bin), or on PATH."""
    candidates = [os.environ.get("AWS_LAMBDA_RIE"), Path(sys.executable).parent / "aws-lambda-rie", shutil.which("aws-lambda-rie")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise BackendUnavailableError("the Lambda emulator binary aws-lambda-rie is not installed: run `bash .ci/install` "
                                  "(it extracts it from the pinned aws-sam-cli wheel into .venv/bin)")


def session_members(sid: int) -> list[int]:
    """Every live process of session ``sid``. The RIE starts the runtime in a process group of its
    own, so killing the RIE's group would leave the runtime running; its session holds both."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after "(comm)": state ppid pgrp session ...; comm itself may contain spaces
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@dataclass(frozen=True)
class Invocation:
    """One Invoke API call as the emulator answered it."""

    environment: str  # which emulator (execution environment) served it
    status: int  # HTTP status of the Invoke API call itself
    payload: bytes  # the function's return value (JSON), or the runtime's error object
    round_trip_ms: float  # the Invoke HTTP exchange only, without waiting for a free environment
    queue_ms: float = 0.0  # time spent waiting for a free environment (pools)
    request_bytes: int = 0
    initialised: bool = False  # this invoke ran the environment's init phase (a cold start)
    report: dict[str, Any] = field(default_factory=dict)  # the real facts of the REPORT/INIT REPORT lines
    request_id: str | None = None  # the invocation's request id (its START line's)
    log: tuple[str, ...] = ()  # this invocation's log: its START line to its REPORT line, the function's own lines between

    def json(self) -> Any:
        return json.loads(self.payload)


class Emulator:
    """One emulated Lambda execution environment on 127.0.0.1.

    ``python``, ``pythonpath``, ``cwd`` and ``python_flags`` say how the function's interpreter runs:
    by default this virtualenv's Python with the repository on the path; ``tests/test_image.py``
    runs Python 3.12 with only an assembled image task root instead. ``model`` becomes
    ``MODEL_PATH``; ``None`` leaves the handler's default (``$LAMBDA_TASK_ROOT/model/model.onnx``).

    ``wrapper`` is a command prefix for the function process and ``preexec_fn`` runs in the
    emulator's process before it starts: hooks for confining the function (CPU quota, memory cap
    in a cgroup) the way Lambda confines it, without changing this class.
    """

    concurrency = 1  # an execution environment runs one request at a time

    def __init__(self, model: str | Path | None = None, *, memory_mb: int = DEFAULT_MEMORY_MB,
                 timeout_s: int = DEFAULT_TIMEOUT_S, function_name: str = DEFAULT_FUNCTION_NAME,
                 region: str = DEFAULT_REGION, handler: str = HANDLER, python: str | Path = sys.executable,
                 pythonpath: Sequence[str | Path] = (ROOT,), cwd: str | Path = ROOT, python_flags: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, wrapper: Sequence[str] = (),
                 preexec_fn: Callable[[], None] | None = None, host: str = "127.0.0.1", port: int | None = None,
                 runtime_api_port: int | None = None, name: str = "emulator", rie: str | Path | None = None,
                 start_timeout_s: float = START_TIMEOUT_S, on_line: Callable[[str, str], None] | None = None) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the emulator only listens on loopback addresses, not {host!r}")
        if memory_mb < 128 or timeout_s < 1:
            raise ValueError(f"memory must be at least 128 MB and the timeout at least 1 s, got {memory_mb} MB and {timeout_s} s")
        self.model = Path(model).resolve() if model is not None else None
        self.memory_mb, self.timeout_s = int(memory_mb), int(timeout_s)
        self.function_name, self.region, self.handler = function_name, region, handler
        self.python, self.python_flags = str(python), list(python_flags)
        self.pythonpath, self.cwd = [str(Path(p).resolve()) for p in pythonpath], Path(cwd).resolve()
        self.extra_env, self.wrapper, self.preexec_fn = dict(env or {}), list(wrapper), preexec_fn
        self.host, self.name, self.rie = host, name, Path(rie) if rie else None
        self.start_timeout_s, self.on_line = start_timeout_s, on_line
        self._fixed_ports = port is not None
        self.port, self.runtime_api_port = port, runtime_api_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._readers: list[threading.Thread] = []
        self._lines: dict[str, collections.deque[str]] = {}
        self._stdout_count = 0  # stdout lines ever read: where one invoke's lines begin
        self._reports: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._init_reports: list[float] = []
        self._seen = threading.Condition()
        self._invoke_lock = threading.Lock()  # overlapping invokes crash the RIE
        self._initialised = False
        self._exit: int | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The emulator's base URL (what boto3's ``endpoint_url`` takes)."""
        return f"http://{self.host}:{self.port}"

    @property
    def invoke_url(self) -> str:
        return self.url + INVOKE_PATH

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def function_env(self) -> dict[str, str]:
        """The function's environment: Lambda's variables and ours, nothing inherited but PATH
        (the RIE hands its whole environment to the function, credentials included)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(self.cwd),
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(self.timeout_s),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "PYTHONPATH": os.pathsep.join(self.pythonpath),
            "PYTHONNOUSERSITE": "1",
            "PYTHONUNBUFFERED": "1",  # log lines reach us as they are written, not at exit
        }
        if self.model is not None:
            env["MODEL_PATH"] = str(self.model)
        if PROCESS_TAG_ENV in os.environ:  # so that whoever started us can find every process we start
            env[PROCESS_TAG_ENV] = os.environ[PROCESS_TAG_ENV]
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        rie = self.rie or rie_binary()
        return [str(rie), "--runtime-interface-emulator-address", f"{self.host}:{self.port}",
                "--runtime-api-address", f"{self.host}:{self.runtime_api_port}",
                *self.wrapper, self.python, *self.python_flags, "-m", "awslambdaric", self.handler]

    def start(self) -> Emulator:
        """Start the emulator and wait until it answers; the function itself starts on the first invoke."""
        if self.alive():
            return self
        for attempt in range(3):
            fresh = attempt > 0 and not self._fixed_ports  # a port was taken meanwhile: pick others
            if self.port is None or fresh:
                self.port, self.runtime_api_port = free_ports(2, self.host)
            elif self.runtime_api_port is None or fresh:
                self.runtime_api_port = next(p for p in free_ports(2, self.host) if p != self.port)
            reserve(self.port, self.runtime_api_port)
            self._spawn()
            try:
                self._wait_ready()
                return self
            except BackendUnavailableError:
                in_use = any(_IN_USE in line for line in self._lines["stderr"])
                self.stop()
                if not in_use or self._fixed_ports:
                    raise
        raise BackendUnavailableError(f"{self.name}: no free loopback port pair after 3 tries")

    def _spawn(self) -> None:
        self._lines = {"stdout": collections.deque(maxlen=LOG_LINES_KEPT), "stderr": collections.deque(maxlen=LOG_LINES_KEPT)}
        self._reports, self._init_reports, self._initialised = collections.OrderedDict(), [], False
        self._stdout_count = 0
        self._proc = subprocess.Popen(self.command(), cwd=self.cwd, env=self.function_env(), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                      preexec_fn=self.preexec_fn)
        self._readers = [threading.Thread(target=self._read, args=(stream, pipe), daemon=True, name=f"{self.name}-{stream}")
                         for stream, pipe in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr))]
        for reader in self._readers:
            reader.start()
        atexit.register(self.stop)

    def _read(self, stream: str, pipe: Any) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._seen:
                self._lines[stream].append(line)
                if stream == "stdout":
                    self._stdout_count += 1
                if line.startswith("REPORT ") and (report := parse_report(line)) is not None and report.request_id:
                    self._reports[report.request_id] = report.facts(exclude=EMULATOR_PLACEHOLDERS)
                    while len(self._reports) > LOG_LINES_KEPT:  # invokes by other clients are never collected
                        self._reports.popitem(last=False)
                elif (init := _INIT_REPORT.search(line)) is not None:
                    self._init_reports.append(float(init["ms"]))
                self._seen.notify_all()
            if self.on_line is not None:
                try:
                    self.on_line(stream, line)
                except Exception:  # a broken hook must not stop the draining (a full pipe blocks the RIE)
                    log.exception("%s: the on_line hook failed; it is disabled", self.name)
                    self.on_line = None
        pipe.close()

    def _wait_ready(self) -> None:
        """Until our RIE itself listens on its port: an answer on that port could come from another
        server that holds it, while our RIE failed to bind and is exiting."""
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                for reader in self._readers:  # drain what it said before it died (the readers end at EOF)
                    reader.join(timeout=2)
                raise BackendUnavailableError(f"{self.name}: the Lambda emulator exited with code {self._exit_code()} "
                                              f"before it answered:\n{self.stderr_tail()}")
            if self._listening():
                return
            time.sleep(0.02)
        raise BackendUnavailableError(f"{self.name}: the Lambda emulator did not answer within {self.start_timeout_s:.0f} s:\n"
                                      f"{self.stderr_tail()}")

    def _listening(self) -> bool:
        if self._proc is None:
            return False
        try:
            connections = psutil.Process(self._proc.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in connections)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the runtime and the emulator, and reap them: no process or zombie is left behind."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        # The runtime first, while the RIE is alive to reap it; then the RIE, which we reap.
        for pid in session_members(proc.pid):
            if pid != proc.pid:
                _signal(pid, signal.SIGTERM)
        _signal(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _signal(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)
        for pid in session_members(proc.pid):  # anything that ignored SIGTERM or outlived the RIE
            _signal(pid, signal.SIGKILL)
        for reader in self._readers:
            reader.join(timeout_s)
        self._exit = proc.returncode
        release(self.port, self.runtime_api_port)

    def restart(self) -> Emulator:
        """A forced cold start: a new execution environment (same address where possible), once
        any invoke in flight has finished."""
        with self._invoke_lock:
            self.stop()
            return self.start()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- invoking -------------------------------------------------------------------------------

    def invoke(self, payload: bytes | str | Mapping[str, Any], *, timeout_s: float | None = None,
               headers: Mapping[str, str] | None = None) -> Invocation:
        """POST one payload to the Invoke API and wait for the function's answer.

        The default timeout covers an init phase and an invoke, each bounded by the function
        timeout, as on Lambda. Raises :class:`BackendUnavailableError` when the emulator is not
        running (call :meth:`restart`) and :class:`BackendTimeoutError` when no answer comes.
        """
        data = payload if isinstance(payload, bytes) else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        refuse_oversized_invoke(data, self.name)  # as Lambda does; the RIE would truncate it silently
        timeout = timeout_s if timeout_s is not None else 2 * self.timeout_s + 5
        with self._invoke_lock:
            if not self.alive():
                raise self._unavailable("is not running")
            initialising = not self._initialised
            with self._seen:
                init_reports, first_line = len(self._init_reports), self._stdout_count
            start = time.perf_counter()
            connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                connection.request("POST", INVOKE_PATH, body=data, headers={"content-type": "application/json", **(headers or {})})
                response = connection.getresponse()
                body = response.read()
            except TimeoutError:
                # The function is still running in there and a second invoke would overlap it
                # (which crashes the RIE): start a fresh environment, as Lambda does after a timeout.
                connection.close()
                self.stop()
                self.start()
                raise BackendTimeoutError(f"{self.name}: no answer from the function within {timeout:g} s; "
                                          "the environment was restarted (the next invoke is a cold start)") from None
            except (OSError, http.client.HTTPException) as exc:
                # A killed emulator closes its sockets before it can be reaped: give it a moment, so
                # the error says it exited rather than "running".
                proc = self._proc
                try:
                    if proc is not None:
                        proc.wait(DEATH_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
                raise self._unavailable(f"dropped the connection ({type(exc).__name__})") from None
            finally:
                connection.close()
            elapsed = (time.perf_counter() - start) * 1e3
            self._initialised = True
            # The RIE answers a runtime crash with 502 and prints no END or REPORT line for it.
            request_id, log_lines, report = self._settle(first_line, body, initialising, init_reports,
                                                         wait_s=0.5 if response.status == 200 else 0.0)
        return Invocation(self.name, response.status, body, elapsed, request_bytes=len(data), initialised=initialising,
                          report=report, request_id=request_id, log=log_lines)

    def _settle(self, first_line: int, body: bytes, initialising: bool, init_reports: int,
                wait_s: float) -> tuple[str | None, tuple[str, ...], dict[str, Any]]:
        """This invoke's request id, log lines and REPORT facts. The RIE prints its START, END and
        REPORT lines (and passes on the function's stdout and stderr) before it answers, but another
        thread reads them: wait up to ``wait_s`` for the REPORT line. One invoke at a time runs here,
        so every line from this invoke's START to its REPORT is its own."""
        deadline = time.monotonic() + wait_s
        with self._seen:
            while True:
                lines = self._stdout_since(first_line)
                request_id = _start_request_id(lines) or _body_request_id(body)
                settled = (request_id is not None and request_id in self._reports
                           and (not initialising or len(self._init_reports) > init_reports))
                remaining = deadline - time.monotonic()
                if settled or remaining <= 0:
                    break
                self._seen.wait(remaining)
            report = dict(self._reports.pop(request_id, {})) if request_id else {}
            if initialising and len(self._init_reports) > init_reports:
                report["emulator_init_ms"] = self._init_reports[-1]
        return request_id, _invocation_lines(lines, request_id), report

    def _stdout_since(self, first_line: int) -> list[str]:
        """The stdout lines read since line number ``first_line`` (as many as are still kept)."""
        kept = self._lines.get("stdout", collections.deque())
        count = min(self._stdout_count - first_line, len(kept))
        return list(itertools.islice(kept, len(kept) - count, None)) if count > 0 else []

    def _unavailable(self, what: str) -> BackendUnavailableError:
        if self.port is None:
            return BackendUnavailableError(f"{self.name} was never started; call start()")
        state = "running" if self.alive() else f"exited with code {self._exit_code()}"
        return BackendUnavailableError(f"{self.name} at {self.url} {what} (emulator {state}); restart it. "
                                       f"Last emulator output:\n{self.stderr_tail(5)}")

    def _exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else self._exit

    # --- output -----------------------------------------------------------------------------------

    def log_lines(self, stream: str = "stdout") -> list[str]:
        """The latest lines the function (stdout) or the emulator (stderr) printed."""
        with self._seen:
            return list(self._lines.get(stream, ()))

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_lines("stderr")[-lines:]) or "(no output)"


_START = re.compile(r"^START RequestId: (?P<id>\S+)")


def _start_request_id(lines: Sequence[str]) -> str | None:
    """The request id of the first ``START RequestId: ...`` line."""
    return next((m["id"] for line in lines if (m := _START.match(line)) is not None), None)


def _body_request_id(body: bytes) -> str | None:
    """The request id the handler put in its answer (ours, or a runtime error object's ``requestId``)."""
    try:
        parsed = json.loads(body)
        inner = json.loads(parsed["body"]) if isinstance(parsed, dict) and isinstance(parsed.get("body"), str) else parsed
        found = (inner.get("request_id") or inner.get("requestId")) if isinstance(inner, dict) else None
    except (ValueError, TypeError):
        return None
    return found if isinstance(found, str) and found else None


def _invocation_lines(lines: list[str], request_id: str | None) -> tuple[str, ...]:
    """From the invocation's START line to its REPORT line (to the last line read, when no REPORT came)."""
    if request_id is None:
        return tuple(lines)
    begin = next((i for i, line in enumerate(lines) if line.startswith(f"START RequestId: {request_id}")), 0)
    end = next((i + 1 for i, line in enumerate(lines) if line.startswith(f"REPORT RequestId: {request_id}")), len(lines))
    return tuple(lines[begin:end])


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
