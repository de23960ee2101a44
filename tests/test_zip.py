"""The zip package (PackageType=Zip with SnapStart): built by the Makefile target `sam build` runs,
within Lambda's 250 MB unzipped limit for the models that fit, and run from its zip alone under Python
3.12 and the Lambda emulator, beside what the managed runtime provides (the runtime client and the
SnapStart hooks library), with no torch and nothing of the repository on the path."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from lambda_onnx.cpu import cpu_info
from lambda_onnx.photos import by_name
from local.clients.emulator import EmulatorBackend
from local.lambda_env.rie import Emulator
from tests.helpers.taskroot import (
    IMAGE_PYTHON,
    UNZIPPED_LIMIT_BYTES,
    PackageSize,
    build_zip_package,
    find_python,
    install_managed_runtime,
    model_files,
    tree_bytes,
    zip_package,
)

MB = 1e6


@pytest.fixture(scope="module")
def package(tmp_path_factory, lite0_int8) -> Path:
    """The zip package's directory for the INT8 EfficientNet-Lite0, as `sam build` leaves it."""
    artifacts = tmp_path_factory.mktemp("zip") / "ClassifierZipFunction"
    built = build_zip_package(artifacts, lite0_int8)
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"package {tree_bytes(artifacts):,} bytes unzipped" in built.stdout
    return artifacts


def test_the_package_size_is_its_parts():
    size = PackageSize(dependencies=186_000_000, core=140_000, model=76_004_000)
    assert size.total == UNZIPPED_LIMIT_BYTES and size.fits  # the limit itself fits...
    assert not PackageSize(186_000_000, 140_000, 76_004_001).fits  # ...one byte more does not


@pytest.mark.slow
def test_which_models_fit_the_zip_package(package, lite0, lite0_int8, resnet_random, resnet_int8):
    measured = PackageSize.of(package)
    assert measured.model == sum(f.stat().st_size for f in model_files(lite0_int8))
    assert 0 < measured.core < 1 * MB and measured.dependencies > 100 * MB
    sizes = {name: measured.with_model(model) for name, model in
             [("EfficientNet-Lite0 fp32", lite0), ("EfficientNet-Lite0 INT8", lite0_int8),
              ("ResNet-50 fp32", resnet_random), ("ResNet-50 INT8", resnet_int8)]}
    print(f"\ndependencies {measured.dependencies / MB:.1f} MB, core {measured.core / MB:.2f} MB, limit "
          f"{UNZIPPED_LIMIT_BYTES / MB:.1f} MB; " + "; ".join(f"{name}: {s.total / MB:.1f} MB {'fits' if s.fits else 'too big'}"
                                                             for name, s in sizes.items()))
    assert {name for name, s in sizes.items() if s.fits} == {"EfficientNet-Lite0 fp32", "EfficientNet-Lite0 INT8",
                                                             "ResNet-50 INT8"}


@pytest.mark.slow
def test_a_model_too_big_for_the_package_fails_the_build(tmp_path, lite0_int8):
    big = tmp_path / "big.onnx"
    with big.open("wb") as out:  # a sparse file: its size is what counts, nothing is written
        out.truncate(UNZIPPED_LIMIT_BYTES)
    for source, copy in zip(model_files(lite0_int8)[1:], model_files(big)[1:]):
        copy.write_bytes(source.read_bytes())
    built = build_zip_package(tmp_path / "package", big)
    assert built.returncode != 0
    assert f"exceeds Lambda limit of {UNZIPPED_LIMIT_BYTES:,}: {big} does not fit a zip package" in built.stderr


@pytest.mark.slow
def test_the_zip_runs_alone_on_the_emulator_under_python312(package, tmp_path):
    python = find_python(IMAGE_PYTHON)
    archive = tmp_path / "function.zip"
    unzipped = zip_package(package, archive)
    assert unzipped == tree_bytes(package) <= UNZIPPED_LIMIT_BYTES
    task = tmp_path / "var-task"
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(task)
    top = {p.name for p in task.iterdir()}
    assert {"lambda_onnx", "model", "onnxruntime", "numpy", "PIL"} <= top
    assert not top & {"torch", "torchvision", "export", "local", "tests", "gui"}, top
    assert {p.name for p in (task / "model").iterdir()} == {"model.onnx", "model.json", "model.canary.json"}
    runtime = install_managed_runtime(tmp_path / "var-runtime", python=python)

    # No MODEL_VERIFY: the zip's init hashes the model, once per published version with SnapStart.
    with Emulator(None, python=python, python_flags=["-S"], pythonpath=[task, runtime], cwd=task, name="zip") as emulator:
        backend = EmulatorBackend(emulator, stop_on_close=False)
        results = [backend.classify(by_name(name).read()) for name in ("chelsea", "coffee")]
        log = "\n".join(emulator.log_lines("stdout"))
    assert [r.cold_start for r in results] == [True, False]
    for result, name in zip(results, ("chelsea", "coffee")):
        assert result.predictions[0].label in by_name(name).expected, result.predictions
        assert result.model["precision"] == "int8" and result.model["canary"]["status"] == "passed"
        assert result.body["host"]["cpu"] == cpu_info().model and "restored" not in result.model["canary"]
    assert '"model ready"' in log

    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join([str(task), str(runtime)]),
           "MODEL_PATH": str(task / "model" / "model.onnx")}
    probe = subprocess.run([str(python), "-S", "-c", "import lambda_onnx.handler as h, snapshot_restore_py as s; "
                            "print(h.RESTORE_HOOK, [f.__name__ for f, _, _ in s.get_after_restore()], h.__file__)"],
                           cwd=task, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split("\n")[-2] == f"True ['_after_restore'] {task}/lambda_onnx/handler.py"
    torch = subprocess.run([str(python), "-S", "-c", "import torch"], cwd=task, env=env, capture_output=True, text=True)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr
    print(f"\nzip package {unzipped / MB:.1f} MB unzipped, {archive.stat().st_size / MB:.1f} MB zipped; cold start: handler "
          f"init {results[0].metrics['init_ms']:.0f} ms; warm round trip {results[1].round_trip_ms:.1f} ms")
