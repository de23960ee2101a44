"""The break-even sweep (issue 22, point 4): every option at every rate through the scenario's own simulation,
against a case computed by hand; the renderer's files; the command line."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from local.measure import cost
from local.measure.scenario.breakeven import (
    BreakevenOption,
    breakeven,
    bursty_shape,
    default_options,
    parse_rates,
    provisioned_for,
    window_for,
    zip_misfit,
)
from local.measure.scenario.calibrate import Calibration, LambdaFigures, ServerFigures, save_cache
from local.measure.scenario.params import Distribution
from local.measure.scenario.results import MONTH_S
from local.measure.scenario.run import ScenarioConfig, lambda_params, run_scenario
from local.measure.scenario.traffic import Shape
from tests.helpers.process import run_module

# The hand-computable case: every latency 100 ms, nothing billed for a cold start, 1 GB, no API Gateway, no load
# balancer; the fleet is c7a.large (2 lanes, a core each: the 100 ms measured here carries over unchanged) at $0.02/h.
SERVICE_MS = 100.0
HOURLY = 0.02
RATES = "0.5:20:9"


def constant_calibration(model: str = "m.onnx", **restore: float) -> Calibration:
    flat = Distribution.constant(SERVICE_MS)
    figures = LambdaFigures(flat, flat, 0.0, 0.0, 1024, "test: constant", **restore)
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
    # SnapStart pays its cache every second of the month (a short window is not charged 3 hours) and each
    # restore; provisioned concurrency its environments
    snap = steady.points["zip-snapstart"][0]
    assert snap.cost_breakdown["snapstart_cache"] == pytest.approx(1.0 * MONTH_S * cost.SNAPSTART_CACHE_USD_PER_GB_S,
                                                                   abs=1e-4)
    restores = round(snap.cold_start_pct / 100 * snap.requests)
    assert restores > 0 and snap.cost_breakdown["snapstart_restore"] == pytest.approx(
        restores * 1.0 * cost.SNAPSTART_RESTORE_USD_PER_GB * MONTH_S / steady.windows_s[0], abs=1e-4)
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


def test_options_are_the_scenarios_lambda_options():
    options = default_options()
    assert [o.key for o in options] == list(cost.LAMBDA_OPTIONS)
    assert all(isinstance(o.option, cost.LambdaOption) for o in options)
    x86, arm, snap, provisioned = options
    assert arm.option.architecture == "arm64" and "ASSUMED equal" in arm.assumption
    assert snap.option.snapstart and not snap.option.provisioned
    assert provisioned.sized_per_rate and provisioned.at(9) == cost.lambda_option("provisioned", provisioned=9)
    assert x86.at(9) == x86.option  # only the provisioned option is sized per rate
    assert provisioned_for(45, Distribution.constant(SERVICE_MS), 0.5) == 9
    with pytest.raises(ValueError, match="SnapStart cannot be combined"):
        BreakevenOption(cost.LambdaOption("zip-snapstart", snapstart=True, provisioned=2), "bad")


def test_snapstarts_restore_is_the_calibrations():
    # a real function's REPORT lines (Restore Duration) in the calibration: the break-even takes them as the
    # scenario does, through for_option, and says so
    calibration = constant_calibration(restore_ms=250.0, billed_restore_ms=300.0)
    config = constant_config()
    params = lambda_params(replace(config, lambda_option=cost.lambda_option("zip-snapstart")), calibration)
    assert params.snapstart and params.init_ms == 300.0 and params.cold_ms.p50_ms == SERVICE_MS + 250.0
    result = breakeven(calibration, config, [1.0, 2.0], target_requests=500)
    (said,) = [a for a in result.assumptions if a.startswith("Lambda SnapStart (zip): a cold start is a restore")]
    assert "Restore Duration of a real function's REPORT lines" in said and "billed 300 ms" in said
    assert cost.SNAPSTART_PRICES_SOURCE in said


def test_snapstart_is_charged_once_as_the_scenario_charges_it():
    # the break-even's SnapStart point against `scenario steady --duration 30d --lambda-option zip-snapstart` at
    # the same rate and calibration: the same month (each simulates its own arrivals, so within a percent), and
    # each SnapStart charge once: charging the cache twice would add ~45 % here
    rate = 1.0
    calibration = constant_calibration()
    result = breakeven(calibration, constant_config(), [rate], target_requests=20_000)
    point = result.sweeps[0].point("zip-snapstart", rate)
    config = replace(constant_config(), traffic=Shape("steady", rate=rate), duration_s=30 * 86_400.0,
                     lambda_option=cost.lambda_option("zip-snapstart"))
    scenario = run_scenario(config, calibration).lambda_
    assert point.cost_breakdown["snapstart_cache"] == pytest.approx(
        scenario.cost_breakdown["snapstart_cache"] * MONTH_S / config.period_s, abs=1e-4)
    assert point.cost_per_month_usd == pytest.approx(scenario.cost_per_month_usd, rel=0.01)
    assert sorted(point.cost_breakdown) == sorted(scenario.cost_breakdown)


def test_snapstart_is_left_out_when_the_models_zip_would_not_fit(tmp_path):
    big, small = tmp_path / "big.onnx", tmp_path / "small.onnx"
    with big.open("wb") as out:  # sparse: only its size counts
        out.truncate(cost.ZIP_UNZIPPED_LIMIT_BYTES - cost.ZIP_BYTES_BESIDE_MODEL + 1)
    with small.open("wb") as out:
        out.truncate(cost.ZIP_UNZIPPED_LIMIT_BYTES - cost.ZIP_BYTES_BESIDE_MODEL)
    assert zip_misfit(small) is None and zip_misfit(tmp_path / "absent.onnx") is None
    assert "SnapStart left out: big.onnx's zip package would be about 262.1 MB unzipped" in zip_misfit(big)
    result = breakeven(constant_calibration(str(big)), constant_config(), [1.0, 2.0], target_requests=500)
    assert "zip-snapstart" not in result.sweeps[0].points and "zip-snapstart" not in [o["key"] for o in result.options]
    assert zip_misfit(big) in result.assumptions


def test_the_renderer_writes_png_markdown_and_json(constant_sweep, tmp_path):
    from local.report.breakeven import write_outputs

    paths = write_outputs(constant_sweep, tmp_path)
    assert set(paths) == {"png", "markdown", "json"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["markdown"].read_text()
    assert constant_sweep.sweeps[0].words in text and "Lambda arm64 image" in text
    assert "a cold start is a restore" in text and "PLACEHOLDER" not in text
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
