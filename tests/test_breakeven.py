"""The break-even sweep (issue 22, point 4): every option at every rate through the scenario's own simulation,
against a case computed by hand; the renderer's files; the command line."""

from __future__ import annotations

import json
import math

import pytest

from local.measure import cost
from local.measure.scenario.breakeven import (
    LambdaOption,
    breakeven,
    bursty_shape,
    default_options,
    lambda_params_for,
    parse_rates,
    provisioned_for,
    window_for,
)
from local.measure.scenario.calibrate import Calibration, LambdaFigures, ServerFigures, save_cache
from local.measure.scenario.params import Distribution
from local.measure.scenario.results import MONTH_S
from local.measure.scenario.run import ScenarioConfig
from local.measure.scenario.traffic import Shape
from tests.helpers.process import run_module

# The hand-computable case: every latency 100 ms, nothing billed for a cold start, 1 GB, no API Gateway, no load
# balancer; the fleet is c7a.large (2 lanes, a core each: the 100 ms measured here carries over unchanged) at $0.02/h.
SERVICE_MS = 100.0
HOURLY = 0.02
RATES = "0.5:20:9"


def constant_calibration(model: str = "m.onnx") -> Calibration:
    flat = Distribution.constant(SERVICE_MS)
    figures = LambdaFigures(flat, flat, 0.0, 0.0, 1024, "test: constant")
    server = ServerFigures(flat, "test: constant", 0.0, 2, 1, SERVICE_MS)
    return Calibration.of(model, 1024, figures, server)


def constant_config() -> ScenarioConfig:
    return ScenarioConfig(traffic=Shape("steady"), duration_s=1.0, instance_type="c7a.large", server_hourly_usd=HOURLY,
                          load_balancer=False, api_gateway=False, prices=cost.CostInputs(api_gateway=False, memory_mb=1024))


def per_request_usd(architecture: str) -> float:
    """requests x (price per request + ceil(S) ms x GB x price per GB-ms)."""
    return cost.LAMBDA_REQUEST_USD + math.ceil(SERVICE_MS) / 1000.0 * 1.0 * cost.LAMBDA_GB_SECOND_USD[architecture]


@pytest.fixture(scope="module")
def constant_sweep():
    return breakeven(constant_calibration(), constant_config(), parse_rates(RATES), target_requests=4000)


def test_the_crossover_is_where_the_hand_computed_lines_meet(constant_sweep):
    # Lambda arm64 is the cheapest Lambda: linear in the rate. The fleet is one instance while the busiest minute needs
    # ceil(rate x S / (lanes x utilisation)) = 1 (below 10 req/s), $0.02 x 730 h. They meet where r x month x p = one
    # instance's month.
    one_instance = 1 * HOURLY * cost.HOURS_PER_MONTH
    by_hand = one_instance / (per_request_usd("arm64") * MONTH_S)
    assert by_hand == pytest.approx(3.62, abs=0.01)
    steady = constant_sweep.sweeps[0]
    assert [(c.below, c.above) for c in steady.crossovers] == [("arm64-image", "ec2")]
    step = math.log(steady.rates[1] / steady.rates[0])
    assert abs(math.log(steady.crossovers[0].rate_rps / by_hand)) <= step
    assert steady.words.startswith("below 3.") and "Lambda arm64 image is cheapest" in steady.words
    assert "above 3." in steady.words and "the fleet on EC2 (1" in steady.words and "x c7a.large)" in steady.words


def test_each_point_is_the_simulations_cost_as_computed_by_hand(constant_sweep):
    steady = constant_sweep.sweeps[0]
    for key, arch in (("x86-image", "x86_64"), ("arm64-image", "arm64")):
        for point, window in zip(steady.points[key], steady.windows_s):
            assert point.cost_per_month_usd == pytest.approx(point.requests * per_request_usd(arch) * MONTH_S / window,
                                                             rel=1e-3)
            assert point.p99_ms == SERVICE_MS and point.refused_pct == 0
    for point in steady.points["ec2"]:
        # sized for the busiest minute: at least what the mean rate needs, ceil(rate x S / (lanes x utilisation))
        assert point.instances >= math.ceil(point.rate_rps * SERVICE_MS / 1000 / (2 * 0.5))
        assert point.cost_per_month_usd == pytest.approx(point.instances * HOURLY * cost.HOURS_PER_MONTH, rel=1e-3)
    # SnapStart pays its cache every second and each restore; provisioned concurrency its environments
    snap = steady.points["snapstart"][0]
    assert snap.cost_breakdown["snapstart_cache"] == pytest.approx(1.0 * MONTH_S * 0.0000015046, abs=1e-4)
    restores = round(snap.cold_start_pct / 100 * snap.requests)
    assert restores > 0 and snap.cost_breakdown["snapstart_restore"] == pytest.approx(
        restores * 1.0 * 0.0001397998 * MONTH_S / steady.windows_s[0], abs=1e-4)
    assert steady.points["provisioned"][0].cost_breakdown["provisioned_concurrency"] == pytest.approx(
        1.0 * MONTH_S * cost.PROVISIONED_USD_PER_GB_S["x86_64"], abs=1e-4)


