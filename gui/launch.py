"""Launch the app: who gets which role, the logins, the bounds around the server, an honest word when no
public link was made.

- On loopback without ``--share`` the app is the **operator**'s (everything it does today).
- Reachable by others (``--share``, or any ``--host`` other than loopback) the app at ``/`` is the
  **viewer**'s; with an operator login (``--operator USER``, its password from an environment variable or a
  file) the operator's app is mounted at ``/operator/`` behind that login alone.
- A shared app without a login gets a generated viewer password, printed once; a non-loopback ``--host``
  without a login refuses to start unless ``--no-auth`` says so. Failed logins are slowed down.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import gradio as gr
import httpx
from starlette.middleware import Middleware

from gui.access import OPERATOR, OPERATOR_LIMITS, VIEWER, Access
from gui.app import build_app
from gui.context import AppContext
from gui.uploads import UploadGate
from lambda_onnx.sidecar import load_verified
from local.clients.targets import Targets

log = logging.getLogger("gui.launch")

OPERATOR_PATH = "/operator"
GENERATED_USER = "viewer"
# Events waiting in the queue, everyone's together; past it a visitor is told the queue is full.
QUEUE_MAX_SIZE = 32
DEFAULT_CONCURRENCY = 4
# Failed logins: each recent failure for a login doubles the wait before the answer, up to this.
FAILED_LOGIN_BASE_S = 0.5
FAILED_LOGIN_MAX_S = 30.0
FAILED_LOGIN_WINDOW_S = 600.0


class UsageError(ValueError):
    """Options that would do something unsafe or impossible."""


@dataclass(frozen=True)
class LaunchOptions:
    host: str = "127.0.0.1"
    port: int | None = 7860
    share: bool = False
    auth: str | None = None  # "USER" (password in auth_password) or "USER:PASS" (visible in `ps`: discouraged)
    auth_password: str | None = None  # from an environment variable or a file (python -m gui reads them)
    operator: str | None = None  # the operator's login, when the app is reachable by others
    operator_password: str | None = None  # from an environment variable or a file, never the command line
    no_auth: bool = False
    # Uploads are read whole to preview and downscale them; None: the role's bound (gui.access: 20 MB for a
    # viewer, 100 MB for the operator, several times a 48 MP phone photo).
    max_upload_mb: int | None = None

    @property
    def exposed(self) -> bool:
        """Can anyone but this machine's users reach the app?"""
        return self.share or not is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: this machine only ("" and 0.0.0.0 bind every address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Logins:
    """Gradio's ``auth`` callable: the accounts it accepts, each failure answered later than the last
    (per login, within a window) so that guessing is slow; one check at a time per login."""

    accounts: dict[str, str]
    _failures: dict[str, collections.deque[float]] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def checker(self) -> Callable[[str, str], Awaitable[bool]]:
        """The check as a coroutine function: Gradio awaits ``auth`` only when ``inspect.iscoroutinefunction`` says
        so (an object with an async ``__call__`` would be called, not awaited, and its coroutine taken as True)."""

        async def check(username: str, password: str) -> bool:
            return await self.check(username, password)

        return check

    async def check(self, username: str, password: str) -> bool:
        expected = self.accounts.get(username)
        lock = self._locks.setdefault(username, asyncio.Lock()) if expected is not None else asyncio.Lock()
        async with lock:
            ok = expected is not None and hmac.compare_digest(password.encode(), expected.encode())
            now = time.monotonic()
            recent = self._failures.setdefault(username if expected is not None else "", collections.deque())
            while recent and now - recent[0] > FAILED_LOGIN_WINDOW_S:
                recent.popleft()
            if ok:
                recent.clear()
                return True
            recent.append(now)
            delay = min(FAILED_LOGIN_MAX_S, FAILED_LOGIN_BASE_S * 2 ** (len(recent) - 1))
            log.warning("failed login for %r (%d recent): answered after %.1f s", username, len(recent), delay)
            await asyncio.sleep(delay)
            return False


@dataclass(frozen=True)
class Plan:
    """What :func:`launch` serves: the role at ``/``, its logins, and the operator's logins at ``/operator/``."""

    role: str
    logins: dict[str, str] | None
    operator_logins: dict[str, str] | None
    generated: str | None = None  # the viewer password made up for this run


def _login(user: str | None, password: str | None, what: str) -> tuple[str, str] | None:
    if not user:
        return None
    name, sep, inline = user.partition(":")
    password = password if password is not None else (inline if sep else None)
    if not name or not password:
        raise UsageError(f"{what} needs a password: from an environment variable or a file (see python -m gui --help)")
    return name, password


def plan(options: LaunchOptions) -> Plan:
    """Roles and logins for ``options``; a :class:`UsageError` for a combination that would be unsafe."""
    viewer = _login(options.auth, options.auth_password, "--auth")
    operator = _login(options.operator, options.operator_password, "--operator")
    if not options.exposed:
        # This machine's users only: the app is the operator's (a login, if one is given, still applies).
        accounts = dict([viewer] if viewer else []) | dict([operator] if operator else [])
        return Plan(OPERATOR, accounts or None, None)
    if viewer and operator and viewer[0] == operator[0]:
        raise UsageError("--operator needs a login of its own, not the viewers' (--auth)")
    generated = None
    if viewer is None and not options.no_auth:
        if not options.share:
            raise UsageError(f"--host {options.host} lets other machines reach the app: give a login (--auth USER, its "
                             "password from $GUI_PASSWORD or --password-file), or --no-auth to serve it without one")
        generated = secrets.token_urlsafe(12)
        viewer = (GENERATED_USER, generated)
    return Plan(VIEWER, dict([viewer]) if viewer else None, dict([operator]) if operator else None, generated)


def parse_auth(options: LaunchOptions) -> tuple[str, str] | None:
    """The login the app at ``/`` asks for (None: no login), as :func:`plan` decides it."""
    accounts = plan(options).logins
    return next(iter(accounts.items())) if accounts else None


@dataclass
class Running:
    demo: gr.Blocks
    context: AppContext
    local_url: str
    share_url: str | None
    role: str = OPERATOR
    operator_demo: gr.Blocks | None = None
    operator_url: str | None = None

    def close(self) -> None:
        if self.operator_demo is not None:
            self.operator_demo.close(verbose=False)
        self.demo.close(verbose=False)
        self.context.close()


def launch(targets: Targets, options: LaunchOptions, *, block: bool = False, quiet: bool = False) -> Running:
    """Build and start the app; with ``block`` serve until interrupted, then stop the emulators.

    A model that is there but does not match its sidecar (truncated, corrupt, sidecar missing) is a
    :class:`~lambda_onnx.errors.ModelLoadError` now, not an error on the first click; no model at
    all opens the first-run export view instead (for the operator; a viewer is told to wait)."""
    chosen = plan(options)
    context = AppContext(targets)
    if context.model_ready():
        load_verified(context.model_path)
    access = Access(chosen.role)
    limits = access.limits if options.max_upload_mb is None else replace(access.limits,
                                                                          upload_bytes=options.max_upload_mb * 2**20)
    demo = build_app(context, access)
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    _, local_url, share_url = demo.launch(
        server_name=options.host, server_port=options.port, share=options.share,
        auth=cast(Any, Logins(chosen.logins).checker()) if chosen.logins else None, prevent_thread_lock=True, quiet=quiet,
        footer_links=["api", "gradio"], max_file_size=limits.upload_bytes, mcp_server=False, show_error=False,
        app_kwargs={"middleware": [Middleware(UploadGate, limits=limits, operator_path=OPERATOR_PATH,
                                              operator_limits=OPERATOR_LIMITS)]})
    running = Running(demo, context, local_url, share_url, role=chosen.role)
    if chosen.operator_logins:
        running.operator_demo = build_app(context, Access(OPERATOR))
        running.operator_demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
        gr.mount_gradio_app(demo.server_app, running.operator_demo, OPERATOR_PATH, auth=Logins(chosen.operator_logins).checker(),
                            footer_links=["api", "gradio"], max_file_size=OPERATOR_LIMITS.upload_bytes, mcp_server=False,
                            show_error=False)
        running.operator_url = local_url.rstrip("/") + OPERATOR_PATH + "/"
        # Mounted after the server started, so its startup (the queue) runs on the first call of this route.
        httpx.get(running.operator_url + "gradio_api/startup-events", timeout=30).raise_for_status()
    if chosen.generated:
        print(f"🔐 Viewer login (generated for this run, shown once): {GENERATED_USER} / {chosen.generated}", flush=True)
    if options.share and not share_url:
        context.share_status = (f"⚠️ No public link could be made (no network access to Gradio's share servers?). "
                                f"The app is serving locally only, at {local_url}.")
        print(context.share_status, flush=True)
    elif share_url:
        context.share_status = f"🌐 Public link: {share_url}" + (" (login required)" if chosen.logins else
                                                                 " (NO LOGIN: anyone with the link)")
        print(context.share_status, flush=True)
    if chosen.role == VIEWER:
        print(f"Visitors get the viewer role at {local_url}" + (f"; the operator's app is at {running.operator_url} "
                                                               "(its own login)" if running.operator_url else
                                                               " (no operator login: operate it from loopback)"),
              flush=True)
    if block:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            running.close()
    return running
