"""Local power tuning: Lambda memory sizes emulated with real cgroups around the real emulator.

What is checked: the CPU quota is applied (the cgroup's own throttling counters rise under the
smaller share), the handler's thread count follows the memory size as the core computes it, a
size below the model's need ends out of memory (not in a hang), cgroups are gone afterwards (also
after Ctrl-C), the recommendation follows from its inputs, the outputs are complete, the cgroup v2
file writing on a plain directory, and the clear error where no cgroup can be made. Speed is never
asserted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from PIL import Image

from lambda_onnx import resources
from local.clients.invoke import LambdaClient
from local.lambda_env.cgroups import (
    MIB,
    NAME_PREFIX,
    CgroupUnavailableError,
    LambdaCgroup,
    cgroups_of,
    configure_v2,
    enable_v2_controllers,
    find_hierarchy,
    lambda_limits,
    read_counters,
)
from local.measure import cost
from local.measure.tune import SizeResult, TuneConfig, recommend, run_tune
from local.measure.tune.aws import sweep_aws
from local.measure.tune.config import EMULATION_NOTE
from local.measure.tune.results import cost_per_million
from local.report.tune import markdown, write_outputs
from local.wire import last_report
from tests.helpers.process import run_module

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups takes root here (or a delegated cgroup)")


def our_cgroups() -> list[Path]:
    return cgroups_of(os.getpid(), find_hierarchy())


def emulators_running() -> list[psutil.Process]:
    """This process's emulators started by the tuner (their command has the cgroup wrapper), not
    the session's other emulators (the conftest's lite0_emulator lives on)."""
    return [p for p in psutil.Process().children(recursive=True)
            if p.name() == "aws-lambda-rie" and any(NAME_PREFIX in arg for arg in p.cmdline())]


# --- limits (pure) ------------------------------------------------------------------------------


def test_limits_follow_lambdas_memory_to_cpu_ratio():
    small = lambda_limits(512, machine_cpus=2)
    assert small.lambda_cpus == pytest.approx(512 / 1769) and small.cpus == small.lambda_cpus and not small.capped
    assert small.quota_us == round(512 / 1769 * small.period_us) and small.memory_bytes == 512 * MIB
    big = lambda_limits(4096, machine_cpus=2)
    assert big.capped and big.cpus == 2 and big.quota_us == 2 * big.period_us and "capped" in big.describe()
    assert lambda_limits(10240, machine_cpus=64).lambda_cpus == pytest.approx(10240 / 1769)  # 5.79: under the cap of 6
    with pytest.raises(ValueError, match="128"):
        lambda_limits(100)


# --- a real sweep on two sizes ------------------------------------------------------------------

SMALL, LARGE = 512, 4096


@pytest.fixture(scope="module")
def sweep(lite0, lite0_int8, tmp_path_factory):
    """fp32 and INT8 EfficientNet-Lite0 at a small and a large size, 3 warm requests each."""
    steps = []
    config = TuneConfig(model=lite0, int8_model=lite0_int8, sizes=(LARGE, SMALL), requests=3, budget_ms=5000, timeout_s=20)
    report = run_tune(config, on_progress=steps.append)
    paths = write_outputs(report, tmp_path_factory.mktemp("tune"))
    return report, paths, steps


@needs_root
@pytest.mark.slow
def test_sweep_applies_the_cpu_quota_and_the_threads_follow_memory(sweep, monkeypatch):
    report, _, steps = sweep
    assert [(r.precision, r.memory_mb) for r in report.results] == [("fp32", SMALL), ("fp32", LARGE), ("int8", SMALL),
                                                                     ("int8", LARGE)]
    assert all(r.ok and r.status == "ok" and r.requests_ok == 3 for r in report.results), [r.message for r in report.results]
    for r in report.results:
        limits = lambda_limits(r.memory_mb)
        assert r.cpus == pytest.approx(limits.cpus, abs=1e-3) and r.cpu_capped == limits.capped
        # What the function computes for this memory size on this machine (the core's one function):
        with monkeypatch.context() as patched:
            patched.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(r.memory_mb))
            assert r.threads == resources.default_threads(), r.key
        assert r.cold_round_trip_ms > 0 and r.init_phase_ms > 0 and r.init_ms > 0
        assert "not a cold start" not in " ".join(r.warnings)
        assert set(r.warm) == {"duration", "handler", "round_trip"} and r.warm["duration"]["n"] == 3
        assert r.memory_peak_mb > 0 and r.peak_rss_mb > 0 and r.oom_kills == 0
        assert r.billed_ms >= r.warm["duration"]["p50"] and r.cost_per_million_usd > 0
    if len(os.sched_getaffinity(0)) >= 2:  # 512 MB: 1 thread; 4096 MB: 2 on any machine with two CPUs
        assert {r.memory_mb: r.threads for r in report.results if r.precision == "fp32"} == {SMALL: 1, LARGE: 2}
    for precision in ("fp32", "int8"):
        small, large = (next(r for r in report.results if (r.precision, r.memory_mb) == (precision, m)) for m in (SMALL, LARGE))
        # The cgroup's own counters: the 0.29-vCPU share ran out of quota, the larger one far less often.
        assert small.throttling["total"]["nr_throttled"] > 0 and small.throttling["total"]["throttled_ms"] > 0
        ratio = {r.memory_mb: r.throttling["total"]["nr_throttled"] / max(1, r.throttling["total"]["nr_periods"])
                 for r in (small, large)}
        assert ratio[SMALL] > ratio[LARGE], (precision, small.throttling, large.throttling)
    assert steps[-1].done == steps[-1].total == 4 * (1 + 3) and any("cold" in s.message for s in steps)
    assert our_cgroups() == [] and emulators_running() == []


@needs_root
def test_outputs_are_complete_and_labelled_emulated(sweep):
    report, paths, _ = sweep
    data = json.loads(paths["json"].read_text())
    assert data["emulation_note"].startswith("EMULATED") and data["machine"]["cgroups"].startswith("cgroup v")
    assert len(data["results"]) == 4 and data["config"]["sizes"] == [SMALL, LARGE]
    assert data["config"]["prices"]["gb_second_usd"] == cost.LAMBDA_GB_SECOND_USD["x86_64"]
    for result in data["results"]:
        assert {"p50", "p90", "p99"} <= set(result["warm"]["duration"]) and result["throttling"]["warm"] is not None
    assert data["recommendation"]["choice"] == report.recommendation.choice is not None
    text = paths["markdown"].read_text()
    assert "EMULATED" in text and "## Recommendation" in text and report.recommendation.text in text
    assert all(f"| {p} | {m} |" in text or f"| **{p}** ⭐ | {m} |" in text
               for p in ("fp32", "int8") for m in (SMALL, LARGE))
    assert text.count("⭐") == 1
    with Image.open(paths["png"]) as png:
        assert png.format == "PNG" and png.width > 800 and png.height > 300


@needs_root
@pytest.mark.slow
def test_a_size_below_the_models_need_ends_out_of_memory(resnet_random, lite0):
    """ResNet-50 fp32 (100 MB of weights) cannot load in Lambda's smallest size. (Lite0 would fit
    128 MB in a cgroup's accounting, so no legal size is below its need: see local/lambda_env/cgroups.py.)"""
    config = TuneConfig(model=resnet_random, precisions=("fp32",), sizes=(128,), requests=2, budget_ms=1000, timeout_s=20)
    report = run_tune(config)
    (result,) = report.results
    assert result.status == "oom" and not result.ok, (result.status, result.message)  # not "timeout": detected, no hang
    assert result.oom_kills >= 1 and "out of memory" in result.message and "128 MiB" in result.message
    assert result.cost_per_million_usd is None and result.requests_ok == 0
    assert report.recommendation.choice is None and "out of memory" in report.recommendation.text
    assert "OOM" in markdown(report)
    assert our_cgroups() == [] and emulators_running() == []


