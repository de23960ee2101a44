"""SnapStart's after-restore hook: a restore on another kind of CPU rebuilds the session and runs the
canary again; on the same kind it keeps the snapshot's. A restore is simulated by changing the CPU
facts the hook reads (``/proc/cpuinfo``, through ``lambda_onnx.cpu``'s path) after the model loaded,
and calling the hook; the model runs for real on this CPU whatever the file says, so the canary
decides what is kept. Everything passes on a CPU with VNNI and on one without."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from lambda_onnx import cpu
from lambda_onnx.classifier import Classifier
from lambda_onnx.contract import Service
from lambda_onnx.cpu import cpu_info, parse_cpuinfo
from lambda_onnx.photos import by_name
from lambda_onnx.snapshot import after_restore, chosen_kernel
from tests.helpers.handler import fresh_handler
from tests.test_int8_cpu import EPYC_AVX2, XEON_VNNI

HERE = cpu_info()
pytestmark = pytest.mark.skipif(not HERE.x86, reason=f"simulates x86-64 hosts; this one is {HERE.describe()}")


class FakeCpu:
    """``/proc/cpuinfo`` as the hook will read it: a file that a test rewrites between 'hosts'."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def become(self, text: str) -> None:
        self.path.write_text(text)
        cpu_info.cache_clear()


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu, "_PROC_CPUINFO", tmp_path / "cpuinfo")
    yield FakeCpu(tmp_path / "cpuinfo")
    monkeypatch.undo()
    cpu_info.cache_clear()  # the real CPU again, for the tests after this one


def answer(classifier: Classifier) -> dict:
    status, body = Service(classifier).respond(by_name("coffee").read())
    assert status == 200, body
    return dict(body)


def test_a_vnni_snapshot_restored_without_vnni_rebuilds_with_the_exact_kernel(lite0_int8, fake_cpu):
    fake_cpu.become(XEON_VNNI)
    snapshot_cpu = cpu_info()
    classifier = Classifier(lite0_int8)  # the snapshot's model: the default kernel with VNNI (or, on a real
    assert classifier.canary.passed  # host without it, the exact one the canary fell back to)
    fake_cpu.become(EPYC_AVX2)
    check = after_restore(classifier, snapshot_cpu)
    assert check.rebuilt and (check.snapshot_kernel, check.restored_kernel) == ("u8s8 vnni", "u8u8 precise")
    assert classifier.engine.int8_kernel == "u8u8 precise" and classifier.canary.passed
    assert classifier.canary.restored.startswith("rebuilt after restore") and "AMD EPYC" in classifier.canary.restored
    body = answer(classifier)
    assert body["host"] == parse_cpuinfo(EPYC_AVX2, HERE.machine).section()  # the restored host, not the snapshot's
    assert body["model"]["int8_kernel"] == "u8u8 precise" and body["model"]["canary"]["status"] == "passed"
    assert body["model"]["canary"]["restored"] == classifier.canary.restored
    assert body["predictions"][0]["label"] in by_name("coffee").expected


def test_a_snapshot_without_vnni_restored_with_vnni_is_checked_again(lite0_int8, fake_cpu):
    fake_cpu.become(EPYC_AVX2)
    snapshot_cpu = cpu_info()
    classifier = Classifier(lite0_int8)
    assert classifier.engine.int8_kernel == "u8u8 precise"
    fake_cpu.become(XEON_VNNI)
    check = after_restore(classifier, snapshot_cpu)
    assert check.rebuilt and check.restored_kernel == "u8s8 vnni" and classifier.canary.passed
    # The default kernel is right only where the CPU really has VNNI; elsewhere its canary fails and the
    # exact kernel is kept, and the answer says so.
    if HERE.vnni:
        assert classifier.engine.int8_kernel == "u8s8 vnni" and not classifier.canary.kernel_fallback
    else:
        assert classifier.engine.int8_kernel == "u8u8 precise" and classifier.canary.kernel_fallback
    assert answer(classifier)["model"]["canary"]["restored"].startswith("rebuilt after restore")


def test_a_restore_on_the_same_kind_of_cpu_keeps_the_snapshot_session(lite0_int8, lite0, fake_cpu):
    fake_cpu.become(EPYC_AVX2)
    snapshot_cpu = cpu_info()
    int8, fp32 = Classifier(lite0_int8), Classifier(lite0)
    engine = int8.engine
    fake_cpu.become(EPYC_AVX2.replace("AMD EPYC", "AMD EPYC 7R13 Processor"))  # another host, the same kind
    check = after_restore(int8, snapshot_cpu)
    assert not check.rebuilt and int8.engine is engine and check.kernel == "u8u8 precise"
    assert int8.canary.restored == "kept after restore: same INT8 kernel on this CPU"
    assert answer(int8)["host"]["cpu"] == "AMD EPYC 7R13 Processor"
    assert chosen_kernel(fp32, snapshot_cpu) is None
    assert not after_restore(fp32, snapshot_cpu).rebuilt and fp32.canary.restored.endswith("no INT8 kernel to choose")


@pytest.fixture
def int8_handler(lite0_int8, fake_cpu, monkeypatch):
    """``lambda_onnx.handler`` imported as Lambda's init would, on a 'VNNI host', for the INT8 model."""
    fake_cpu.become(XEON_VNNI)
    monkeypatch.setenv("MODEL_PATH", str(lite0_int8))
    for name in ("MODEL_PRECISION", "MODEL_VERIFY", "INT8_KERNEL"):
        monkeypatch.delenv(name, raising=False)
    module = fresh_handler()
    assert module.SERVICE is not None, module.LOAD_ERROR
    return module


def test_the_handler_registers_its_hook_with_the_runtime_and_it_rechecks(int8_handler, fake_cpu):
    from snapshot_restore_py import get_after_restore

    assert int8_handler.RESTORE_HOOK is True
    hooks = [func for func, args, kwargs in get_after_restore() if func is int8_handler._after_restore]
    assert len(hooks) == 1  # registered once, at init, as the runtime's library keeps it
    fake_cpu.become(EPYC_AVX2)
    hooks[0]()  # what the runtime does when an environment resumes from the snapshot
    assert int8_handler.CPU == parse_cpuinfo(EPYC_AVX2, HERE.machine).describe()
    event = {"image": base64.b64encode(by_name("coffee").read()).decode()}
    status, body = int8_handler.classify(event, "r-restored", None)
    assert status == 200 and body["host"]["vnni"] is False and body["model"]["int8_kernel"] == "u8u8 precise"
    assert body["model"]["canary"]["status"] == "passed" and body["model"]["canary"]["restored"].startswith("rebuilt")
    assert body["metrics"]["cold_start"]  # the first request an environment serves after a restore

