"""The container image, proven without Docker: the Dockerfile lints clean, and the task root it
describes (assembled from its COPY and pip lines) runs the handler under Python 3.12 and the Lambda
emulator with nothing of the repository on the path, and without torch."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lambda_onnx.canary import canary_path
from lambda_onnx.cpu import cpu_info
from lambda_onnx.photos import by_name
from lambda_onnx.sidecar import sidecar_path
from local.clients.emulator import EmulatorBackend
from local.lambda_env.rie import Emulator
from tests.helpers.process import ROOT
from tests.helpers.taskroot import (
    IMAGE_PYTHON,
    DockerfileError,
    DockerIgnore,
    assemble_task_root,
    directory_mb,
    find_python,
    install_runtime_client,
    parse_dockerfile,
    pip_target_install,
)

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_dockerfile_lints_clean():
    out = hadolint(DOCKERFILE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_would_catch_a_pip_cache_left_in_the_image(tmp_path):
    cached = tmp_path / "Dockerfile"
    cached.write_text(DOCKERFILE.read_text().replace("pip install --no-cache-dir", "pip install"))
    out = hadolint(cached)
    assert out.returncode != 0 and "DL3042" in out.stdout


def test_dockerfile_builds_what_the_issue_asks():
    spec = parse_dockerfile(DOCKERFILE)
    assert re.fullmatch(r"public\.ecr\.aws/lambda/python:3\.12@sha256:[0-9a-f]{64}", spec.base)  # pinned by digest
    assert spec.cmd == ["lambda_onnx.handler.handler"]
    assert spec.args == {"MODEL": "models/resnet50.onnx", "SIDECAR": str(sidecar_path(Path("models/resnet50.onnx"))),
                         "CANARY": str(canary_path(Path("models/resnet50.onnx")))}
    copies = [words for keyword, words in spec.steps if keyword == "COPY"]
    assert ["${MODEL}", "${LAMBDA_TASK_ROOT}/model/model.onnx"] in copies
    assert ["${SIDECAR}", "${LAMBDA_TASK_ROOT}/model/model.json"] in copies
    assert ["${CANARY}", "${LAMBDA_TASK_ROOT}/model/model.canary.json"] in copies
    pip = next(words for keyword, words in spec.steps if keyword == "RUN" and words[:2] == ["pip", "install"])
    assert "--no-cache-dir" in pip and pip[pip.index("-r") + 1].endswith("lambda_onnx/requirements.lock")
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(pip)  # the hash-locked set, nothing else
    lines = (ROOT / "lambda_onnx" / "requirements.txt").read_text().lower().splitlines()
    requirements = [line.split("==")[0] for line in lines if line.strip() and not line.startswith("#")]
    assert {"onnxruntime", "numpy", "pillow", "pillow-heif", "aws-lambda-powertools"} <= set(requirements)
    assert not any("torch" in name for name in requirements)


def test_dockerignore_sends_only_the_core_and_the_models():
    ignore = DockerIgnore(ROOT / ".dockerignore")
    for kept in ("lambda_onnx/handler.py", "lambda_onnx/requirements.txt", "models/resnet50.onnx", "models/resnet50.json",
                 "models/resnet50.int8.onnx", "models/resnet50.int8.json"):
        assert not ignore.excluded(kept), kept
    for dropped in (".venv/bin/python", "tests/test_image.py", "export/convert.py", "local/serve.py",
                    "lambda_onnx/__pycache__/handler.cpython-311.pyc", "models/README.md", ".git/HEAD"):
        assert ignore.excluded(dropped), dropped


def build_context(tmp: Path, model: Path, *, dockerfile_text: str | None = None) -> Path:
    """A Docker build context as `sam build` sends it: the repository's core and ignore file, with
    the model under models/ (fixtures export into temporary directories)."""
    context = tmp / "context"
    shutil.copytree(ROOT / "lambda_onnx", context / "lambda_onnx", ignore=shutil.ignore_patterns("__pycache__"))
    (context / "models").mkdir()
    shutil.copy(model, context / "models" / model.name)
    shutil.copy(sidecar_path(model), context / "models" / sidecar_path(model).name)
    shutil.copy(canary_path(model), context / "models" / canary_path(model).name)
    shutil.copy(ROOT / ".dockerignore", context / ".dockerignore")
    (context / "Dockerfile").write_text(dockerfile_text if dockerfile_text is not None else DOCKERFILE.read_text())
    return context


def model_args(model: Path) -> dict[str, str]:
    return {"MODEL": f"models/{model.name}", "SIDECAR": f"models/{sidecar_path(model).name}",
            "CANARY": f"models/{canary_path(model).name}"}


@pytest.fixture(scope="module")
def image_python() -> Path:
    return find_python(IMAGE_PYTHON)


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory, image_python) -> Path:
    """awslambdaric for Python 3.12: the base image's /var/runtime."""
    return install_runtime_client(tmp_path_factory.mktemp("var-runtime"), python=image_python)


def image_emulator(task, runtime: Path, python: Path) -> Emulator:
    """The function as the image runs it: Python 3.12 with only the task root and the runtime
    client on its path (-S: not even that interpreter's own site-packages), cwd the task root,
    and the image's ENV."""
    return Emulator(None, python=python, python_flags=["-S"], pythonpath=[task.path, runtime], cwd=task.path,
                    env=task.env, name="image")


