"""``python -m local evaluate DIR``: accuracy of each runtime × precision on a labelled folder."""

from __future__ import annotations

import json
import shutil

import pytest

from lambda_onnx.photos import EVALUATION, available
from lambda_onnx.sidecar import Sidecar, sidecar_path
from local.measure.evaluate import class_of, evaluate
from local.measure.variants import variants_for
from tests.helpers.process import run_module


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, lite0):
    """The package photos sorted into class folders: by index for half of them, by label for the rest."""
    categories = Sidecar.load(sidecar_path(lite0)).categories
    root = tmp_path_factory.mktemp("labelled")
    photos = available(EVALUATION)
    for i, photo in enumerate(photos):
        label = photo.expected[0]
        folder = root / (f"{categories.index(label):04d}" if i % 2 else label.replace(" ", "_"))
        folder.mkdir(exist_ok=True)
        shutil.copy(photo.path, folder / photo.path.name)
    (root / "README.txt").write_text("files at the top level are ignored")
    return root, photos


@pytest.mark.slow
def test_accuracy_of_each_runtime_and_precision(labelled, lite0, lite0_int8):
    root, photos = labelled
    result = evaluate(root, variants_for([lite0, lite0_int8]), fast_preprocess=True)
    assert result.images == len(photos) and result.classes == len({p.expected[0] for p in photos})
    assert not result.random_weights and not result.skipped
    names = [r.name for r in result.results]
    assert names[:2] == ["onnxruntime fp32", "openvino fp32 (hint f32 → f32)"]
    assert "onnxruntime int8" in names and "openvino int8 (hint f32 → f32)" in names
    by_name = {r.name: r for r in result.results}
    fp32, int8 = by_name["onnxruntime fp32"], by_name["onnxruntime int8"]
    # each photo's folder is its first acceptable label: the cat may be a tiger cat instead
    assert fp32.top1_correct >= len(photos) - 1 and fp32.top5_correct == len(photos)
    assert (int8.top1_correct, int8.top5_correct) == (fp32.top1_correct, fp32.top5_correct)
    assert int8.agrees_with_first == len(photos) and int8.precision == "int8" and int8.computes_in == "int8"
    assert by_name["openvino fp32 (hint f32 → f32)"].agrees_with_first == len(photos)
    assert all(0 <= r.top1 <= r.top5 <= 1 for r in result.results)


@pytest.mark.slow
def test_cli_evaluate_json_finds_the_int8_sibling(labelled, lite0, lite0_int8, tmp_path):
    root, photos = labelled
    for model in (lite0, lite0_int8):
        for suffix in (".onnx", ".json"):
            shutil.copy(model.with_suffix(suffix), tmp_path / model.with_suffix(suffix).name)
    out = run_module("local", "evaluate", str(root), "--model", str(tmp_path / lite0.name), "--runtimes", "onnxruntime", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [r["name"] for r in data["results"]] == ["onnxruntime fp32", "onnxruntime int8"]
    assert all(r["images"] == len(photos) and r["top5"] == 1.0 for r in data["results"])


@pytest.mark.slow
def test_cli_evaluate_table(labelled, lite0):
    root, _ = labelled
    out = run_module("local", "evaluate", str(root), "--model", str(lite0), "--no-int8", "--openvino-hints", "f32")
    assert out.returncode == 0, out.stderr
    assert "top-1" in out.stdout and "onnxruntime fp32" in out.stdout and "openvino fp32" in out.stdout
    assert "int8" not in out.stdout


def test_folder_names_are_indices_or_labels():
    categories = ["tench", "goldfish", "great white shark", "Egyptian cat"]
    assert class_of("0002", categories) == 2 and class_of("Egyptian_cat", categories) == 3
    assert class_of("great white  shark", categories) == 2
    with pytest.raises(ValueError, match="4 classes"):
        class_of("12", categories)
    with pytest.raises(ValueError, match="WordNet ids are not mapped"):
        class_of("n01440764", categories)


@pytest.mark.slow
def test_unknown_folder_is_a_clear_error(tmp_path, lite0):
    (tmp_path / "not a class").mkdir()
    out = run_module("local", "evaluate", str(tmp_path), "--model", str(lite0), "--no-int8")
    assert out.returncode == 2 and "'not a class' is neither a class index" in out.stderr
