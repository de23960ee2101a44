"""``local serve --workers N``: N HTTP fronts, each a process with a listening socket, a queue and
lanes of its own (``SO_REUSEPORT``). One front (the default) balances requests over its lanes through
one queue; several balance only connections, as follows.

uvicorn's own workers share one listening socket, and the first to wake accepts every pending
connection: with keep-alive clients, one worker got nearly all of them (the README's server side
has the figures). With a socket per worker in one ``SO_REUSEPORT`` group, the kernel hands each new
connection to one of the sockets by a hash of its addresses, so connections spread evenly over the
workers without any process accepting for the others
(https://lwn.net/Articles/542629/). The group is made here, all at once: before joining it, the
port is bound once without ``SO_REUSEPORT``, which fails if anything else holds it, so an unrelated
server on the same port is an error rather than a silent partner.

The parent loads no model: it binds, starts the workers (``spawn``; each starts its own lanes),
restarts one that dies, and stops them all when it is interrupted or terminated.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from local.serve.config import ServeConfig
from local.serve.protocol import uvicorn_options

log = logging.getLogger("uvicorn.error")
BACKLOG = 2048  # uvicorn's default
RESTART_PAUSE_S = 1.0
STOP_TIMEOUT_S = 20.0

multiprocessing.allow_connection_pickling()  # sockets pass to spawned workers


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port_free(host: str, port: int) -> None:
    """Raise OSError (EADDRINUSE) if anything listens on ``host:port`` already, reuse-port group or not."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is not a listener
        probe.bind((host, port))


def reuseport_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port, in one ``SO_REUSEPORT`` group (port 0: one chosen for all)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(_family(host), socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _worker(sock: socket.socket, config: ServeConfig, app_factory: Callable[[ServeConfig], Any], log_level: str) -> None:
    """One worker process: build the app with ``app_factory(config)`` and serve ``sock``."""
    from local.serve.drain import serve

    try:
        serve(app_factory(config), uvicorn_options(config, log_level), config.drain_timeout_s, sockets=[sock])
    except KeyboardInterrupt:  # the parent is stopping everything
        pass


def serve_workers(config: ServeConfig, app_factory: Callable[[ServeConfig], Any], *, host: str, port: int,
                  log_level: str) -> None:
    """Run the configuration's worker processes on ``host:port`` until interrupted or terminated; each
    builds its app with ``app_factory(config)`` (a module-level function: it is passed to spawned processes)."""
    import uvicorn

    uvicorn.Config(app_factory, factory=True, log_level=log_level)  # this process logs as they do
    check_port_free(host, port)
    workers = config.split().workers
    sockets = reuseport_sockets(host, port, workers)
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start(index: int) -> Any:
        process = context.Process(target=_worker, args=(sockets[index], config, app_factory, log_level), name=f"local-serve-worker-{index}")
        process.start()
        return process

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start(i) for i in range(workers)]
    log.info("%d workers (pids %s), one listening socket each on %s:%d (SO_REUSEPORT)", workers,
             ", ".join(str(p.pid) for p in processes), host, port)
    try:
        while not stopping:
            for index, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    log.error("worker %d (pid %s) exited with code %s; starting it again", index, process.pid,
                              process.exitcode)
                    time.sleep(RESTART_PAUSE_S)
                    processes[index] = start(index)
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + config.drain_timeout_s + STOP_TIMEOUT_S  # each worker drains (SIGTERM)
        for process in processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        for sock in sockets:
            sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
