"""The server image (deploy/server/Dockerfile), proven without Docker: it lints clean, its lock is
hash-locked and in step with its pins, and the /app it describes (assembled from its own COPY and pip
lines) runs its CMD under Python 3.12 with nothing else on the path, answers as the model does in
process, writes nothing under /app, and drains on SIGTERM without losing an accepted request."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import httpx
import psutil
import pytest

from lambda_onnx.canary import canary_path
from lambda_onnx.photos import by_name, upscaled_jpeg
from lambda_onnx.sidecar import sidecar_path
from local.ports import free_ports
from local.serve.config import DRAIN_TIMEOUT_S
from tests.helpers.process import ROOT
from tests.helpers.taskroot import IMAGE_PYTHON, PLATFORMS, TaskRoot, assemble_task_root, find_python, localise, parse_dockerfile
from tests.test_image import hadolint
from tests.test_lock import HASH, canonical, logical_lines, pins

SERVER = ROOT / "deploy" / "server"
DOCKERFILE = SERVER / "Dockerfile"
REQUIREMENTS = SERVER / "requirements.txt"
LOCK = SERVER / "requirements.lock"
IGNORE = SERVER / "Dockerfile.dockerignore"


def test_dockerfile_lints_clean():
    out = hadolint(DOCKERFILE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_runs_local_serve_pinned_non_root_with_a_health_check():
    spec = parse_dockerfile(DOCKERFILE)
    assert re.fullmatch(r"python:3\.12-slim@sha256:[0-9a-f]{64}", spec.base), spec.base  # a digest, not a moving tag
    user = spec.meta["USER"].split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user), user  # numeric: runAsNonRoot can check it
    assert "/health" in spec.meta["HEALTHCHECK"] and spec.meta["EXPOSE"] == "8000"
    assert spec.cmd[:3] == ["python", "-m", "local.commands.serve"] and "0.0.0.0" in spec.cmd
    (pip,) = [words for keyword, words in spec.steps if keyword == "RUN" and words[:2] == ["pip", "install"]]
    assert {"--no-cache-dir", "--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(pip)
    assert pip[pip.index("-r") + 1] == "/app/requirements.lock"
    # The top-level Dockerfile stays the Lambda image's (sam build builds it): nothing of local/ in it.
    assert "local/" not in (ROOT / "Dockerfile").read_text().split("FROM", 1)[1]


def direct_pins(path: Path) -> dict[str, str]:
    """The pins of a requirements file, following its ``-r`` lines."""
    found: dict[str, str] = {}
    for line in logical_lines(path):
        if line.startswith("-r "):
            found |= direct_pins((path.parent / line.split(None, 1)[1]).resolve())
        else:
            name, version = line.split("==")
            found[canonical(name)] = version.strip()
    return found


def test_the_lock_holds_every_pin_at_its_version_with_hashes_and_nothing_heavy():
    direct, locked = direct_pins(REQUIREMENTS), pins(LOCK)
    assert {name: version for name, version in direct.items() if locked.get(name) != version} == {}
    for line in logical_lines(LOCK):
        assert [m["digest"] for m in HASH.finditer(line)], f"no hash for {line.split()[0]}"
        assert ";" not in line, line.split()[0]
    assert not {name for name in locked if "torch" in name or name in ("gradio", "matplotlib", "boto3", "httpx")}
    header = LOCK.read_text().splitlines()[:3]
    assert any("uv pip compile deploy/server/requirements.txt" in line and "--generate-hashes" in line for line in header)


@pytest.mark.slow
@pytest.mark.parametrize("machine", list(PLATFORMS))
def test_the_lock_is_closed_for_each_architecture(tmp_path, machine):
    """As for the Lambda image's lock (tests/test_lock.py): resolved with hashes required and dependencies
    followed, nothing outside the lock is needed, for x86-64 (c7i, c7a) and arm64 (Graviton) alike."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
               "--require-hashes", "--only-binary=:all:", "--python-version", IMAGE_PYTHON, "--implementation", "cp",
               "--target", str(tmp_path), *[arg for p in PLATFORMS[machine] for arg in ("--platform", p)], "-r", str(LOCK)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_servers_pins_are_local_serves_pins():
    """The image serves with the versions the tests run: every pin here is local/requirements.txt's."""
    local = direct_pins(ROOT / "local" / "requirements.txt")
    assert {name: version for name, version in direct_pins(REQUIREMENTS).items() if local.get(name) != version} == {}