def test_a_users_rate_reads_the_cheapest_option_and_its_p99():
    result = breakeven(constant_calibration(), constant_config(), parse_rates("1:10:2"), rate=1.5, target_requests=2000)
    (line,) = result.lines_at(1.5)
    assert line.startswith("At 1.5 req/s (steady Poisson): Lambda arm64 image, $") and "p99 100 ms is cheapest" in line
    assert result.to_dict()["at_asked_rate"] == [line]


def test_burstiness_scales_the_spikes_shape_to_the_mean_rate():
    shape = bursty_shape(2.0, 5.0)
    assert shape.name == "spikes" and shape.mean_rate == pytest.approx(2.0) and shape.peak_rate == pytest.approx(10.0)
    assert bursty_shape(2.0, 1.0) == Shape("steady", rate=2.0)
    with pytest.raises(ValueError, match="at most 60x"):
        bursty_shape(1.0, 60.0)
    assert window_for(Shape("steady", 1 / 3600), 20_000) == 365 * 86_400  # one an hour: a year of them
    assert window_for(Shape("steady", 500.0), 20_000) == 600  # at least ten minutes
    assert window_for(shape, 20_000) % 3600 == 0  # whole burst cycles
    assert parse_rates("1/3600:500:3")[0] == pytest.approx(1 / 3600) and len(parse_rates("1:10:5")) == 5
    with pytest.raises(ValueError, match="LOW:HIGH:N"):
        parse_rates("1-10")


def test_options_are_records_of_the_one_simulation():
    calibration = constant_calibration()
    base = calibration.lambda_params(prices=cost.CostInputs(memory_mb=1024))
    x86, arm, snap, provisioned = default_options()
    assert lambda_params_for(arm, base, peak_rps=1, utilisation=0.5).prices.architecture == "arm64"
    assert lambda_params_for(arm, base, peak_rps=1, utilisation=0.5).warm_ms == base.warm_ms  # assumed equal speed
    restored = lambda_params_for(snap, base, peak_rps=1, utilisation=0.5)
    assert restored.cold_ms.p50_ms == SERVICE_MS + 500 and restored.init_ms == 500
    assert lambda_params_for(provisioned, base, peak_rps=45, utilisation=0.5).provisioned == provisioned_for(45, base.warm_ms, 0.5) == 9
    with pytest.raises(ValueError, match="SnapStart cannot be combined"):
        LambdaOption("bad", "bad", snapstart=True, provisioned=2, restore_ms=Distribution.constant(1))


def test_the_renderer_writes_png_markdown_and_json(constant_sweep, tmp_path):
    from local.report.breakeven import write_outputs

    paths = write_outputs(constant_sweep, tmp_path)
    assert set(paths) == {"png", "markdown", "json"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["markdown"].read_text()
    assert constant_sweep.sweeps[0].words in text and "Lambda arm64 image" in text and "PLACEHOLDER" in text
    data = json.loads(paths["json"].read_text())
    assert data["sweeps"][0]["crossovers"][0]["below"] == "arm64-image"


@pytest.mark.slow
def test_cli_breakeven_with_a_burstiness_and_a_users_rate(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not loaded")
    saved = save_cache(constant_calibration(str(model)), tmp_path / "calibration.json")
    out = run_module("local", "scenario", "--breakeven", "--rates", "1:10:3", "--burstiness", "4", "--rate", "2",
                     "--spike-every", "10m", "--spike-length", "30s", "--memory", "1024", "--instance-type", "c7a.large",
                     "--model", str(model), "--calibration", str(saved), "--calibrate", "never", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "At 2 req/s (steady Poisson):" in out.stdout and "At 2 req/s (burstiness 4" in out.stdout
    assert (tmp_path / "breakeven.png").stat().st_size > 0 and (tmp_path / "breakeven.md").is_file()
    data = json.loads((tmp_path / "breakeven.json").read_text())
    assert [s["burstiness"] for s in data["sweeps"]] == [1.0, 4.0]


@pytest.mark.slow  # imports Gradio
def test_the_scenario_tabs_breakeven(tmp_path):
    from types import SimpleNamespace

    import gradio as gr

    from gui.views.scenario import breakeven_view, build_tab

    model = tmp_path / "model.onnx"
    model.write_bytes(b"not loaded")
    saved = save_cache(constant_calibration(str(model)), tmp_path / "calibration.json")
    view = breakeven_view(model, rates="1:10:3", rate=2, memory_mb=1024, calibration="never", instance_type="c7a.large",
                          prices=cost.CostInputs(api_gateway=False), saved_calibration=saved)
    assert "Break-even" in view.summary and "At 2 req/s (steady Poisson)" in view.summary and len(view.files) == 3
    assert list(view.table["rate_rps"]) == pytest.approx([1.0, 2.0, 10 ** 0.5, 10.0])
    with gr.Blocks() as demo:
        with gr.Tabs():
            build_tab(SimpleNamespace(model_path=model))
    assert "scenario_breakeven" in {dependency.get("api_name") for dependency in demo.config["dependencies"]}
