"""Every way to run the function on Lambda, priced by the same simulation: the x86_64 and arm64 container
images (INIT billed at each cold start), the zip package with SnapStart (a restore instead: its billed
duration, the restore and cache charges) and provisioned concurrency, each against a hand-computed bill."""

from __future__ import annotations

import numpy as np
import pytest

from local.measure import cost
from local.measure.scenario.lambda_sim import simulate_lambda
from local.measure.scenario.params import Distribution, LambdaParams, for_option, restore_estimate_ms
from local.wire import parse_report

GB = 2.0  # 2,048 MB
# Four requests in an hour: a cold start, a warm one, a cold one again after the 600 s idle timeout, a warm one.
ARRIVALS = np.array([0.0, 100.0, 2000.0, 2010.0])
HOUR = 3600.0


def image(**kwargs) -> LambdaParams:
    """Measured as the image runs: 100 ms warm, 1,100 ms cold of which 1,000 ms INIT; no API Gateway."""
    prices = cost.CostInputs(memory_mb=2048, api_gateway=False)
    return LambdaParams(warm_ms=Distribution.constant(100), cold_ms=Distribution.constant(1100), init_ms=1000,
                        memory_mb=2048, idle_timeout_s=600, api_timeout_s=None, prices=prices, **kwargs)


def bill(option: cost.LambdaOption, **kwargs):
    return simulate_lambda(ARRIVALS, for_option(image(), option, **kwargs), end_s=HOUR)


def test_the_x86_image_bills_each_cold_start_its_init():
    run = bill(cost.lambda_option("x86-image"))
    assert list(run.cold) == [True, False, True, False]
    seconds = (4 * 100 + 2 * 1000) / 1000  # every request's duration, and the INIT of both cold starts
    assert run.cost["lambda_duration"] == pytest.approx(GB * seconds * 0.0000166667)
    assert run.cost["lambda_requests"] == pytest.approx(4 * 0.20e-6)
    assert set(run.cost) == {"lambda_duration", "lambda_requests"}


def test_arm64_is_the_same_bill_at_its_price():
    run = bill(cost.lambda_option("arm64-image"))
    assert run.cost["lambda_duration"] == pytest.approx(GB * 2.4 * 0.0000133334)
    assert 0.0000133334 / 0.0000166667 == pytest.approx(0.8, abs=1e-5)  # 20 % less per GB-second


def test_snapstart_restores_instead_of_initialising_and_pays_for_its_cache_and_restores():
    run = bill(cost.lambda_option("zip-snapstart"), restore_ms=300, billed_restore_ms=150)
    assert list(run.cold) == [True, False, True, False]
    assert list(run.latency_ms) == [1100 - 1000 + 300, 100, 400, 100]  # the INIT is replaced by the restore
    assert run.cost["lambda_duration"] == pytest.approx(GB * (4 * 100 + 2 * 150) / 1000 * 0.0000166667)
    assert run.cost["snapstart_restore"] == pytest.approx(2 * GB * 0.0001397998)
    assert run.cost["snapstart_cache"] == pytest.approx(GB * 3 * HOUR * 0.0000015046)  # an hour bills the 3-hour minimum
    assert cost.snapstart_cache_usd(2048, 30 * 86_400) == pytest.approx(GB * 30 * 86_400 * 0.0000015046)  # a month: $7.80
    assert cost.snapstart_cache_usd(2048, 30 * 86_400) == pytest.approx(7.80, abs=0.01)


def test_snapstart_on_arm64_and_the_restore_estimate():
    params = for_option(image(), cost.lambda_option("zip-snapstart", architecture="arm64"))
    assert params.prices.architecture == "arm64" and params.snapstart
    # No real REPORT lines: the emulator's cold start less its INIT (1,100 - 1,000 ms), at least a warm request.
    assert restore_estimate_ms(image()) == 100 and params.init_ms == 100
    assert params.cold_ms.p50_ms == 1100 - 1000 + 100
    run = simulate_lambda(ARRIVALS, params, end_s=HOUR)
    assert run.cost["lambda_duration"] == pytest.approx(GB * (4 * 100 + 2 * 100) / 1000 * 0.0000133334)


def test_provisioned_concurrency_has_no_cold_start_and_bills_its_environment_by_the_second():
    run = bill(cost.lambda_option("provisioned"))
    assert not run.cold.any() and list(run.latency_ms) == [100] * 4
    assert run.cost["provisioned_concurrency"] == pytest.approx(1 * GB * HOUR * 0.0000041667)
    assert run.cost["provisioned_duration"] == pytest.approx(GB * 0.4 * 0.0000097222)
    assert run.cost.get("lambda_duration", 0) == 0


