"""``python -m export --int8``: a QDQ model, its own sidecar, and a parity report on photos it never saw."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from export.parity import INT8_MIN_TOP1_AGREEMENT
from export.quantize import calibration_images, int8_path
from lambda_onnx.classifier import Classifier
from lambda_onnx.cpu import cpu_info
from lambda_onnx.photos import CALIBRATION, EVALUATION, available, by_name
from lambda_onnx.sidecar import Sidecar, file_sha256, sidecar_path
from tests.helpers.process import run_module


def checks(meta: Sidecar) -> dict[str, dict]:
    return {c["name"]: c for c in meta.parity["checks"]}


def by_prefix(meta: Sidecar, prefix: str) -> dict:
    found = [c for name, c in checks(meta).items() if name.startswith(prefix)]
    assert len(found) == 1, (prefix, list(checks(meta)))
    return found[0]


def test_int8_top1_is_identical_to_fp32_on_every_evaluation_photo(lite0, lite0_int8):
    """The target: real weights, photos never used for calibration, every top-1 the same."""
    fp32, int8 = Classifier(lite0), Classifier(lite0_int8)
    for photo in available(EVALUATION):
        data = photo.read()
        assert int8.predict(data).predictions[0].label == fp32.predict(data).predictions[0].label, photo.name
    meta = Sidecar.load(sidecar_path(lite0_int8))
    n = len(available(EVALUATION))
    for prefix in ("int8 vs fp32 onnxruntime on", "int8 vs pytorch fp32 on"):
        check = by_prefix(meta, prefix)
        assert check["passed"] and check["top1_agree"] == check["samples"] == n, check
    openvino = by_prefix(meta, "openvino int8, hint f32")
    if cpu_info().int8_saturates:  # no exact INT8 kernel in OpenVINO without VNNI: reported, not required
        assert openvino["informational"] and "no VNNI" in openvino["note"], openvino
    else:
        assert openvino["passed"] and not openvino["informational"] and openvino["top1_agree"] == n, openvino


def test_int8_sidecar_is_complete(lite0, lite0_int8):
    meta = Sidecar.load(sidecar_path(lite0_int8))
    fp32 = Sidecar.load(sidecar_path(lite0))
    assert lite0_int8.name == int8_path(lite0).name and sidecar_path(lite0_int8).name == "efficientnet_lite0.int8.json"
    assert meta.precision == "int8" and meta.onnx_file == lite0_int8.name
    assert meta.sha256 == file_sha256(lite0_int8) and meta.onnx_bytes == lite0_int8.stat().st_size
    assert (meta.arch, meta.weights, meta.random_weights) == (fp32.arch, fp32.weights, False)
    assert meta.categories == fp32.categories and meta.preprocessing == fp32.preprocessing
    assert (meta.input_name, meta.output_name, meta.input_shape) == (fp32.input_name, fp32.output_name, fp32.input_shape)
    q = meta.extra["quantization"]
    assert (q["format"], q["activation_type"], q["weight_type"]) == ("QDQ", "QUInt8", "QInt8")
    assert q["per_channel"] is True and q["reduce_range"] is False and q["calibrate_method"] == "MinMax"
    assert q["source"]["file"] == lite0.name and q["source"]["sha256"] == fp32.sha256 and q["source"]["path"] == str(lite0.resolve())
    calibration = q["calibration"]
    assert calibration["images"] == [p.name for p in available(CALIBRATION)] == [i.name for i in calibration_images()]
    assert calibration["count"] == len(calibration["sha256"]) == len(calibration["images"])
    assert not {p.name for p in EVALUATION} & set(calibration["images"])
    assert "onnxruntime" in meta.versions and meta.created


def test_int8_parity_report_is_complete_and_passed(lite0_int8):
    meta = Sidecar.load(sidecar_path(lite0_int8))
    report = meta.parity
    assert report["passed"] is True and report["candidate"].startswith("onnxruntime int8")
    assert "onnxruntime fp32" in report["reference"] and "pytorch" in report["reference"]
    assert report["tolerances"]["int8_min_top1_agreement"] == INT8_MIN_TOP1_AGREEMENT == 1.0
    assert report["tolerances"]["top1_required"] is True
    assert by_prefix(meta, "evaluation photos are not among")["passed"]
    noise = by_prefix(meta, "int8 vs fp32 onnxruntime, random batch")
    assert noise["informational"] and noise["max_abs_logit"] > 0
    for prefix in ("int8 vs fp32 onnxruntime on", "int8 vs pytorch fp32 on"):
        check = by_prefix(meta, prefix)
        assert 0 < check["max_abs_logit"] < 5 and 0 < check["max_abs_prob"] < 0.5  # numbers reported, INT8 moves them
        assert check["top5_agree"] is not None and len(check["top1"]) == check["samples"]
        assert set(check["top1"]) <= {label for p in available(EVALUATION) for label in p.expected}
    assert by_prefix(meta, "fast path on")["passed"]


def test_int8_is_a_smaller_qdq_model(lite0, lite0_int8):
    model = onnx.load(str(lite0_int8))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert lite0_int8.stat().st_size < lite0.stat().st_size / 3


@pytest.mark.slow
def test_random_weights_int8_reports_agreement_without_requiring_it(resnet_int8):
    meta = Sidecar.load(sidecar_path(resnet_int8))
    assert meta.random_weights and meta.precision == "int8" and meta.parity["passed"] is True
    assert meta.parity["tolerances"]["top1_required"] is False
    check = by_prefix(meta, "int8 vs fp32 onnxruntime on")
    assert "random weights" in check["note"] and check["max_abs_logit"] is not None
    x = np.zeros((2, 3, 224, 224), dtype=np.float32)
    assert Classifier(resnet_int8).infer(x).shape == (2, 1000)  # dynamic batch survived quantisation


@pytest.mark.slow
def test_check_reruns_the_int8_report(lite0_int8):
    out = run_module("export", "--check", str(lite0_int8))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "✓ sha256 matches the sidecar" in out.stdout and "✓ int8 vs fp32 onnxruntime on" in out.stdout
    assert "✓ int8 vs pytorch fp32" in out.stdout and "parity passed" in out.stdout


@pytest.mark.slow
def test_cli_int8_with_a_calibration_dir(lite0, tmp_path):
    """Quantise an existing fp32 export with the user's images; the sidecar says where they came from."""
    for suffix in (".onnx", ".json"):
        shutil.copy(lite0.with_suffix(suffix), tmp_path / f"efficientnet_lite0{suffix}")
    photos = tmp_path / "calib" / "nested"
    photos.mkdir(parents=True)
    for name in ("astronaut", "tower", "grace_hopper", "cheetah2"):
        photo = by_name(name)
        if photo.path.is_file():
            shutil.copy(photo.path, photos / photo.path.name)
    (photos / "notes.txt").write_text("not an image")
    fp32 = tmp_path / "efficientnet_lite0.onnx"
    out = run_module("export", "--arch", "efficientnet_lite0", "--out", str(fp32), "--int8",
                     "--calibration-dir", str(tmp_path / "calib"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "quantising the existing fp32 export" in out.stdout and "exporting" not in out.stdout
    meta = Sidecar.load(tmp_path / "efficientnet_lite0.int8.json")
    calibration = meta.extra["quantization"]["calibration"]
    assert calibration["source"] == str(tmp_path / "calib")
    assert calibration["count"] == len(list(photos.glob("*.*"))) - 1 and all(n.startswith("nested/") for n in calibration["images"])
    assert meta.parity["passed"] is True


def test_calibration_dir_containing_an_evaluation_photo_is_refused(tmp_path):
    shutil.copy(by_name("chelsea").path, tmp_path / "renamed.png")
    with pytest.raises(ValueError, match="evaluation photo 'chelsea'"):
        calibration_images(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        calibration_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="not found"):
        calibration_images(tmp_path / "missing")


@pytest.mark.slow
def test_int8_refuses_an_existing_fp32_that_is_another_model(lite0, tmp_path):
    for suffix in (".onnx", ".json"):
        shutil.copy(lite0.with_suffix(suffix), tmp_path / f"m{suffix}")
    out = run_module("export", "--arch", "efficientnet_lite0", "--random-weights", "--out", str(tmp_path / "m.onnx"), "--int8")
    assert out.returncode == 2 and "not the model --random-weights" in out.stderr
    assert not (tmp_path / "m.int8.onnx").exists()
    out = run_module("export", "--calibration-dir", str(tmp_path))
    assert out.returncode == 2 and "only apply with --int8" in out.stderr
