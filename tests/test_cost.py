"""The cost model: figures follow from their inputs."""

from __future__ import annotations

import math

import pytest

from local.measure.cost import (
    HOURS_PER_MONTH,
    LAMBDA_GB_SECOND_USD,
    CostInputs,
    compare,
    curve,
    log_volumes,
    server_monthly,
    serverless_monthly,
    serverless_per_request,
)


def test_per_request_cost_by_hand():
    inputs = CostInputs(memory_mb=2048, architecture="x86_64", warm_duration_ms=99.2, init_ms=0, cold_start_fraction=0,
                        api_gateway=False)
    # 2 GB x 0.100 s (rounded up to the ms) x price + request price
    assert serverless_per_request(inputs) == pytest.approx(2 * 0.100 * LAMBDA_GB_SECOND_USD["x86_64"] + 0.20e-6)


def test_cold_starts_and_api_gateway_add_their_share():
    base = CostInputs(memory_mb=1024, warm_duration_ms=50, init_ms=800, cold_start_fraction=0.0, api_gateway=False)
    with_cold = CostInputs(**{**base.__dict__, "cold_start_fraction": 0.1})
    with_api = CostInputs(**{**base.__dict__, "api_gateway": True})
    assert serverless_per_request(with_cold) - serverless_per_request(base) == pytest.approx(0.1 * 0.8 * LAMBDA_GB_SECOND_USD["x86_64"])
    assert serverless_per_request(with_api) - serverless_per_request(base) == pytest.approx(1.00e-6)


def test_arm64_is_cheaper_per_gb_second():
    x86, arm = CostInputs(architecture="x86_64"), CostInputs(architecture="arm64")
    assert serverless_per_request(arm) < serverless_per_request(x86)
    with pytest.raises(ValueError, match="architecture"):
        serverless_per_request(CostInputs(architecture="sparc"))


def test_crossover_is_where_the_lines_meet():
    inputs = CostInputs(server_hourly_usd=0.1, server_throughput_rps=50, server_utilisation=0.5)
    result = compare(inputs)
    assert result.crossover_requests_per_month is not None
    v = result.crossover_requests_per_month
    assert serverless_monthly(v, inputs) == pytest.approx(server_monthly(v, inputs))
    assert serverless_monthly(v * 0.9, inputs) < server_monthly(v * 0.9, inputs)
    assert serverless_monthly(v * 1.1, inputs) > server_monthly(v * 1.1, inputs)
    assert result.server_monthly_usd_one == pytest.approx(0.1 * HOURS_PER_MONTH)


def test_no_crossover_when_lambda_beats_a_full_server():
    # a tiny, cheap request against an expensive, slow server
    inputs = CostInputs(memory_mb=128, warm_duration_ms=1, cold_start_fraction=0, api_gateway=False,
                        server_hourly_usd=10.0, server_throughput_rps=1)
    assert compare(inputs).crossover_requests_per_month is None


def test_servers_step_up_with_volume():
    inputs = CostInputs(server_throughput_rps=1, server_utilisation=1.0, server_hourly_usd=1.0)
    capacity = 3600 * HOURS_PER_MONTH
    assert server_monthly(capacity, inputs) == pytest.approx(HOURS_PER_MONTH)
    assert server_monthly(capacity + 1, inputs) == pytest.approx(2 * HOURS_PER_MONTH)


def test_curve_covers_the_volumes():
    volumes = log_volumes(1e3, 1e8, 11)
    assert volumes[0] == pytest.approx(1e3) and volumes[-1] == pytest.approx(1e8)
    rows = curve(CostInputs(), volumes)
    assert [r["requests_per_month"] for r in rows] == volumes
    assert all(math.isfinite(r["serverless_usd"]) and r["server_usd"] > 0 for r in rows)