# --- the assembled /app, run -------------------------------------------------------------------------


def build_context(tmp: Path, model: Path) -> Path:
    """The repository as `docker build .` sends it (the ignore file decides), with the model under models/."""
    context = tmp / "context"
    skip = shutil.ignore_patterns("__pycache__")
    for part in ("lambda_onnx", "local", "deploy"):
        shutil.copytree(ROOT / part, context / part, ignore=skip)
    (context / "models").mkdir()
    for file in (model, sidecar_path(model), canary_path(model)):
        shutil.copy(file, context / "models" / file.name)
    return context


@pytest.fixture(scope="module")
def app_dir(lite0, tmp_path_factory) -> TaskRoot:
    tmp = tmp_path_factory.mktemp("server-image")
    context = build_context(tmp, lite0)
    return assemble_task_root(tmp / "app", context=context, dockerfile=context / "deploy" / "server" / "Dockerfile",
                              dockerignore=context / "deploy" / "server" / "Dockerfile.dockerignore",
                              build_args={"MODEL": f"models/{lite0.name}", "SIDECAR": f"models/{sidecar_path(lite0).name}",
                                          "CANARY": f"models/{canary_path(lite0).name}"},
                              image_root="/app", image_env={}, python=find_python(IMAGE_PYTHON))


class ImageServer:
    """The image's CMD run from the assembled /app alone: Python 3.12 with -S (no site-packages), cwd
    /app, the image's ENV (PYTHONPATH=/app/packages), a loopback port instead of 0.0.0.0:8000."""

    def __init__(self, app: TaskRoot, *extra: str) -> None:
        (self.port,) = free_ports(1)
        inside = PurePosixPath(app.image_root)
        command = [str(find_python(IMAGE_PYTHON)), "-S", *(localise(arg, inside, app.path) for arg in app.cmd[1:]), *extra]
        command[command.index("--host") + 1] = "127.0.0.1"
        command[command.index("--port") + 1] = str(self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = app.path.parent / "tmp"
        self.tmp.mkdir(exist_ok=True)
        env = {"PATH": os.environ["PATH"], "TMPDIR": str(self.tmp), "HOME": str(self.tmp), **app.local_env()}
        self.log = (app.path.parent / f"serve-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(command, cwd=app.path, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the image's server did not answer /health:\n" + self.output())

    def family(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]

    def close(self) -> None:
        for process in reversed(self.family() if self.proc.poll() is None else []):
            process.kill()
        self.proc.wait(30)
        self.log.close()

    def __enter__(self) -> ImageServer:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def classify(url: str, image: bytes) -> httpx.Response:
    return httpx.post(url + "/classify", content=image, headers={"content-type": "application/octet-stream"}, timeout=120)


@pytest.mark.slow
def test_the_image_runs_local_serve_alone_and_answers_as_in_process(app_dir, lite0_classifier):
    top = {p.name for p in app_dir.path.iterdir()}
    assert top == {"packages", "lambda_onnx", "local", "model", "requirements.lock"}, top
    assert {p.name for p in (app_dir.path / "local").iterdir()} == {"__init__.py", "defaults.py", "choice.py", "serve",
                                                                    "commands", "__pycache__"}
    packages = {p.name.lower() for p in (app_dir.path / "packages").iterdir()}
    assert {"onnxruntime", "uvicorn", "starlette"} <= packages and not {"torch", "gradio", "httpx", "boto3"} & packages
    before = snapshot(app_dir.path)
    photo = by_name("chelsea").read()
    with ImageServer(app_dir) as server:
        health = httpx.get(server.url + "/health", timeout=5).json()
        assert health["status"] == "ok" and health["lanes"] >= 1
        response = classify(server.url, photo)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["class_id"] == lite0_classifier.predict(photo).predictions[0].class_id
        model = httpx.get(server.url + "/model", timeout=5).json()
        assert model["arch"] == "efficientnet_lite0"
    assert snapshot(app_dir.path) == before  # nothing written under /app: it can be a read-only root file system


def refused(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def queue_then_terminate(server: ImageServer, image: bytes, count: int) -> tuple[list[httpx.Response], float]:
    """``count`` requests from as many connections, every one answered or admitted (body read, waiting for or
    in the one lane) before SIGTERM, half of them at least still waiting; returns their answers and how long
    the process took to exit after SIGTERM."""
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(classify, server.url, image) for _ in range(count)]
        deadline = time.monotonic() + 60
        while True:  # every request answered already or admitted, and several still waiting
            in_flight = httpx.get(server.url + "/health", timeout=5).json()["in_flight"]
            if in_flight + sum(f.done() for f in futures) == count and in_flight >= count // 2:
                break
            assert time.monotonic() < deadline, "the requests were not admitted"
            time.sleep(0.01)
        family = server.family()
        assert len(family) >= 2  # the front and its lane
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        while not refused(server.url):  # the listening socket closes at once: new connections are refused
            assert time.monotonic() - signalled < 5, "a new connection was still accepted after SIGTERM"
            time.sleep(0.02)
        answers = [f.result() for f in futures]
    server.proc.wait(DRAIN_TIMEOUT_S + 10)
    took = time.monotonic() - signalled
    assert server.proc.returncode == 0, server.output()
    # Nothing left running: the lanes were joined before the exit; a helper that ends with the front
    # (multiprocessing's resource tracker, when its pipe closes) gets a moment to go.
    _, alive = psutil.wait_procs(family, timeout=5)
    assert not [p.pid for p in alive if _running(p)]
    return answers, took


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_sigterm_answers_every_accepted_request_then_exits_0(app_dir, lite0_classifier):
    image = upscaled_jpeg(by_name("chelsea"))  # slow enough to decode that they queue behind one lane
    expected = lite0_classifier.predict(image).predictions[0].class_id
    with ImageServer(app_dir, "--max-concurrency", "1", "--max-queue", "16") as server:
        answers, took = queue_then_terminate(server, image, 10)
    assert [r.status_code for r in answers] == [200] * 10, [r.text for r in answers if r.status_code != 200]
    assert {r.json()["predictions"][0]["class_id"] for r in answers} == {expected}
    assert took < DRAIN_TIMEOUT_S
    assert "draining" in server.output()


@pytest.mark.slow
def test_past_the_drain_deadline_the_rest_are_answered_503_not_dropped(app_dir, lite0_classifier):
    image = upscaled_jpeg(by_name("chelsea"))
    expected = lite0_classifier.predict(image).predictions[0].class_id
    with ImageServer(app_dir, "--max-concurrency", "1", "--max-queue", "16", "--drain-timeout", "0") as server:
        answers, _ = queue_then_terminate(server, image, 10)
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses  # every one answered; those cut short are told
    for response in answers:
        if response.status_code == 200:
            assert response.json()["predictions"][0]["class_id"] == expected
        else:
            assert response.json()["error"] == "draining", response.text


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_python_m_local_serve_drains_and_exits_0_on_sigterm_too(lite0, lite0_classifier, workers):
    """The same drain outside the image, with one HTTP front and with several (each drains its own)."""
    from local.serve.process import ServeProcess

    photo = by_name("coffee").read()
    with ServeProcess(lite0, "--runtime", "onnxruntime", "--workers", workers) as server:
        assert server.pid is not None
        process = psutil.Process(server.pid)
        family = [process, *process.children(recursive=True)]
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(classify, server.url, photo) for _ in range(4)]
            deadline = time.monotonic() + 60
            while httpx.get(server.url + "/health", timeout=5).json()["in_flight"] == 0 and not any(f.done() for f in futures):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            answers = [f.exception() or f.result() for f in futures]
        assert process.wait(DRAIN_TIMEOUT_S + 30) == 0, server.output()
    expected = lite0_classifier.predict(photo).predictions[0].class_id
    # One at least was admitted before SIGTERM; each one received by then is answered. A request still on its way
    # when SIGTERM came (its connection not yet read: another worker's /health cannot tell) is refused or closed.
    received = [r for r in answers if isinstance(r, httpx.Response)]
    assert received and all(isinstance(r, httpx.TransportError) for r in answers if not isinstance(r, httpx.Response)), answers
    for response in received:
        assert response.status_code == 200 and response.json()["predictions"][0]["class_id"] == expected, response.text
    _, alive = psutil.wait_procs(family, timeout=5)
    assert not [p.pid for p in alive if _running(p)]
