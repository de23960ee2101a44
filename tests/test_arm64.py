"""arm64 proven offline: ``python -m local arm64check --short`` runs EfficientNet-Lite0 fp32 and INT8 on
ONNX Runtime's aarch64 kernels under qemu (Graviton2, neoverse-n1) and every check passes; the
comparison fails a guest that is not arm64 or whose logits moved. A correctness check, not a timing.

Needs qemu's user-mode emulator (one that emulates an arm64 /proc/cpuinfo: 10.0 here) and mmdebstrap
(``bash .ci/run`` installs both). The short check builds its root file system in a temporary directory
(about 75 MB from Debian's mirror, plus the lock's aarch64 wheels) and took about two minutes here.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from lambda_onnx.canary import FP32_MAX_ABS_LOGIT
from local.measure.arm64 import guest
from local.measure.arm64.check import Check, compare
from tests.helpers.process import ROOT, run_module

TOOLS = {name: shutil.which(name) for name in ("mmdebstrap", "qemu-aarch64")}
ONNXRUNTIME = re.search(r"^onnxruntime==(\S+)", (ROOT / "lambda_onnx" / "requirements.lock").read_text(), re.MULTILINE)[1]
needs_emulator = pytest.mark.skipif(not all(TOOLS.values()), reason=f"missing {[n for n, p in TOOLS.items() if not p]} "
                                    "(bash .ci/run installs qemu-user from bookworm-backports and mmdebstrap)")


@pytest.mark.slow
def test_the_comparison_fails_a_guest_that_is_not_arm64_or_whose_logits_moved(lite0):
    """The checks have teeth: this x86 process posing as the guest fails the CPU and kernel checks,
    and logits moved by twice the fp32 tolerance fail the comparison with x86."""
    here = guest.probe(lite0.resolve())
    moved = dict(here, logits=[v + 2 * FP32_MAX_ABS_LOGIT for v in here["logits"]])
    checks: list[Check] = []
    row = compare("neoverse-n1", {"cpu": guest.cpu_facts(), "features": [], "models": [moved]},
                  {here["model"]: here}, checks)
    passed = {c.name.split(": ", 1)[1]: c.passed for c in checks}
    assert passed == {"lambda_onnx.cpu reads an arm64 CPU": False, "INT8 kernel choice": False,
                      f"{lite0.name}: canary at load (fp32)": True, f"{lite0.name}: logits vs x86 (fp32)": False}, checks
    assert row["models"][0]["vs_x86_max_abs_logit"] == pytest.approx(2 * FP32_MAX_ABS_LOGIT, rel=1e-3)


@pytest.mark.slow
@needs_emulator
def test_arm64check_short_passes_on_aarch64_kernels(lite0, lite0_int8, tmp_path):
    result = run_module("local", "arm64check", "--short", "--model", str(lite0), "--model", str(lite0_int8),
                        "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), timeout=1500)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "not a timing" in result.stderr and "not a timing" in result.stdout
    checks = [line for line in result.stdout.splitlines() if line[:1] in "✓✗"]
    assert len(checks) == 6 and all(line.startswith("✓") for line in checks), result.stdout

    report = json.loads((tmp_path / "out" / "arm64.json").read_text())
    assert report["passed"] and "not a timing" in (tmp_path / "out" / "arm64.md").read_text()
    assert report["guest"]["versions"]["onnxruntime"] == ONNXRUNTIME
    assert report["qemu"]["version"] and report["host"]["machine"] == "x86_64"
    [cpu] = report["cpus"]
    assert cpu["cpu"] == "neoverse-n1" and "asimddp" in cpu["features"] and "i8mm" not in cpu["features"]
    assert (cpu["facts"]["machine"], cpu["facts"]["isa"], cpu["facts"]["vnni"]) == ("aarch64", ["asimd", "asimddp"], None)
    fp32, int8 = cpu["models"]
    assert (fp32["precision"], fp32["arm64_kernel"], fp32["canary_arm64"]["status"]) == ("fp32", None, "passed")
    assert (int8["precision"], int8["arm64_kernel"], int8["canary_arm64"]["status"]) == ("int8", "aarch64 int8 (dot-product)", "passed")
    assert fp32["vs_x86_max_abs_logit"] <= FP32_MAX_ABS_LOGIT and int8["vs_x86_top1_same"]
    assert Path(report["guest"]["rootfs"]).is_relative_to(tmp_path)
