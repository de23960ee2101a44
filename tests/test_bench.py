"""``python -m local bench``: with tiny counts, it writes complete, well-formed Markdown, JSON and PNG.

No timing is asserted: only that every measurement the issue lists is there and sane.
"""

from __future__ import annotations

import json

import pytest

from lambda_onnx.cpu import cpu_info, int8_kernel_name, use_precise_int8
from local.measure.bench import BATCH, installed_size
from tests.helpers.process import run_module

SECTIONS = ("## Inference", "## Threads", "## Cold start", "## Preprocessing", "## Runtime payload",
            "## Emulator vs in-process", "## Top-1 agreement", "## Targets")


@pytest.fixture(scope="module")
def bench(tmp_path_factory, lite0, lite0_int8):
    out = tmp_path_factory.mktemp("bench")
    result = run_module("local", "bench", "--quick", "--model", str(lite0), "--int8", str(lite0_int8),
                        "--accuracy-model", str(lite0), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout


@pytest.mark.slow
def test_cli_prints_progress_ratios_targets_and_the_fastest(bench):
    _, stdout = bench
    assert "[ 1]" in stdout and "cold start 1/1: pytorch handler fp32" in stdout  # progress lines
    assert "× PyTorch eager" in stdout and "targets:" in stdout
    assert "fastest here: " in stdout and "wrote " in stdout


def test_json_has_every_measurement(bench, lite0_int8):
    out, _ = bench
    data = json.loads((out / "bench.json").read_text())
    assert data["machine"]["cpu"] and data["machine"]["torch_build"] and data["machine"]["default_threads"] >= 1
    names = [r["name"] for r in data["inference"]]
    assert names[:3] == ["pytorch eager fp32", "onnxruntime fp32", "onnxruntime int8"]
    assert {"openvino fp32", "openvino int8"} <= {" ".join(n.split()[:2]) for n in names}
    assert any("(hint auto →" in n for n in names) and any("(hint f32 →" in n for n in names)  # named as evaluate names them
    for r in data["inference"]:
        assert 0 < r["median_ms"] <= r["p90_ms"] and r["batch_images_per_s"] > 0 and r["vs_pytorch"] > 0
        assert r["floor_fraction"] > 0 and r["threads"] >= 1
    assert [(r["precision"], r["threads"]) for r in data["threads"] if r["chosen"]]
    assert [c["handler"] for c in data["cold_start"]] == ["pytorch handler fp32", "onnx handler fp32", "onnx handler int8"]
    for c in data["cold_start"]:
        assert c["median_ms"] > c["first_invoke_ms"] > 0 and 20 < c["peak_rss_mb"] < 4000 and c["top1"]
    assert "build" in data["cold_start"][0]["build"] and data["cold_start"][0]["module"] == "local.measure.bench.torch_handler"
    pre = {(p["image"], p["fast_allowed"]): p for p in data["preprocess"]}
    assert pre[("12 MP JPEG", True)]["fast_path"] and not pre[("12 MP JPEG", False)]["fast_path"]
    assert pre[("0.3 MP JPEG", True)]["width"] * pre[("0.3 MP JPEG", True)]["height"] < 0.4e6
    floor = data["floor"]
    assert floor["gflop_per_image"] > 0.1 and floor["gemm_best_gflops"] > 0
    if cpu_info().vnni:  # VNNI: four int8 multiply-adds per fp32 FMA
        assert floor["int8_floor_ms"] == pytest.approx(floor["fp32_floor_ms"] / 4)
    else:  # otherwise the measured rate of the kernel ONNX Runtime uses here
        kernel = int8_kernel_name(use_precise_int8("auto"))
        assert floor["int8_gemm_gops"][kernel] > 0 and kernel in floor["int8_floor_rule"]
        assert floor["int8_floor_ms"] == pytest.approx(floor["gflop_per_image"] / floor["int8_gemm_gops"][kernel] * 1e3)
    payload = {(p["runtime"], p["precision"]): p for p in data["payload"]}
    assert set(payload) == {(r, p) for r in ("onnxruntime", "openvino") for p in ("fp32", "int8")}
    assert payload[("onnxruntime", "int8")]["model_mb"] < payload[("onnxruntime", "fp32")]["model_mb"]
    assert payload[("onnxruntime", "int8")]["packages_mb"] > 20  # onnxruntime alone is tens of MB
    emulator = data["emulator"]  # .ci/install puts the emulator in place: it is measured, not skipped
    assert emulator["measured"] is True, emulator.get("reason")
    assert emulator["first_was_cold"] is True and emulator["warm_round_trip_median_ms"] >= emulator["warm_handler_median_ms"] > 0
    assert data["accuracy"]["measured"] and {v["name"] for v in data["accuracy"]["variants"]} >= {"onnxruntime int8"}
    assert len(data["targets"]) == 11
    for t in data["targets"]:  # "met" is what the value says against the limit, never decided elsewhere
        assert t["met"] == (None if t["value"] is None else t["value"] <= t["limit"]), t
    assert data["fastest"] and data["config"]["batch"] == BATCH
    fastest = data["fastest_choice"]
    assert fastest["runtime"] in ("onnxruntime", "openvino") and fastest["precision"] in ("fp32", "int8")
    eligible = [r for r in data["inference"] if r["eligible"]]
    assert all(r["runtime"] != "pytorch" and r["computes_in"] in ("fp32", "int8") and r["canary"] != "failed"
               for r in eligible)
    assert fastest["median_ms"] == pytest.approx(min(r["median_ms"] for r in eligible), abs=0.01)
    for skipped in data["skipped"]:  # every faster variant that was not chosen says why
        assert skipped["median_ms"] < fastest["median_ms"] and skipped["why"] and skipped["name"] in data["fastest"]
    for r in data["inference"]:
        assert r["eligible"] or r["why_not"]
        if r["precision"] == "int8" and r["runtime"] == "onnxruntime":
            assert r["int8_kernel"] and r["canary"] in ("passed", "failed")
    # An INT8 variant is chosen only on the evidence of real photos, also one the agreement measured under another
    # name because it computes exactly the same (OpenVINO's "auto" hint resolving to f32 on a CPU without bf16).
    rows = {key: row for row in data["accuracy"]["variants"] for key in (row["key"], *row["same_as"])}
    for r in eligible:
        if r["precision"] == "int8":
            assert r["key"] in rows and rows[r["key"]]["top1_same_as_fp32"] == rows[r["key"]]["photos"], r
    forced = [r for r in data["inference"] if "forced" in r["name"]]
    if cpu_info().int8_saturates:  # the saturating kernel is measured, to show what exactness costs, never chosen
        assert len(forced) == 1 and not forced[0]["eligible"] and forced[0]["canary"] == "failed"
    else:
        assert not forced


def test_local_serve_auto_runtime_follows_this_machines_benchmark(bench, lite0, lite0_int8, tmp_path):
    """`local serve --runtime auto` takes the fastest the benchmark measured here, never another machine's."""
    import shutil

    from lambda_onnx.canary import canary_path
    from lambda_onnx.sidecar import sidecar_path
    from local.serve import resolve_auto

    out, _ = bench
    fastest = json.loads((out / "bench.json").read_text())["fastest_choice"]
    models = tmp_path / "models"
    models.mkdir()
    for path in (lite0, lite0_int8):
        for source in (path, sidecar_path(path), canary_path(path)):
            shutil.copy(source, models / source.name)
    model, runtime, why = resolve_auto(models / lite0.name, "auto", model_given=False, bench_json=out / "bench.json")
    assert runtime == fastest["runtime"] and "the fastest whose parity holds on this CPU" in why
    assert model.name == (lite0_int8.name if fastest["precision"] == "int8" else lite0.name)
    assert resolve_auto(models / lite0.name, "openvino", model_given=False)[1:] == ("openvino", "")
    elsewhere = json.loads((out / "bench.json").read_text())
    elsewhere["machine"]["cpu"] = "Some Other CPU"
    (tmp_path / "other.json").write_text(json.dumps(elsewhere))
    assert resolve_auto(models / lite0.name, "auto", model_given=False, bench_json=tmp_path / "other.json")[:2] == (
        models / lite0.name, "onnxruntime")


def test_markdown_has_every_section_and_row(bench):
    out, _ = bench
    text = (out / "bench.md").read_text()
    for section in SECTIONS:
        assert section in text, section
    data = json.loads((out / "bench.json").read_text())
    for r in data["inference"]:
        assert f"| {r['name']} |" in text
    table_rows = [line for line in text.splitlines() if line.startswith("|")]
    assert all(line.count("|") == table_rows_width(line, text) for line in table_rows)
    assert "Fastest runtime × precision here" in text and "Machine:" in text


def table_rows_width(line: str, text: str) -> int:
    """Every row of a table has as many cells as its header."""
    lines = text.splitlines()
    i = lines.index(line)
    while i > 0 and lines[i - 1].startswith("|"):
        i -= 1
    return lines[i].count("|")


def test_png_is_a_chart(bench):
    out, _ = bench
    data = (out / "bench.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    from PIL import Image

    with Image.open(out / "bench.png") as image:
        assert image.width > 1000 and image.height > 400


def test_installed_size_follows_dependencies():
    total, packages = installed_size(["onnxruntime"])
    assert "onnxruntime" in packages and "numpy" in packages  # numpy is a dependency of onnxruntime
    assert total == sum(packages.values()) > packages["onnxruntime"] > 10e6


def test_samples_are_taken_in_interleaved_rounds_and_split_exactly():
    """Every variant gets exactly ``repeats`` batch-1 samples, spread over the rounds in turn, so a
    disturbance lasting a few seconds cannot land on one variant alone."""
    import numpy as np

    from local.measure.bench import BenchConfig
    from local.measure.bench.timing import Variant, measure_in_rounds

    calls: list[tuple[str, int]] = []

    def fresh() -> list[Variant]:
        return [Variant(name, "onnxruntime", "fp32", "fp32", 2, lambda x, name=name: calls.append((name, len(x))))
                for name in ("a", "b")]

    variants = fresh()
    config = BenchConfig(repeats=7, batch_repeats=2, warmup=1, rounds=3)
    results = measure_in_rounds(variants, np.zeros((BATCH, 3, 4, 4), np.float32), config, lambda _: None)
    assert [len(r.samples) for r in results] == [7, 7]
    order = "".join(name for name, size in calls if size == 1)
    # per round: one warm-up + its share of 7 samples (3, 2, 2), first a then b
    assert order == "a" * 4 + "b" * 4 + "a" * 3 + "b" * 3 + "a" * 3 + "b" * 3
    # batch: one warm-up for the new shape, then 2 samples per variant, whatever the rounds
    assert sum(size == BATCH for _, size in calls) == 2 * (1 + 2)
    assert all(r.batch_images_per_s > 0 for r in results)
    no_batch = measure_in_rounds(fresh(), np.zeros((1, 3, 4, 4), np.float32), config, lambda _: None, batch_repeats=0)
    assert all(r.batch_images_per_s is None for r in no_batch)
