"""HAProxy in front of the fleet: its configuration, the process, and its runtime API.

The balancer is Debian's ``haproxy`` (2.6 on bookworm), not a hand-written proxy. It starts with
an empty backend; instances are added, drained and deleted while it runs through the runtime API on
its stats socket (``add server``, ``set server ... state drain|maint``, ``del server``: dynamic
servers, no reload; https://docs.haproxy.org/2.6/management.html#9.3), and its counters are read
there too (``show stat``).

Choices, each what a production fleet behind an AWS ALB does too:

- ``balance leastconn``: the instance with the fewest requests in progress gets the next one (the
  ALB's "least outstanding requests", which the fleet simulation models).
- ``option httpchk GET /health``, every second, down after 2 failures, up after 1; ``observe
  layer4`` with ``error-limit 1 on-error mark-down`` takes a server out at its first refused
  connection, without waiting for the next check (an instance that was SIGKILLed).
- ``retries`` with ``retry-on conn-failure`` and ``option redispatch``: a request that could not
  *connect* to its server is sent to another one. A request that reached the server's app is never
  sent again. A classification is idempotent, so replaying it would be harmless to the answer, but
  a request that killed its instance (a decoder crash, an out-of-memory kill) would be replayed onto
  the next instance and could take the whole fleet down one instance at a time (a "query of
  death"); it fails once instead, as a 502, and is counted.
- ``option http-server-close``: every request opens its own connection to its server (a loopback
  handshake, far below one inference), so none is ever written onto an idle kept-alive connection
  to an instance that has died since; the failure is then a refused connection, retried elsewhere.
- Timeouts: 2 s to connect (loopback), 10 s for the request headers, 90 s for an answer (past the
  server's 60 s lane timeout, after which it answers 500 itself), 30 s in HAProxy's own queue.
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from lambda_onnx.errors import BackendUnavailableError
from local.serve.process import ChildServer

BACKEND = "serve"
FRONTEND = "classify"
HAPROXY_START_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 5.0
# Options of every server added at run time (dynamic servers take no default-server line).
SERVER_OPTIONS = "check inter 1s fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down"


class HAProxyError(BackendUnavailableError):
    """HAProxy is missing, did not start, or refused a runtime API command; the message says which."""


def haproxy_binary() -> str:
    """The ``haproxy`` executable, or :class:`HAProxyError` saying how to install it."""
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).is_file()), None)
    if found is None:
        raise HAProxyError("haproxy is not installed (Debian/Ubuntu: `apt-get install haproxy`; `bash .ci/install` does it)")
    return found


def config_text(host: str, port: int, stats_socket: Path, maxconn: int = 4096) -> str:
    """The configuration: one HTTP frontend on ``host:port``, one empty ``leastconn`` backend."""
    return f"""\
global
    stats socket {stats_socket} mode 600 level admin
    stats timeout 10s
    maxconn {maxconn}

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout server 90s
    timeout queue 30s
    retries 2
    retry-on conn-failure
    option redispatch 1
    option http-server-close

frontend {FRONTEND}
    bind {host}:{port}
    default_backend {BACKEND}

backend {BACKEND}
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
"""


class HAProxyProcess(ChildServer):
    """``haproxy -db`` (foreground) in a child process, with its configuration and stats socket in a
    temporary directory. :meth:`start` returns once the runtime API answers."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, maxconn: int = 4096) -> None:
        super().__init__("fleet-haproxy-", host, port)
        self.maxconn = maxconn
        self._dir = Path(tempfile.mkdtemp(prefix="fleet-haproxy-"))
        self.socket_path = self._dir / "admin.sock"
        self.config_path = self._dir / "haproxy.cfg"

    def start(self) -> HAProxyProcess:
        binary = haproxy_binary()
        if self.port is None:
            from local.ports import free_ports

            (self.port,) = free_ports(1, self.host)
        self.config_path.write_text(config_text(self.host, self.port, self.socket_path, self.maxconn))
        check = subprocess.run([binary, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise HAProxyError(f"haproxy refused its configuration: {(check.stderr or check.stdout).strip()}")
        self._proc = subprocess.Popen([binary, "-db", "-f", str(self.config_path)], stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_ready(self._answers, "haproxy", HAPROXY_START_TIMEOUT_S, 0.05)
        except BackendUnavailableError as exc:
            self.close()
            raise HAProxyError(exc.message) from None
        return self

    def _answers(self) -> bool:
        try:
            return "Name: HAProxy" in self.command("show info")
        except HAProxyError:
            return False

    def command(self, line: str) -> str:
        """Send one runtime API command and return HAProxy's answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(SOCKET_TIMEOUT_S)
                sock.connect(str(self.socket_path))
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise HAProxyError(f"haproxy's runtime API ({self.socket_path}) did not answer {line!r}: {exc.strerror or exc}") from None
        return b"".join(chunks).decode(errors="replace")

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` by ``proxy/server`` (``classify/FRONTEND``, ``serve/BACKEND``, ``serve/i3``...)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(line for line in text.splitlines() if line.strip())
        return {f"{row['pxname']}/{row['svname']}": row for row in rows}

    # --- servers ---------------------------------------------------------------------------------------

    def add_server(self, name: str, address: str) -> None:
        """Add ``name`` at ``address`` (``host:port``), health-checked, and let it take traffic."""
        self._expect(f"add server {BACKEND}/{name} {address} {SERVER_OPTIONS}", "New server registered")
        self._expect(f"enable health {BACKEND}/{name}", "")
        self._expect(f"set server {BACKEND}/{name} state ready", "")

    def drain_server(self, name: str) -> None:
        """No new requests for ``name``; those it has keep going."""
        self._expect(f"set server {BACKEND}/{name} state drain", "")

    def delete_server(self, name: str, timeout_s: float = 5.0) -> None:
        """Take ``name`` out for good (maintenance first; HAProxy deletes it once nothing uses it)."""
        self._expect(f"set server {BACKEND}/{name} state maint", "")
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.command(f"del server {BACKEND}/{name}")
            if "Server deleted" in answer or "No such server" in answer:
                return
            if time.monotonic() > deadline:
                raise HAProxyError(f"haproxy did not delete {BACKEND}/{name}: {answer.strip()}")
            time.sleep(0.1)

    def _expect(self, line: str, wanted: str) -> None:
        answer = self.command(line).strip()
        if (wanted and wanted not in answer) or (not wanted and answer):
            raise HAProxyError(f"haproxy refused {line!r}: {answer}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop HAProxy (SIGTERM: a hard stop of a foreground haproxy; kill if it lingers) and reap it."""
        self.terminate(timeout_s)

    def close(self) -> None:
        super().close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> HAProxyProcess:
        return self.start()
