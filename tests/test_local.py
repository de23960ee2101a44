"""The local runner: real predictions end to end, the CLI, and start-up errors."""

from __future__ import annotations

import json
import shutil

import pytest

from lambda_onnx.classifier import Classifier
from lambda_onnx.errors import ModelLoadError
from lambda_onnx.photos import EVALUATION, available, by_name
from lambda_onnx.resources import _cgroup_cpu_quota, available_cpus, default_threads
from lambda_onnx.sidecar import sidecar_path
from tests.helpers.process import run_module


@pytest.mark.parametrize("photo", available(EVALUATION), ids=lambda p: p.name)
def test_real_weights_name_real_photos(lite0_classifier, photo):
    result = lite0_classifier.predict(photo.read())
    assert result.predictions[0].label in photo.expected, [p.label for p in result.predictions]


def test_result_is_complete(lite0_classifier):
    photo = by_name("coffee")
    result = lite0_classifier.predict(photo.read())
    assert len(result.predictions) == 5
    probs = [p.probability for p in result.predictions]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    t = result.timings
    assert min(t.decode_ms, t.preprocess_ms, t.inference_ms, t.postprocess_ms) > 0
    assert t.decode_ms + t.preprocess_ms + t.inference_ms + t.postprocess_ms <= t.total_ms + 0.01
    assert (result.image.width, result.image.height, result.image.format) == (600, 400, "PNG")
    assert result.image.bytes == len(photo.read()) and (result.image.processed_width, result.image.processed_height) == (224, 224)
    assert result.model.sha256 == lite0_classifier.sidecar.sha256 and result.model.precision == "fp32"
    assert result.model.arch == "efficientnet_lite0" and not result.model.random_weights


def test_predict_accepts_a_pil_image(lite0_classifier):
    from PIL import Image

    with Image.open(by_name("chelsea").path) as image:
        assert lite0_classifier.predict(image).predictions[0].label in by_name("chelsea").expected


def test_cli_predict_end_to_end(lite0):
    photo = by_name("chelsea")
    out = run_module("local", "predict", str(photo.path), "--model", str(lite0))
    assert out.returncode == 0, out.stderr
    first = next(line for line in out.stdout.splitlines() if line.strip().startswith("1."))
    assert any(label in first for label in photo.expected)
    assert "inference" in out.stdout and "RANDOM" not in out.stdout


@pytest.mark.slow
def test_cli_predict_sample_photos_by_name(lite0):
    out = run_module("local", "predict", "--sample", "coffee", "--sample", "lion", "--model", str(lite0), "--json")
    assert out.returncode == 0, out.stderr
    assert [r["result"]["predictions"][0]["label"] for r in json.loads(out.stdout)["results"]] == ["espresso", "lion"]
    unknown = run_module("local", "predict", "--sample", "unicorn", "--model", str(lite0))
    assert unknown.returncode == 2 and "no sample photo named 'unicorn'" in unknown.stderr


def test_cli_predict_json(lite0):
    paths = [str(by_name(n).path) for n in ("coffee", "china")]
    out = run_module("local", "predict", *paths, "--model", str(lite0), "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)["results"]
    assert [r["result"]["predictions"][0]["label"] for r in results] == ["espresso", "palace"]
    # the contract's body, as every server answers it: metrics (not a private "timings"), host, model
    assert {"metrics", "host", "model", "image"} <= set(results[0]["result"]) and "timings" not in results[0]["result"]
    assert results[0]["status"] == 200 and results[0]["result"]["metrics"]["handler_ms"] > 0


@pytest.mark.slow
def test_cli_random_weights_are_labelled(resnet_random):
    out = run_module("local", "predict", str(by_name("coffee").path), "--model", str(resnet_random))
    assert out.returncode == 0 and "RANDOM WEIGHTS" in out.stdout


def test_cli_bad_image_is_one_line_and_non_zero(lite0, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    out = run_module("local", "predict", str(bad), str(by_name("coffee").path), "--model", str(lite0))
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "could not decode" in out.stderr and "(400)" in out.stderr
    assert "espresso" in out.stdout  # the good image after it was still classified


def copy_model(src, dst_dir):
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(sidecar_path(src), sidecar_path(dst))
    return dst


@pytest.mark.parametrize("damage,message", [("missing", "model not found"), ("truncated", "truncated"),
                                            ("flipped", "sha256"), ("no_sidecar", "sidecar not found")])
def test_damaged_model_is_a_one_line_start_up_error(lite0, tmp_path, damage, message):
    model = copy_model(lite0, tmp_path)
    if damage == "missing":
        model.unlink()
    elif damage == "truncated":
        model.write_bytes(model.read_bytes()[:1000])
    elif damage == "flipped":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    else:
        sidecar_path(model).unlink()
    with pytest.raises(ModelLoadError, match=message):
        Classifier(model)
    out = run_module("local", "predict", str(by_name("coffee").path), "--model", str(model))
    assert out.returncode == 1 and out.stderr.startswith("error: ") and out.stderr.strip().count("\n") == 0
    assert message in out.stderr


def test_threads_follow_lambda_memory(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "884")
    assert available_cpus() == pytest.approx(884 / 1769) and default_threads() == 1
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3538")
    assert available_cpus() == pytest.approx(min(2.0, len(__import__("os").sched_getaffinity(0))))
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    assert default_threads() >= 1


@pytest.mark.parametrize("layout,expected", [
    ({"cgroup": "0::/job\n", "job/cpu.max": "50000 100000\n"}, 0.5),
    ({"cgroup": "0::/job\n", "job/cpu.max": "max 100000\n"}, None),
    ({"cgroup": "4:cpu,cpuacct:/job\n", "cpu/job/cpu.cfs_quota_us": "150000\n", "cpu/job/cpu.cfs_period_us": "100000\n"}, 1.5),
    ({"cgroup": "4:cpu,cpuacct:/job\n", "cpu/job/cpu.cfs_quota_us": "-1\n", "cpu/job/cpu.cfs_period_us": "100000\n"}, None),
])
def test_cgroup_quota_is_read_for_v1_and_v2(tmp_path, layout, expected):
    for rel, text in layout.items():
        path = tmp_path / ("proc_cgroup" if rel == "cgroup" else f"fs/{rel}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert _cgroup_cpu_quota(tmp_path / "fs", tmp_path / "proc_cgroup") == expected


@pytest.mark.parametrize("command", [("bench", "--repeats"), ("bench", "--rounds"), ("bench", "--threads"),
                                     ("predict", "--top-k"), ("predict", "--threads"), ("serve", "--workers"),
                                     ("serve", "--max-concurrency"), ("serve", "--max-receiving"),
                                     ("emulator", "--pool"), ("emulator", "--memory")])
@pytest.mark.slow
def test_counts_below_one_are_refused_with_the_reason(command):
    """A zero would hang (no inference slot), answer everything with 503, or turn top-k upside down."""
    name, option = command
    result = run_module("local", name, option, "0")
    assert result.returncode == 2
    assert f"argument {option}: must be at least 1, not 0" in result.stderr
