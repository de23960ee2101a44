"""Start and stop a peer service (:class:`PeerProcess`) from its own virtualenv, for the load test."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from lambda_onnx.errors import BackendUnavailableError
from local.serve.process import ChildServer

ROOT = Path(__file__).resolve().parents[3]
VENVS = ROOT / ".venv" / "peers"
SETUP = "bash local/measure/peers/setup.sh"
PEERS = ("bentoml", "ray")
LABELS = {"bentoml": "BentoML", "ray": "Ray Serve"}
START_TIMEOUT_S = 240.0  # Ray starts a whole local cluster
STOP_TIMEOUT_S = 60.0


def python(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def installed(peer: str) -> bool:
    return python(peer).is_file()


def version(peer: str) -> str:
    """The peer's installed version, read from its virtualenv's metadata (no import)."""
    out = subprocess.run([str(python(peer)), "-c", f"import importlib.metadata as m; print(m.version({peer!r}))"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or "unknown"


def _command(peer: str, host: str, port: int) -> list[str]:
    if peer == "bentoml":
        return [str(python(peer)), "-m", "bentoml", "serve", "local.measure.peers.bentoml_service:Classify",
                "--host", host, "--port", str(port)]
    if peer == "ray":
        return [str(python(peer)), "-m", "local.measure.peers.ray_service", "--host", host, "--port", str(port)]
    raise ValueError(f"peer must be one of {PEERS}, not {peer!r}")


class PeerProcess(ChildServer):
    """One peer service in a child process (a session of its own) on a loopback port.

    :meth:`start` returns once ``POST /classify`` answers ``probe`` with 200 (the answer is kept
    in :attr:`first_answer`); :meth:`stop` sends SIGTERM, waits, then ends by pid every process it
    started that is still alive (Ray's raylet, GCS and workers; BentoML's workers).
    """

    def __init__(self, peer: str, model: str | Path, *, lanes: int, threads: int, host: str = "127.0.0.1",
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        if not installed(peer):
            raise BackendUnavailableError(f"{LABELS.get(peer, peer)} is not installed in {VENVS / peer}: run {SETUP}")
        super().__init__(f"peer-{peer}-", host)
        self.peer, self.model, self.lanes, self.threads = peer, Path(model).resolve(), lanes, threads
        self.label = LABELS[peer]
        self.start_timeout_s = start_timeout_s
        self.first_answer: dict | None = None
        self._family: set[int] = set()

    def processes(self) -> list[psutil.Process]:
        """The peer's process and every descendant alive now (remembered, so :meth:`stop` can end them)."""
        if self._proc is None:
            return []
        try:
            root = psutil.Process(self._proc.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        self._family.update(p.pid for p in family)
        return family

    def start(self, probe: bytes, content_type: str = "image/jpeg") -> PeerProcess:
        import httpx

        from local.ports import free_ports

        (self.port,) = free_ports(1, self.host)
        env = {**os.environ, "PEER_MODEL": str(self.model), "PEER_WORKERS": str(self.lanes),
               "PEER_THREADS": str(self.threads), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
               "BENTOML_DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0", "VIRTUAL_ENV": str(VENVS / self.peer)}
        self._proc = subprocess.Popen(_command(self.peer, self.host, self.port), cwd=ROOT, stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

        def answers() -> bool:
            self.processes()  # remembered as they appear, so stop() can end every one
            response = httpx.post(self.url + "/classify", content=probe, headers={"content-type": content_type}, timeout=30)
            if response.status_code != 200:
                return False
            self.first_answer = response.json()
            self.processes()
            return True

        self.wait_ready(answers, self.label, self.start_timeout_s, 0.5)
        return self

    def stop(self) -> None:
        """SIGTERM, then every remembered process still alive is ended by its pid."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
            self._family.update(p.pid for p in family)
        except psutil.Error:
            pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        left = []
        for pid in self._family - {proc.pid}:
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    left.append(process)
            except psutil.Error:
                continue
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:  # they usually follow their parent out by themselves
            time.sleep(0.2)
            left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for process in left:
            try:
                process.kill()
            except psutil.Error:
                pass
        self._family.clear()

    def __enter__(self) -> PeerProcess:
        return self

