"""``python -m local serve`` as a child process on a loopback port: for soaks, load tests, replays and tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from lambda_onnx.errors import BackendUnavailableError

ROOT = Path(__file__).resolve().parents[2]
SERVE_START_TIMEOUT_S = 90.0


class ChildServer:
    """A server in a child process on a loopback port, its output kept in a temporary file: what
    :class:`ServeProcess` and the load test's peers (``local.measure.peers.process``) share.
    Subclasses start the process (into ``_proc``) and stop it."""

    def __init__(self, log_prefix: str, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host, self.port = host, port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=log_prefix, suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended (negative: the signal that ended it), else None."""
        return self._proc.poll() if self._proc else None

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return Path(self._log.name).read_text(errors="replace")

    def last_line(self) -> str:
        """The last line the server printed (its one-line error, when it failed to start)."""
        return (self.output().strip().splitlines()[-1:] or ["(no output)"])[0]

    def wait_ready(self, ready: Callable[[], bool], what: str, timeout_s: float, interval_s: float) -> None:
        """Poll ``ready`` until it is true; if the process exits first or ``timeout_s`` passes, stop it
        and raise :class:`BackendUnavailableError` naming ``what`` (with its last line when it exited)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                last, code = self.last_line(), self._proc.returncode if self._proc else None
                self.stop()
                raise BackendUnavailableError(f"{what} exited with code {code}: {last}")
            try:
                if ready():
                    return
            except httpx.TransportError:
                pass
            time.sleep(interval_s)
        self.stop()
        raise BackendUnavailableError(f"{what} did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        raise NotImplementedError

    def terminate(self, timeout_s: float) -> None:
        """SIGTERM the process, SIGKILL it if it has not ended within ``timeout_s``, and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)

    def close(self) -> None:
        """Stop the server and delete its log (read :meth:`output` before)."""
        self.stop()
        if not self._log.closed:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServeProcess(ChildServer):
    """``python -m local serve`` in a child process on a loopback port, its output kept in a file.

    ``args`` are passed to ``local serve`` as they are (``--max-queue 4``, ``--runtime onnxruntime``,
    ...); ``wrapper`` is a command prefix that confines it (a cgroup's, ``taskset``'s). :meth:`start`
    returns once ``/health`` answers, or raises :class:`~lambda_onnx.errors.BackendUnavailableError`
    with what the server printed (a bad model is a one-line error there).
    """

    def __init__(self, model: str | Path, *args: str, host: str = "127.0.0.1", port: int | None = None,
                 env: dict[str, str] | None = None, start_timeout_s: float = SERVE_START_TIMEOUT_S,
                 wrapper: Sequence[str] = ()) -> None:
        super().__init__("local-serve-", host, port)
        self.model, self.args, self.wrapper = Path(model), list(args), list(wrapper)
        self.env, self.start_timeout_s = env, start_timeout_s

    def start(self) -> ServeProcess:
        """Start the server and wait until ``/health`` answers."""
        if self.port is None:
            from local.ports import free_ports

            (self.port,) = free_ports(1, self.host)
        command = [*self.wrapper, sys.executable, "-m", "local", "serve", "--model", str(self.model), "--host", self.host,
                   "--port", str(self.port), *self.args]
        self._proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})})
        try:
            self.wait_ready(lambda: httpx.get(self.url + "/health", timeout=1.0).status_code == 200, "local serve",
                            self.start_timeout_s, 0.1)
        except BackendUnavailableError:
            self.close()
            raise
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        """Terminate the server (kill it if it does not stop) and reap it; its log stays."""
        self.terminate(timeout_s)

    def __enter__(self) -> ServeProcess:
        return self.start()