@pytest.mark.slow
def test_the_image_task_root_runs_alone_under_python312_without_torch(lite0, tmp_path, image_python, runtime_dir):
    context = build_context(tmp_path, lite0)
    task = assemble_task_root(tmp_path / "var-task", context=context, build_args=model_args(lite0), python=image_python)
    assert task.handler == "lambda_onnx.handler.handler"
    assert task.env == {"MODEL_VERIFY": "size"}  # verified at build time, so the cold start hashes nothing
    assert {"model/model.onnx", "model/model.json", "model/model.canary.json", "lambda_onnx/handler.py"} <= set(task.copied)
    top = {p.name for p in task.path.iterdir()}
    assert not top & {"torch", "torchvision", "export", "local", "tests", "gui"}, top

    with image_emulator(task, runtime_dir, image_python) as emulator:
        backend = EmulatorBackend(emulator, stop_on_close=False)
        results = [backend.classify(by_name(name).read()) for name in ("chelsea", "coffee")]
    assert [r.cold_start for r in results] == [True, False]
    for result, name in zip(results, ("chelsea", "coffee")):
        assert result.predictions[0].label in by_name(name).expected, result.predictions
        assert result.model["arch"] == "efficientnet_lite0" and result.model["sha256"]
        # The image runs the canary at its cold start, on this CPU, and every answer says so.
        assert result.model["canary"]["status"] == "passed" and result.body["host"]["cpu"] == cpu_info().model

    probe_env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join([str(task.path), str(runtime_dir)])}
    torch = subprocess.run([str(image_python), "-S", "-c", "import torch"], cwd=task.path, env=probe_env,
                           capture_output=True, text=True)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr
    where = subprocess.run([str(image_python), "-S", "-c", "import lambda_onnx.handler as h, sys; print('FILE', h.__file__, sys.path)"],
                           cwd=task.path, env={**probe_env, "MODEL_PATH": str(task.path / "model" / "model.onnx")},
                           capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    (probe,) = [line for line in where.stdout.splitlines() if line.startswith("FILE ")]
    assert probe.startswith(f"FILE {task.path}/lambda_onnx/handler.py") and str(ROOT) not in probe
    model_mb = directory_mb(task.path / "model")
    print(f"\ntask root {task.size_mb():.0f} MB (model {model_mb:.0f} MB, dependencies and code "
          f"{task.size_mb() - model_mb:.0f} MB); cold start: handler init {results[0].metrics['init_ms']:.0f} ms, "
          f"emulator init phase {results[0].extra.get('emulator_init_ms', float('nan')):.0f} ms; "
          f"warm round trip {results[1].round_trip_ms:.1f} ms")


# Each line the Dockerfile could forget, and how the build then fails. No sidecar: the build's
# verification step says so. No core: compileall of a missing directory exits 0, but the
# verification step imports the core with the image's Python, so the build fails there.
FORGOTTEN = [("COPY ${SIDECAR} ${LAMBDA_TASK_ROOT}/model/model.json\n", "sidecar not found"),
             ("COPY ${CANARY} ${LAMBDA_TASK_ROOT}/model/model.canary.json\n", "no canary"),
             ("COPY lambda_onnx/ ${LAMBDA_TASK_ROOT}/lambda_onnx/\n", "No module named lambda_onnx")]


@pytest.mark.slow
@pytest.mark.parametrize(("line", "reason"), FORGOTTEN, ids=["sidecar", "canary", "core"])
def test_a_line_the_dockerfile_forgets_fails_here(lite0, tmp_path, image_python, line, reason):
    text = DOCKERFILE.read_text().replace(line, "")
    assert text != DOCKERFILE.read_text()
    context = build_context(tmp_path, lite0, dockerfile_text=text)
    with pytest.raises(DockerfileError, match=reason):
        assemble_task_root(tmp_path / "var-task", context=context, build_args=model_args(lite0), python=image_python)


def test_a_copy_source_outside_the_context_or_ignored_fails(lite0, tmp_path, image_python):
    context = build_context(tmp_path, lite0)
    with pytest.raises(DockerfileError, match="no such file"):
        assemble_task_root(tmp_path / "a", context=context, build_args={"MODEL": "models/absent.onnx"}, python=image_python)
    (context / "models" / "notes.txt").write_text("not a model")
    with pytest.raises(DockerfileError, match="dockerignore"):
        assemble_task_root(tmp_path / "b", context=context, build_args={**model_args(lite0), "SIDECAR": "models/notes.txt"},
                           python=image_python)


@pytest.mark.slow
def test_the_runtime_requirements_have_wheels_for_arm64_too(tmp_path):
    # template.yaml offers Architecture=arm64: the image's hash-locked install must find a wheel,
    # with a hash in the lock, for every locked package.
    pip_target_install(tmp_path / "arm64", ["--require-hashes", "--no-deps", "-r", str(ROOT / "lambda_onnx" / "requirements.lock")],
                       machine="aarch64")
    libraries = [p.name for p in (tmp_path / "arm64").rglob("*.so")]
    assert libraries and any("aarch64" in name for name in libraries), libraries[:5]


@pytest.mark.slow
def test_a_model_that_does_not_match_its_sidecar_fails_the_build(lite0, resnet_random, tmp_path, image_python):
    """The image verifies model and sidecar (size and sha256) at build time, not at each cold start."""
    context = build_context(tmp_path, lite0)
    shutil.copy(resnet_random.with_suffix(".json"), context / "models" / "other.json")
    with pytest.raises(DockerfileError, match="lambda_onnx.verify .* failed(.|\\n)*sidecar expects"):
        assemble_task_root(tmp_path / "var-task", context=context,
                           build_args={**model_args(lite0), "SIDECAR": "models/other.json"}, python=image_python)
