"""INT8 that stays correct on every CPU: the exact kernel where VNNI is missing, the canary at load,
and the CPU named in every answer. No test assumes a kind of CPU: a check that needs the other
kind is skipped with a reason naming this one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from lambda_onnx.canary import FP32_MAX_ABS_LOGIT, INT8_MAX_REL_RMS, INT8_MIN_REL_RMS, Canary, canary_path, check, int8_limit
from lambda_onnx.classifier import Classifier
from lambda_onnx.contract import Service
from lambda_onnx.cpu import CpuInfo, cpu_info, int8_kernel_choice, int8_kernel_name, parse_cpuinfo, use_precise_int8
from lambda_onnx.errors import ModelLoadError
from lambda_onnx.photos import CALIBRATION, EVALUATION, by_name
from lambda_onnx.preprocess import decode, prepare
from lambda_onnx.sidecar import Sidecar, sidecar_path

HERE = cpu_info()
NEEDS_NO_VNNI = pytest.mark.skipif(not HERE.int8_saturates,
                                   reason=f"needs an x86-64 CPU without VNNI; this one is {HERE.describe()}")
NEEDS_VNNI = pytest.mark.skipif(not HERE.vnni, reason=f"needs a CPU with AVX512-VNNI or AVX-VNNI; this one is {HERE.describe()}")

# /proc/cpuinfo as three kinds of machine print it (the lines that matter, as the kernel writes them).
EPYC_AVX2 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
             "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni\n")
XEON_VNNI = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\n"
             "flags\t\t: fpu sse2 avx fma avx2 avx512f avx512bw avx512_vnni avx512_bf16\n")
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd aes sha2 crc32 asimddp i8mm bf16 sve\nCPU part\t: 0xd40\n"


def test_cpuinfo_is_read_for_each_kind_of_machine():
    epyc = parse_cpuinfo(EPYC_AVX2, "x86_64")
    assert (epyc.model, epyc.flags, epyc.vnni, epyc.int8_saturates) == ("AMD EPYC", ("avx2", "fma"), False, True)
    assert epyc.describe() == "AMD EPYC, x86_64 (avx2, fma; no VNNI)"
    xeon = parse_cpuinfo(XEON_VNNI, "x86_64")
    assert xeon.vnni and not xeon.int8_saturates and "avx512_vnni" in xeon.flags
    graviton = parse_cpuinfo(GRAVITON, "aarch64")
    assert graviton.model == "arm64 CPU part 0xd40" and graviton.vnni is None and not graviton.int8_saturates
    assert {"asimddp", "i8mm"} <= set(graviton.flags)
    assert CpuInfo.from_section(xeon.section()) == xeon  # an answer's host section reads back


def test_the_kernel_choice_follows_the_cpu_and_the_override():
    epyc, xeon, graviton = (parse_cpuinfo(EPYC_AVX2, "x86_64"), parse_cpuinfo(XEON_VNNI, "x86_64"),
                            parse_cpuinfo(GRAVITON, "aarch64"))
    assert use_precise_int8("auto", epyc) and not use_precise_int8("auto", xeon) and not use_precise_int8("auto", graviton)
    assert use_precise_int8("precise", xeon) and not use_precise_int8("fast", epyc)
    assert int8_kernel_name(True, epyc) == "u8u8 precise" and int8_kernel_name(False, xeon) == "u8s8 vnni"
    assert int8_kernel_name(False, epyc) == "u8s8 saturating (no VNNI)" and "aarch64" in int8_kernel_name(False, graviton)


def test_the_override_comes_from_the_option_or_the_environment(monkeypatch):
    monkeypatch.delenv("INT8_KERNEL", raising=False)
    assert int8_kernel_choice() == "auto" and int8_kernel_choice("Precise") == "precise"
    monkeypatch.setenv("INT8_KERNEL", "fast")
    assert int8_kernel_choice() == "fast"
    monkeypatch.setenv("INT8_KERNEL", "turbo")
    with pytest.raises(ValueError, match=r"one of auto, precise, fast, got 'turbo' \(from \$INT8_KERNEL\)"):
        int8_kernel_choice()


def test_a_quantised_model_names_the_kernel_it_runs_with_here(lite0_int8, lite0):
    int8 = Classifier(lite0_int8)
    assert int8.engine.int8_kernel == int8_kernel_name(use_precise_int8("auto"))
    assert int8.model.int8_kernel == int8.engine.int8_kernel and int8.engine.computes_in == "int8"
    fp32 = Classifier(lite0)
    assert fp32.engine.int8_kernel is None and fp32.engine.computes_in == "fp32"


@pytest.mark.slow
def test_the_export_writes_a_canary_from_the_evaluation_photos(lite0, lite0_int8):
    from export.pipeline import rebuild

    calibration = {p.name for p in CALIBRATION}
    module = rebuild(Sidecar.load(sidecar_path(lite0))).module
    for model in (lite0, lite0_int8):
        meta = Sidecar.load(sidecar_path(model))
        canary = Canary.load(canary_path(model))
        assert canary.model_sha256 == meta.sha256 and canary.precision == meta.precision
        assert canary.photo in {p.name for p in EVALUATION} and canary.photo not in calibration
        assert meta.extra["canary"]["file"] == canary_path(model).name and meta.extra["canary"]["photo"] == canary.photo
        image = decode(canary.image)
        assert image.format == "PNG" and (image.width, image.height) == (meta.preprocessing.resize_size,) * 2
        assert len(canary.image) < 200_000  # small
        # The reference is PyTorch's answer for these very bytes, recomputed here.
        import torch

        with torch.inference_mode():
            ref = module(torch.from_numpy(prepare(canary.image, meta.preprocessing)[0].tensor)).numpy()[0]
        assert np.abs(ref - canary.reference_logits).max() < 1e-4
        assert canary.reference_top5[0]["class_id"] == int(np.argmax(ref))
        assert canary.export["cpu"] and canary.export["kernel"]
        lines = [c["name"] for c in meta.parity["checks"]]
        assert any(line.startswith(f"canary {canary.photo} on this CPU") for line in lines), lines


def test_every_runner_checks_the_canary_at_load(lite0, lite0_int8):
    for model in (lite0, lite0_int8):
        classifier = Classifier(model)
        assert classifier.canary.passed and classifier.canary.photo == Canary.load(canary_path(model)).photo
        assert classifier.model.canary["status"] == "passed" and classifier.canary.ms > 0
    quiet = Classifier(lite0, canary=False)
    assert quiet.canary.status == "absent"


def _perturb_in_place(model: Path, factor: float = 1.5) -> None:
    """Scale one weight tensor inside the file without changing its size: what a flipped or tampered
    file looks like to the Lambda image, which checks only the size at a cold start."""
    proto = onnx.load(str(model))
    tensor = max((t for t in proto.graph.initializer if t.raw_data and t.data_type == onnx.TensorProto.FLOAT),
                 key=lambda t: len(t.raw_data))
    data = model.read_bytes()
    at = data.find(tensor.raw_data)
    assert at > 0 and data.find(tensor.raw_data, at + 1) < 0
    scaled = (np.frombuffer(tensor.raw_data, dtype=np.float32) * np.float32(factor)).astype(np.float32).tobytes()
    model.write_bytes(data[:at] + scaled + data[at + len(scaled):])


def _copy_model(model: Path, folder: Path) -> Path:
    folder.mkdir()
    for source in (model, sidecar_path(model), canary_path(model)):
        shutil.copy(source, folder / source.name)
    return folder / model.name


def test_the_canary_refuses_a_model_whose_weights_changed_after_export(lite0, tmp_path):
    model = _copy_model(lite0, tmp_path / "changed")
    _perturb_in_place(model)
    with pytest.raises(ModelLoadError, match="sha256"):  # a full check catches it first...
        Classifier(model)
    with pytest.raises(ModelLoadError, match=r"canary \(.+\) failed on this CPU .* refusing to serve") as refused:
        Classifier(model, verify_sha256=False)  # ...the image's size-only check does not: the canary does
    assert HERE.model in refused.value.message and "ALLOW_CANARY_FAILURE" in refused.value.message
    served = Classifier(model, verify_sha256=False, allow_canary_failure=True)
    assert served.canary.status == "failed" and served.canary.max_abs_logit > FP32_MAX_ABS_LOGIT
    status, body = Service(served).respond(by_name("coffee").read())
    assert status == 200 and body["model"]["canary"]["status"] == "failed"
    assert body["warnings"] and "answers may be wrong" in body["warnings"][0]


def test_a_canary_from_another_model_is_refused(lite0, lite0_int8, tmp_path):
    model = _copy_model(lite0, tmp_path / "mixed")
    shutil.copy(canary_path(lite0_int8), canary_path(model))
    with pytest.raises(ModelLoadError, match="belongs to another model"):
        Classifier(model)


def test_tolerances_follow_what_the_engine_computes_in(lite0):
    canary = Canary.load(canary_path(lite0))
    ref = canary.reference_logits
    assert check(canary, ref, "fp32").passed
    nudged = ref + np.float32(2 * FP32_MAX_ABS_LOGIT)
    assert not check(canary, nudged, "fp32").passed and check(canary, nudged, "int8").passed
    noisy = ref + np.random.default_rng(0).normal(0, 0.5 * ref.std(), ref.shape).astype(np.float32)
    assert not check(canary, noisy, "int8").passed and "relative logit error" in check(canary, noisy, "int8").reason
    assert INT8_MIN_REL_RMS <= int8_limit(canary) <= INT8_MAX_REL_RMS
    assert not check(canary, ref[:10], "fp32").passed


@NEEDS_NO_VNNI
def test_without_vnni_the_saturating_kernel_fails_the_canary_and_the_precise_one_passes(lite0_int8):
    canary = Canary.load(canary_path(lite0_int8))
    forced = Classifier(lite0_int8, int8_kernel="fast", canary=False)
    assert forced.engine.int8_kernel == "u8s8 saturating (no VNNI)"
    assert forced.run_canary(canary).status == "failed"
    auto = Classifier(lite0_int8)
    assert auto.engine.int8_kernel == "u8u8 precise" and auto.canary.passed and not auto.canary.kernel_fallback
    # An expert forcing the fast kernel still gets right answers: the canary switches kernels, and says so.
    switched = Classifier(lite0_int8, int8_kernel="fast")
    assert switched.engine.int8_kernel == "u8u8 precise" and switched.canary.passed
    assert switched.canary.kernel_fallback.startswith("u8s8 saturating (no VNNI) failed")


@NEEDS_NO_VNNI
def test_without_vnni_openvino_int8_is_refused_by_its_canary(lite0_int8):
    with pytest.raises(ModelLoadError, match="openvino u8s8 saturating"):
        Classifier(lite0_int8, runtime="openvino")


@NEEDS_VNNI
def test_with_vnni_nothing_changes(lite0_int8):
    auto = Classifier(lite0_int8)
    assert auto.engine.int8_kernel == "u8s8 vnni" and auto.canary.passed and not auto.canary.kernel_fallback


def test_the_handler_names_the_cpu_and_the_canary(lite0_handler):
    import base64

    status, body = lite0_handler.classify({"image": base64.b64encode(by_name("coffee").read()).decode()}, "r-1", None)
    assert status == 200 and body["host"] == HERE.section() and body["model"]["canary"]["status"] == "passed"
    assert body["warnings"] == [] and "int8_kernel" in body["model"]


def test_local_serve_names_the_cpu_and_the_canary(lite0_serve):
    import httpx

    answer = httpx.post(lite0_serve.url + "/classify", content=by_name("coffee").read(),
                        headers={"content-type": "image/png"}, timeout=30).json()
    assert answer["host"]["cpu"] == HERE.model and answer["model"]["canary"]["status"] == "passed"
    facts = httpx.get(lite0_serve.url + "/model", timeout=10).json()
    assert facts["host"] == HERE.section() and facts["canary"]["status"] == "passed" and facts["int8_kernel"] is None
    assert "host: " + HERE.describe() in lite0_serve.output()


def test_the_emulated_function_names_the_cpu_and_logs_its_canary(lite0_emulator):
    from local.clients.emulator import EmulatorBackend

    result = EmulatorBackend(lite0_emulator, stop_on_close=False).classify(by_name("coffee").read())
    assert result.body["host"] == HERE.section() and result.model["canary"]["status"] == "passed"
    ready = [json.loads(line) for line in lite0_emulator.log_lines("stdout") if '"model ready"' in line]
    assert ready and ready[-1]["cpu"] == HERE.describe() and ready[-1]["canary"]["status"] == "passed"
    classified = [json.loads(line) for line in lite0_emulator.log_lines("stdout") if '"classified"' in line]
    assert classified and classified[-1]["cpu"] == HERE.describe() and classified[-1]["canary"] == "passed"


def test_the_monitor_groups_latency_by_cpu_when_hosts_differ():
    from local.measure.monitor import Sample, summarise

    def sample(seq: int, cpu: str, ms: float) -> Sample:
        return Sample("lambda", "serverless", 0, seq, float(seq), "", True, 200, ms, ms, ms, seq == 0, 1.0, 100.0, "",
                      cpu, "u8u8 precise", "passed")

    one_host = summarise([sample(i, "AMD EPYC, x86_64 (avx2; no VNNI)", 10.0) for i in range(3)])
    assert [(s.cpu, s.count) for s in one_host] == [("", 3)]
    mixed = [sample(0, "AMD EPYC, x86_64 (avx2; no VNNI)", 10.0), sample(1, "Intel Xeon, x86_64 (avx512_vnni; VNNI)", 5.0),
             sample(2, "Intel Xeon, x86_64 (avx512_vnni; VNNI)", 7.0)]
    stats = {s.cpu: s for s in summarise(mixed)}
    assert set(stats) == {"AMD EPYC, x86_64 (avx2; no VNNI)", "Intel Xeon, x86_64 (avx512_vnni; VNNI)"}
    assert (stats["Intel Xeon, x86_64 (avx512_vnni; VNNI)"].count, stats["Intel Xeon, x86_64 (avx512_vnni; VNNI)"].p50_ms) == (2, 6.0)
