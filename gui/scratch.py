"""The app's one temporary folder: every file a run writes (reports, charts, downscaled copies) goes in a
folder of its own under it, folders older than ``max_age_s`` are removed as new ones are made, and the
whole is removed when the app closes. (Gradio copies each returned file into its own cache, which its
``delete_cache`` empties; uploads land there too.)"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_MAX_AGE_S = 1800.0


class Scratch:
    def __init__(self, max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="resnet-serverless-gui-"))
        self.max_age_s = max_age_s
        self._lock = threading.Lock()

    def folder(self, prefix: str) -> Path:
        """A new empty folder for one run's files (and the old ones pruned)."""
        self.prune()
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))

    def prune(self, max_age_s: float | None = None) -> None:
        limit = time.time() - (self.max_age_s if max_age_s is None else max_age_s)
        with self._lock:
            for child in list(self.root.glob("*")) if self.root.is_dir() else []:
                try:
                    if child.stat().st_mtime < limit:
                        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
