"""Free loopback ports for the servers and emulators this project starts, never handed out twice."""

from __future__ import annotations

import socket
import threading

_reserved: set[int] = set()  # ports of this process's emulators: one's lazily bound port is never another's
_lock = threading.Lock()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct ports the OS says are free now and that this process has not reserved (the RIE binds
    its runtime API port only at the first invoke). A race with other processes remains: callers
    that bind later retry (:meth:`local.lambda_env.rie.Emulator.start` does)."""
    sockets: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
            port = sock.getsockname()[1]
            with _lock:
                if port not in _reserved:
                    ports.append(port)
        return ports
    finally:
        for sock in sockets:
            sock.close()


def reserve(*ports: int | None) -> None:
    """Keep these ports from being handed out until :func:`release`."""
    with _lock:
        _reserved.update(p for p in ports if p is not None)


def release(*ports: int | None) -> None:
    with _lock:
        _reserved.difference_update(p for p in ports if p is not None)
