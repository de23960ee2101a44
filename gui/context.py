"""The app's shared state: targets, the two backends (built lazily, once), and the model identity.

Nothing per user lives here: results travel in each event's return values, so one browser
session never sees another's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from gui.scratch import Scratch
from lambda_onnx.errors import ModelLoadError
from lambda_onnx.sidecar import RANDOM_WEIGHTS_WARNING, Sidecar, load_verified
from local.clients.base import Backend
from local.clients.targets import Targets, server_backend, serverless_backend

RANDOM_BANNER = "⚠️ " + RANDOM_WEIGHTS_WARNING.replace("RANDOM WEIGHTS", "**RANDOM WEIGHTS**", 1)


@dataclass
class AppContext:
    targets: Targets
    share_status: str = ""
    scratch: Scratch = field(default_factory=Scratch)  # every file a run writes, removed on close
    _server: Backend | None = None
    _serverless: Backend | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_path(self) -> Path:
        return self.targets.model

    def model_ready(self) -> bool:
        return self.model_path.is_file()

    def sidecar(self) -> Sidecar:
        """The model's sidecar, checked against the file (ModelLoadError with a reason otherwise)."""
        return load_verified(self.model_path, verify_sha256=False)

    def use_model(self, path: Path) -> None:
        """Switch to another exported model (after the setup view exported one)."""
        with self._lock:
            self._close_locked()
            self.targets = replace(self.targets, model=Path(path))

    def banner(self) -> str:
        try:
            return RANDOM_BANNER if self.sidecar().random_weights else ""
        except ModelLoadError:
            return ""

    def server(self) -> Backend:
        with self._lock:
            if self._server is None:
                self._server = server_backend(self.targets)
            return self._server

    def serverless(self) -> Backend:
        with self._lock:
            if self._serverless is None:
                self._serverless = serverless_backend(self.targets)
            return self._serverless

    def restart_serverless(self) -> str:
        """Force a cold start: restart the emulator (only the local emulator can do this)."""
        backend = self.serverless()
        restart = getattr(getattr(backend, "target", None), "restart", None)  # EmulatorBackend's emulator(s)
        if restart is None:
            return "a cold start can only be forced on the local emulator; on AWS, wait for environments to expire"
        restart()
        return "serverless environment restarted: the next request is a cold start"

    def _close_locked(self) -> None:
        for backend in (self._server, self._serverless):
            if backend is not None:
                backend.close()
        self._server = self._serverless = None

    def close(self) -> None:
        with self._lock:
            self._close_locked()
        self.scratch.close()