def test_the_options_refuse_what_aws_refuses():
    with pytest.raises(ValueError, match="SnapStart cannot be combined with provisioned concurrency"):
        cost.lambda_option("zip-snapstart", provisioned=2)
    with pytest.raises(ValueError, match="one of x86-image, arm64-image, zip-snapstart, provisioned"):
        cost.LambdaOption("zip")
    with pytest.raises(ValueError, match="provisioned option needs"):
        cost.lambda_option("x86-image", provisioned=1)
    assert cost.lambda_option("provisioned", provisioned=3).provisioned == 3
    assert cost.lambda_option("arm64-image", architecture="x86_64").architecture == "arm64"


def test_a_real_functions_report_lines_give_the_restore():
    line = ("REPORT RequestId: 8f5d\tDuration: 61.20 ms\tBilled Duration: 62 ms\tMemory Size: 3008 MB\t"
            "Max Memory Used: 410 MB\tRestore Duration: 412.34 ms\tBilled Restore Duration: 187 ms")
    report = parse_report(line)
    assert report is not None and (report.restore_duration_ms, report.billed_restore_duration_ms) == (412.34, 187)
    assert report.init_duration_ms is None


def test_the_report_log_calibrates_the_restore(tmp_path):
    from local.measure.scenario.calibrate import from_report_log

    lines = [f"REPORT RequestId: w{i}\tDuration: {50 + i} ms\tBilled Duration: {51 + i} ms\tMemory Size: 3008 MB\t"
             f"Max Memory Used: 400 MB" for i in range(3)]
    lines.append("REPORT RequestId: c1\tDuration: 80 ms\tBilled Duration: 1081 ms\tMemory Size: 3008 MB\t"
                 "Max Memory Used: 400 MB\tInit Duration: 1000.00 ms")
    lines += [f"REPORT RequestId: r{i}\tDuration: 60 ms\tBilled Duration: 61 ms\tMemory Size: 3008 MB\t"
              f"Max Memory Used: 400 MB\tRestore Duration: {400 + 10 * i} ms\tBilled Restore Duration: {180 + i} ms"
              for i in range(3)]
    log = tmp_path / "report.log"
    log.write_text("\n".join(lines) + "\n")
    figures = from_report_log(log)
    assert figures.warm_ms.p50_ms == 51 and figures.init_ms == 1000  # restores are neither warm nor INIT
    assert (figures.restore_ms, figures.billed_restore_ms) == (410, 181) and "3 SnapStart restores" in figures.source
    lam = LambdaParams(warm_ms=figures.warm_ms, cold_ms=figures.cold_ms, init_ms=figures.init_ms, memory_mb=3008)
    params = for_option(lam, cost.lambda_option("zip-snapstart"), restore_ms=figures.restore_ms,
                        billed_restore_ms=figures.billed_restore_ms)
    assert params.init_ms == 181 and params.cold_ms.p50_ms == 1080 - 1000 + 410
    assert "Restore Duration of a real function" in params.cold_ms.source


def test_the_scenario_command_takes_the_option_and_prices_it(tmp_path):
    import argparse

    from local.commands import scenario as command
    from local.measure.scenario.run import ScenarioConfig, lambda_params
    from tests.test_scenario import fake_calibration

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    calibration = fake_calibration()

    def config(*options: str) -> ScenarioConfig:
        args = parser.parse_args(["scenario", "steady", "--duration", "1h", *options])
        return command.config_from_args(args, command.traffic_from_args(args))

    snap = lambda_params(config("--lambda-option", "zip-snapstart", "--architecture", "arm64"), calibration)
    assert snap.snapstart and snap.prices.architecture == "arm64" and snap.provisioned == 0
    assert snap.init_ms == restore_estimate_ms(calibration.lambda_params())
    provisioned = lambda_params(config("--lambda-option", "provisioned", "--provisioned", "3"), calibration)
    assert provisioned.provisioned == 3 and not provisioned.snapstart
    assert lambda_params(config("--lambda-option", "arm64-image"), calibration).prices.architecture == "arm64"
    assert lambda_params(config(), calibration).prices.architecture == "x86_64"  # no option: as before
    with pytest.raises(ValueError, match="SnapStart cannot be combined"):
        config("--lambda-option", "zip-snapstart", "--provisioned", "1")