@needs_root
def test_ctrl_c_mid_sweep_stops_the_emulator_and_removes_the_cgroups(lite0):
    def interrupt(step) -> None:
        if step.done >= 2:  # the cold start and a warm request are done: emulator and cgroup exist now
            assert our_cgroups() and emulators_running()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tune(TuneConfig(model=lite0, precisions=("fp32",), sizes=(1024,), requests=5), on_progress=interrupt)
    assert our_cgroups() == [] and emulators_running() == []


@needs_root
@pytest.mark.slow
def test_cli_sweeps_and_prints_json(lite0, tmp_path):
    out = run_module("local", "tune", "--model", str(lite0), "--precisions", "fp32,int8", "--sizes", "1769",
                     "--requests", "2", "--budget-ms", "5000", "--json", "--out", str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [r["memory_mb"] for r in data["results"]] == [1769] and data["results"][0]["status"] == "ok"
    assert any("INT8 skipped" in note for note in data["notes"])  # no efficientnet_lite0.int8.onnx next to the fixture
    assert "cold start" in out.stderr  # progress lines go to stderr with --json
    assert all(Path(p).is_file() for p in data["outputs"].values())
    bad = run_module("local", "tune", "--model", str(tmp_path / "missing.onnx"), "--sizes", "1769", timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert run_module("local", "tune", "--sizes", "64", timeout=120).returncode == 2


@needs_root
@pytest.mark.slow
def test_gui_tune_event_with_the_cost_views_prices(lite0):
    from gradio_client import Client

    from gui.launch import LaunchOptions, launch
    from local.clients.targets import Targets

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = launch(Targets(model=lite0), LaunchOptions(port=port), quiet=True)
    try:
        client = Client(app.local_url, verbose=False, download_files=False)
        summary, plot, table, files = client.predict("1769", 2, 5000, "p90", ["fp32", "int8"], "",
                                                  "arm64", cost.LAMBDA_GB_SECOND_USD["arm64"], 0.20, 1.00, False, 0.0,
                                                  api_name="/tune")
    finally:
        app.close()
    assert "EMULATED" in summary and "Recommendation" in summary and "INT8 skipped" in summary
    assert [row[table["headers"].index("memory MB")] for row in table["data"]] == [1769]
    usd = table["data"][0][table["headers"].index("USD per 1M")]
    p50 = table["data"][0][table["headers"].index("p50 ms")]
    # arm64 price, no API Gateway, no cold starts: the cost model with exactly the inputs given
    expected = cost_per_million(cost.CostInputs(architecture="arm64", api_gateway=False, cold_start_fraction=0.0), 1769, p50, 0)[1]
    assert usd == pytest.approx(expected, abs=1e-4)
    assert len(files) == 3
    # the chart, drawn once: shown here (Gradio sends it as an image) and written as tune.png
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")
    assert our_cgroups() == []


# --- the recommendation follows from its inputs (pure) ---------------------------------------------


def made(precision: str, memory_mb: int, p50: float, p90: float, usd: float, **changes) -> SizeResult:
    result = SizeResult("emulated", precision, memory_mb, lambda_cpus=memory_mb / 1769, cpus=memory_mb / 1769, threads=1,
                        requests=10, requests_ok=10, warm={"duration": {"p50": p50, "p90": p90, "p99": p90 + 5, "n": 10}},
                        peak_rss_mb=300, cost_per_million_usd=usd)
    return replace(result, **changes)


def test_recommends_the_cheapest_within_the_budget():
    results = [made("fp32", 512, 300, 320, 3.10), made("fp32", 1024, 150, 160, 3.00), made("fp32", 2048, 60, 70, 3.20),
               made("int8", 1024, 90, 120, 2.50), made("int8", 2048, 30, 35, 2.90)]
    rec = recommend(results, budget_ms=100)
    assert (rec.choice, rec.memory_mb, rec.precision) == ("2048 MB int8", 2048, "int8")
    assert rec.within_budget == ("2048 MB int8", "2048 MB fp32")
    assert "over the 100 ms budget" in rec.excluded["1024 MB int8"] and "INT8" in rec.text
    # The percentile decides: at p50, 1024 MB INT8 (p50 90 ms) is within 100 ms and cheaper.
    assert recommend(results, budget_ms=100, percentile="p50").choice == "1024 MB int8"
    assert recommend(results, budget_ms=None).choice == "1024 MB int8"  # no budget: the cheapest overall
    assert "no latency budget" in recommend(results, budget_ms=None).text


def test_failed_and_too_tight_configurations_are_never_recommended():
    results = [made("fp32", 128, 10, 12, 1.00, status="oom", message="out of memory during the cold start"),
               made("fp32", 256, 20, 22, 1.10, requests_ok=7),
               made("fp32", 384, 25, 27, 1.20, peak_rss_mb=400),  # RSS above its memory: would OOM on Lambda
               made("fp32", 1024, 40, 45, 2.00), made("fp32", 1536, 40, 44, 2.00)]
    rec = recommend(results, budget_ms=50)
    assert rec.choice == "1536 MB fp32"  # equal cost: the faster one
    assert rec.excluded["128 MB fp32"].startswith("oom") and "7 of 10" in rec.excluded["256 MB fp32"]
    assert "likely run out of memory" in rec.excluded["384 MB fp32"]


def test_when_nothing_fits_it_says_what_to_do():
    results = [made("fp32", 1024, 150, 160, 3.0), made("fp32", 3008, 80, 90, 4.0, cpu_capped=False)]
    rec = recommend(results, budget_ms=50, max_memory_mb=3008)
    assert rec.choice is None and rec.within_budget == ()
    assert "fastest is 3008 MB fp32 at 90.0 ms" in rec.text and "at least 90 ms" in rec.text
    assert "larger sizes" in rec.text and "--function" in rec.text and "INT8" in rec.text
    assert "--function" not in recommend(results, budget_ms=50, max_memory_mb=8000).text


def test_cost_per_million_is_the_cost_views_model():
    prices = cost.CostInputs(architecture="x86_64", cold_start_fraction=0.01, api_gateway=True)
    billed, usd = cost_per_million(prices, 1024, 10.2, 500.0)
    by_hand = (1.0 * (11 + 0.01 * 500) / 1000 * cost.LAMBDA_GB_SECOND_USD["x86_64"] + cost.LAMBDA_REQUEST_USD
               + cost.HTTP_API_REQUEST_USD) * 1e6
    assert billed == 11 and usd == pytest.approx(by_hand)


def test_emulation_note_states_the_limits():
    note = EMULATION_NOTE.format(cpu="X")
    assert note.startswith("EMULATED") and all(w in note for w in ("same handler code", "runtime client", "cgroups",
                                                                    "No network", "image pull", "CPU (X)"))


# --- cgroup files: v2 writing on a plain directory, discovery, the clear errors ------------------------


def fake_v2(root: Path) -> Path:
    """A cgroup v2 tree as the kernel lays it out, for this process in /session."""
    (root / "session").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "session" / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "session" / "cgroup.subtree_control").write_text("\n")
    proc = root / "proc-self-cgroup"
    proc.write_text("0::/session\n")
    return proc


def test_v2_limits_are_written_as_the_kernel_expects(tmp_path):
    proc = fake_v2(tmp_path)
    hierarchy = find_hierarchy(tmp_path, proc)
    parent = tmp_path / "session"
    assert hierarchy.version == 2 and hierarchy.parents == {"cpu": parent, "memory": parent}
    enable_v2_controllers(parent)
    assert (parent / "cgroup.subtree_control").read_text() == "+cpu +memory"
    child = parent / "fn"
    child.mkdir()
    (child / "memory.oom.group").write_text("0\n")
    limits = lambda_limits(512, machine_cpus=2)
    notes = configure_v2(child, limits, swap_present=True)
    assert notes == []
    assert (child / "cpu.max").read_text() == f"{round(512 / 1769 * 100_000)} 100000"
    assert (child / "memory.max").read_text() == str(512 * MIB) and (child / "memory.swap.max").read_text() == "0"
    assert (child / "memory.oom.group").read_text() == "1"
    (child / "cpu.stat").write_text("usage_usec 900\nuser_usec 600\nsystem_usec 300\nnr_periods 10\nnr_throttled 4\n"
                                    "throttled_usec 2500\nnr_bursts 0\nburst_usec 0\n")
    (child / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    (child / "memory.current").write_text(f"{100 * MIB}\n")
    (child / "memory.peak").write_text(f"{300 * MIB}\n")
    counters = read_counters(2, child, child)
    assert (counters.nr_periods, counters.nr_throttled, counters.throttled_ms) == (10, 4, 2.5)
    assert (counters.memory_current_mb, counters.memory_peak_mb, counters.memory_limit_hits, counters.oom_kills) == (100, 300, 3, 1)


def test_a_plain_directory_is_not_taken_for_a_cgroup(tmp_path):
    proc = fake_v2(tmp_path)
    with pytest.raises(CgroupUnavailableError, match="not a cgroup filesystem"):
        LambdaCgroup(512, root=tmp_path, proc_cgroup=proc).create()
    assert not [d for d in (tmp_path / "session").iterdir() if d.is_dir()]  # nothing left behind


def test_no_cgroup_controllers_is_a_clear_error(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")
    with pytest.raises(CgroupUnavailableError) as raised:
        find_hierarchy(tmp_path, proc)
    assert "no cgroup with the cpu and memory controllers" in raised.value.message and raised.value.status == 503


@pytest.fixture
def unwritable():
    """Make directories unwritable, for root too (root ignores permission bits, not the immutable flag)."""
    made: list[Path] = []

    def make(path: Path) -> None:
        path.chmod(0o555)
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(path)], check=True)
        made.append(path)

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        path.chmod(0o755)


def test_an_unwritable_cgroup_root_is_a_clear_error_before_anything_runs(tmp_path, unwritable, lite0):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "memory" / "sandbox").mkdir(parents=True)
    (tmp_path / "memory" / "sandbox" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("4:memory:/sandbox\n1:cpu:/\n0::/\n")
    assert find_hierarchy(tmp_path, proc).version == 1
    unwritable(tmp_path / "cpu")
    unwritable(tmp_path / "memory" / "sandbox")
    with pytest.raises(CgroupUnavailableError) as raised:
        LambdaCgroup(1024, root=tmp_path, proc_cgroup=proc).create()
    assert f"cannot create a cgroup in {tmp_path / 'cpu'}" in raised.value.message
    assert any(reason in raised.value.message for reason in ("Operation not permitted", "Permission denied"))
    with pytest.raises(CgroupUnavailableError, match="cannot create a cgroup"):
        run_tune(TuneConfig(model=lite0, precisions=("fp32",), sizes=(1024,), requests=1, cgroup_root=tmp_path,
                            proc_cgroup=proc))
    assert emulators_running() == []


# --- the real function on AWS: configuration calls against moto (its invoke needs Docker) --------------


REPORT = ("START RequestId: 6f8e0c5e-1b1a-4b5c-9d3e-0a1b2c3d4e5f Version: $LATEST\n"
          "END RequestId: 6f8e0c5e-1b1a-4b5c-9d3e-0a1b2c3d4e5f\n"
          "REPORT RequestId: 6f8e0c5e-1b1a-4b5c-9d3e-0a1b2c3d4e5f\tDuration: 52.33 ms\tBilled Duration: 53 ms\t"
          "Memory Size: 1024 MB\tMax Memory Used: 312 MB\tInit Duration: 1480.21 ms\t\n")


def test_aws_report_line_is_parsed_with_every_field():
    assert last_report(REPORT).facts() == {"duration_ms": 52.33, "billed_duration_ms": 53, "memory_size_mb": 1024,
                                           "max_memory_used_mb": 312, "init_duration_ms": 1480.21}
    assert last_report("no report here") is None


@pytest.fixture
def moto_function(monkeypatch):
    import io
    import zipfile

    import boto3
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        role = boto3.client("iam").create_role(RoleName="tune", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler.py", "def handler(event, context):\n    return {}\n")
        boto3.client("lambda").create_function(FunctionName="tuned", Runtime="python3.11", Role=role, Handler="handler.handler",
                                               Code={"ZipFile": code.getvalue()}, MemorySize=3008)
        yield LambdaClient("us-east-1")


def test_real_sweep_sets_memory_waits_and_restores_it(moto_function):
    moto_function.set_memory("tuned", 1024)
    assert moto_function.memory_mb("tuned") == 1024
    moto_function.set_memory("tuned", 3008)
    seen = []

    def stop_after_configuring(*args, **kwargs) -> None:
        seen.append(moto_function.memory_mb("tuned"))
        raise KeyboardInterrupt  # Ctrl-C after the first size was configured, before any invoke

    with pytest.raises(KeyboardInterrupt):
        sweep_aws("tuned", "us-east-1", [512, 1024], 2, b"image", cost.CostInputs(), tick=stop_after_configuring)
    assert seen == [512] and moto_function.memory_mb("tuned") == 3008  # the original size is back
