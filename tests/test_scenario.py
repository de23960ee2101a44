"""The scenario simulator: traffic, the Lambda and fleet models, costs, month scale, the CLI.

Pure simulation, no emulator: fast. Behaviour is asserted (every request accounted for, who is
cold, who queues, exact hand-computed cases, the Cost module's prices); never wall-clock time.
"""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest

from local.measure import cost
from local.measure.cost import PROVISIONED_USD_PER_GB_S
from local.measure.scenario.calibrate import Calibration, LambdaFigures, ServerFigures, from_report_log, save_cache
from local.measure.scenario.fleet_sim import simulate_fleet
from local.measure.scenario.lambda_sim import simulate_lambda
from local.measure.scenario.params import Distribution, FleetParams, LambdaParams, lane_time_factor, lanes_for
from local.measure.scenario.results import OK, REJECTED, THROTTLED, TIMED_OUT, summarise, time_series, verdict
from local.measure.scenario.run import DAY_S, ScenarioConfig, plan, run_scenario
from local.measure.scenario.traffic import ArrivalsFormatError, Shape, format_duration, parse_duration, parse_lines, read_arrivals
from tests.helpers.process import run_module

STATUSES = {OK, THROTTLED, REJECTED, TIMED_OUT}


def lam(warm=100.0, cold=500.0, **kwargs) -> LambdaParams:
    return LambdaParams(warm_ms=Distribution.constant(warm), cold_ms=Distribution.constant(cold), **kwargs)


def fleet(service=100.0, **kwargs) -> FleetParams:
    return FleetParams(service_ms=Distribution.constant(service), **kwargs)


def fake_calibration(model="models/efficientnet_lite0.onnx", memory_mb=3008) -> Calibration:
    rng = np.random.default_rng(0)
    figures = LambdaFigures(Distribution.measured(rng.lognormal(math.log(40), 0.1, 60).tolist(), "test warm"),
                            Distribution.measured([700, 720, 760, 800, 900], "test cold"), 600.0, 5.0, memory_mb, "test")
    server = ServerFigures(Distribution.measured(rng.lognormal(math.log(45), 0.1, 60).tolist(), "test server"), "test")
    return Calibration.of(model, memory_mb, figures, server)


# --- traffic --------------------------------------------------------------------------------------


def test_durations_parse_and_print():
    assert parse_duration("90s") == 90 and parse_duration("15m") == 900 and parse_duration("1h30m") == 5400
    assert parse_duration("30d") == 30 * DAY_S and parse_duration(12) == 12
    for bad in ("", "abc", "5 weeks", "-3s", "0"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(30 * DAY_S) == "30 d" and format_duration(93) == "93 s"


@pytest.mark.parametrize("shape", [Shape("steady", 5), Shape("diurnal", 3, peak_to_trough=8),
                                   Shape("spikes", 1, spike_every_s=600, spike_length_s=60, spike_multiplier=10),
                                   Shape("sparse", every_s=30)])
def test_shapes_have_their_mean_rate_and_stay_in_the_period(shape):
    arrivals = shape.arrivals(DAY_S, seed=3)
    assert np.all(np.diff(arrivals) >= 0) and arrivals.min() >= 0 and arrivals.max() < DAY_S
    assert arrivals.size / DAY_S == pytest.approx(shape.mean_rate, rel=0.03)


def test_diurnal_peak_and_trough_and_sparse_is_exact():
    shape = Shape("diurnal", 10, peak_to_trough=5)
    arrivals = shape.arrivals(DAY_S, seed=1)
    hours = np.histogram(arrivals, bins=24, range=(0, DAY_S))[0]
    assert hours.max() / hours.min() == pytest.approx(5, rel=0.25)  # hourly buckets smooth the curve a little
    assert np.argmin(hours) in (0, 23) and 10 <= np.argmax(hours) <= 13  # trough at midnight, peak at noon
    assert np.array_equal(Shape("sparse", every_s=30).arrivals(120), [0.0, 30.0, 60.0, 90.0])


def test_shapes_refuse_nonsense():
    for kwargs in ({"name": "bursty"}, {"rate": 0}, {"rate": -1}, {"peak_to_trough": 0.5},
                   {"spike_length_s": 100, "spike_every_s": 10}, {"jitter": 2}):
        with pytest.raises(ValueError):
            Shape(**{"name": "steady", **kwargs})


def test_a_csv_of_seconds_with_or_without_header(tmp_path):
    assert list(parse_lines(["time_s", "2.5", "0.5", "", "1"]).times) == [0.0, 0.5, 2.0]
    parsed = parse_lines(["1700000010.5,GET", "1700000000,POST"])
    assert list(parsed.times) == [0.0, 10.5] and parsed.first_epoch_s == 1700000000 and parsed.format == "csv"
    path = tmp_path / "arrivals.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("arrival\n0\n3\n")
    assert list(read_arrivals(path).times) == [0.0, 3.0]


def test_api_gateway_access_logs_json_and_clf():
    json_lines = ['{"requestId":"a","requestTimeEpoch":1700000000123,"status":"200"}',
                  '2023-11-14T22:13:21.000Z {"requestId":"b","requestTimeEpoch":"1700000001123"}',  # a CloudWatch export
                  '{"requestId":"c","requestTime":"14/Nov/2023:22:13:22 +0000"}']
    parsed = parse_lines(json_lines)
    assert parsed.format == "api-gateway-json" and list(parsed.times) == pytest.approx([0.0, 1.0, 1.877])
    clf = ['127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] "POST /classify HTTP/1.1" 200 512 req-1',
           '127.0.0.1 - - [14/Nov/2023:23:13:20 +0100] "POST /classify HTTP/1.1" 200 512 req-2']  # same instant, +1 h zone
    parsed = parse_lines(clf)
    assert parsed.format == "api-gateway-clf" and list(parsed.times) == [0.0, 0.0]


def test_alb_access_log_takes_the_request_creation_time():
    # AWS's documented example entry (the field order of the ALB access-log docs)
    line = ('http 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.000 '
            '0.001 0.000 200 200 34 366 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.46.0" - - '
            'arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 '
            '"Root=1-58337262-36d228ad5d99923122bbe354" "-" "-" 0 2018-07-02T22:22:48.364000Z "forward" "-" "-" '
            '"10.0.0.1:80" "200" "-" "-"')
    later = line.replace("2018-07-02T22:22:48.364000Z", "2018-07-02T22:22:50.364000Z")
    parsed = parse_lines([line, later, "garbage line"])
    assert parsed.format == "alb" and list(parsed.times) == pytest.approx([0.0, 2.0]) and parsed.skipped == 1
    assert parsed.first_epoch_s == pytest.approx(1530570168.364)


def test_a_file_without_arrivals_says_what_was_expected(tmp_path):
    (tmp_path / "x.txt").write_text("hello\nworld\n")
    with pytest.raises(ArrivalsFormatError, match="one number of seconds per line"):
        read_arrivals(tmp_path / "x.txt")
    with pytest.raises(ArrivalsFormatError, match="cannot read"):
        read_arrivals(tmp_path / "missing.csv")


# --- the Lambda model -----------------------------------------------------------------------------


def test_a_small_case_by_hand_lambda():
    # t=0 cold (env 0, busy to 0.5); t=1 warm on env 0 (busy to 1.1); t=1.01 finds env 0 busy: cold env 1;
    # t=20: both idle for more than 10 s (reclaimed at 11.1 and 11.51): cold env 2.
    run = simulate_lambda(np.array([0.0, 1.0, 1.01, 20.0]), lam(idle_timeout_s=10, init_ms=400, api_timeout_s=None), end_s=30)
    assert list(run.latency_ms) == [500, 100, 500, 500]
    assert list(run.cold) == [True, False, True, True] and list(run.status) == [OK] * 4
    times, counts = run.instances
    assert list(times) == pytest.approx([0, 1.01, 11.1, 11.51, 20]) and list(counts) == [1, 2, 1, 0, 1]
    result = summarise(run, "by hand")
    assert (result.cold_starts, result.peak_instances, result.peak_concurrency) == (3, 2, 2)
    gb_s = 3008 / 1024 * (100 * 4 + 400 * 3) / 1000  # every request bills its warm 100 ms, a cold one its INIT too
    assert run.cost["lambda_duration"] == pytest.approx(gb_s * cost.LAMBDA_GB_SECOND_USD["x86_64"])
    assert run.cost["lambda_requests"] == pytest.approx(4 * cost.LAMBDA_REQUEST_USD)


def test_every_request_is_accounted_for_exactly_once():
    arrivals = Shape("spikes", 2, spike_every_s=300, spike_length_s=30, spike_multiplier=50).arrivals(1800, seed=4)
    params = lam(warm=80, cold=900, concurrency_limit=20, scaling_burst=10, scaling_refill_per_s=1)
    for run in (simulate_lambda(arrivals, params, seed=1), simulate_fleet(arrivals, fleet(60, queue=5, queue_timeout_s=0.5))):
        assert run.status.size == arrivals.size and set(np.unique(run.status)) <= STATUSES
        result = summarise(run, "x")
        assert result.served + result.throttled + result.rejected + result.timeouts == result.requests == arrivals.size
    assert summarise(simulate_lambda(arrivals, params, seed=1), "x").throttled > 0  # the limits did bite


def test_with_an_idle_timeout_longer_than_every_gap_only_each_environments_first_request_is_cold():
    # one request at a time, gaps of 2 to 18 s, idle timeout 20 s: the first request is the only cold one
    sparse = Shape("sparse", every_s=10, jitter=0.8).arrivals(3600, seed=2)
    assert np.diff(sparse).max() < 20
    run = simulate_lambda(sparse, lam(idle_timeout_s=20))
    assert list(np.flatnonzero(run.cold)) == [0]
    # overlapping requests need several environments: each is cold once, none is reclaimed and made cold again
    busy = Shape("steady", 20).arrivals(600, seed=2)
    run = simulate_lambda(busy, lam(warm=120, cold=300, idle_timeout_s=700), seed=0, end_s=600)
    times, counts = run.instances
    assert np.all(np.diff(counts) > 0) and run.cold.sum() == counts[-1] > 1
    shorter = simulate_lambda(busy, lam(warm=120, cold=300, idle_timeout_s=5), seed=0, end_s=600)
    assert shorter.cold.sum() > run.cold.sum()  # with a short timeout, idle environments go and come back cold


def test_sequential_requests_reuse_one_warm_environment():
    run = simulate_lambda(np.arange(0, 100, 2.0), lam(idle_timeout_s=5))
    assert run.cold.sum() == 1 and summarise(run, "x").peak_instances == 1


def test_the_concurrency_limit_and_the_scaling_rate_throttle():
    burst = np.zeros(50)  # 50 requests at the same instant
    limited = simulate_lambda(burst, lam(concurrency_limit=10))
    assert (limited.status == THROTTLED).sum() == 40 and limited.cold.sum() == 10
    rate_limited = simulate_lambda(burst, lam(scaling_burst=30, scaling_refill_per_s=1.0))
    assert (rate_limited.status == THROTTLED).sum() == 20 and any("scaling rate" in n for n in rate_limited.notes)
    later = simulate_lambda(np.concatenate([burst, [10.0] * 40]), lam(scaling_burst=30, scaling_refill_per_s=1.0))
    assert (later.status[50:] == THROTTLED).sum() == 0  # 30 environments warm at t=10, 10 new from refilled tokens


def test_api_gateway_gives_up_at_30_s():
    run = simulate_lambda(np.array([0.0, 100.0]), lam(warm=100, cold=31_000))
    assert list(run.status) == [TIMED_OUT, OK] and run.latency_ms[0] == 30_000
    direct = simulate_lambda(np.array([0.0]), lam(cold=31_000, api_timeout_s=None))
    assert direct.status[0] == OK


def test_provisioned_concurrency_has_no_cold_starts_and_is_priced_by_the_second():
    params = lam(provisioned=2, memory_mb=2048)
    run = simulate_lambda(np.arange(0, 3600, 60.0), params, end_s=3600)
    assert run.cold.sum() == 0
    assert run.cost["provisioned_concurrency"] == pytest.approx(2 * 2 * 3600 * PROVISIONED_USD_PER_GB_S["x86_64"])
    assert run.cost.get("lambda_duration", 0) == 0 and run.cost["provisioned_duration"] > 0


def test_the_cost_of_a_steady_load_is_the_cost_modules():
    inputs = cost.CostInputs(memory_mb=1769, warm_duration_ms=47, init_ms=800)
    params = lam(warm=50, cold=1000, init_ms=800, overhead_ms=3, memory_mb=1769, prices=inputs)
    run = simulate_lambda(Shape("steady", 5).arrivals(3600, seed=0), params, end_s=3600)
    result = summarise(run, "steady")
    expected = cost.CostInputs(memory_mb=1769, warm_duration_ms=47, init_ms=800,
                               cold_start_fraction=result.cold_starts / result.requests)
    assert sum(run.cost.values()) == pytest.approx(result.requests * cost.serverless_per_request(expected), rel=1e-9)
    per_month = summarise(simulate_fleet(Shape("steady", 5).arrivals(3600), fleet(instances=3), end_s=3600), "fleet")
    assert per_month.cost_breakdown["instances"] * cost.HOURS_PER_MONTH == pytest.approx(
        3 * cost.SERVER_HOURLY_USD * cost.HOURS_PER_MONTH)


def test_the_same_seed_gives_the_same_run():
    arrivals = Shape("steady", 10).arrivals(300, seed=1)
    params = LambdaParams(warm_ms=Distribution.measured(list(range(30, 90)), "t"), cold_ms=Distribution.constant(500))
    a, b = simulate_lambda(arrivals, params, seed=7), simulate_lambda(arrivals, params, seed=7)
    assert np.array_equal(a.latency_ms, b.latency_ms)
    assert not np.array_equal(a.latency_ms, simulate_lambda(arrivals, params, seed=8).latency_ms)


# --- the fleet model -------------------------------------------------------------------------------


def test_a_small_case_by_hand_fleet():
    # one worker, one waiting place: 0 runs; 0.05 waits 50 ms; 0.06 finds the queue full (503); 0.5 runs at once
    run = simulate_fleet(np.array([0.0, 0.05, 0.06, 0.5]), fleet(100, workers=1, queue=1))
    assert list(run.status) == [OK, OK, REJECTED, OK]
    assert list(run.latency_ms) == pytest.approx([100, 150, 0, 100]) and list(run.wait_ms) == pytest.approx([0, 50, 0, 0])
    impatient = simulate_fleet(np.array([0.0, 0.05]), fleet(100, workers=1, queue=1, queue_timeout_s=0.02))
    assert list(impatient.status) == [OK, REJECTED] and impatient.latency_ms[1] == pytest.approx(20)


def test_the_part_of_a_round_trip_outside_the_worker_overlaps_with_the_next_request():
    # 100 ms round trips of which 30 ms are the client's and the HTTP loop's: the worker is held 70 ms, so a
    # request at 0.05 waits 20 ms (not 50) and a request at 0.08 none; each still takes its whole 100 ms.
    run = simulate_fleet(np.array([0.0, 0.05, 0.2, 0.28]), fleet(100, workers=1, queue=1, overhead_ms=30.0))
    assert list(run.status) == [OK] * 4
    assert list(run.wait_ms) == pytest.approx([0, 20, 0, 0]) and list(run.latency_ms) == pytest.approx([100, 120, 100, 100])
    assert list(run.busy_ms) == pytest.approx([70] * 4)
    assert fleet(100, workers=2, overhead_ms=30.0).capacity_rps == pytest.approx(2000 / 70)
    with pytest.raises(ValueError):
        fleet(100, overhead_ms=100.0)


def test_with_unlimited_servers_nothing_queues():
    arrivals = Shape("spikes", 5, spike_every_s=100, spike_length_s=10, spike_multiplier=20).arrivals(600, seed=5)
    params = FleetParams(service_ms=Distribution.measured(np.linspace(20, 200, 60).tolist(), "t"), workers=1000, instances=1)
    run = simulate_fleet(arrivals, params)
    assert np.all(run.wait_ms == 0) and np.all(run.status == OK)
    assert np.array_equal(run.latency_ms, run.busy_ms)


def test_requests_go_to_the_least_busy_instance():
    run = simulate_fleet(np.zeros(4), fleet(100, workers=1, queue=0, instances=4))
    assert np.all(run.status == OK) and summarise(run, "x").peak_concurrency == 4


def test_the_autoscaler_grows_with_load_and_shrinks_after_it():
    quiet, busy = Shape("steady", 2).arrivals(1800, seed=1), 1800 + Shape("steady", 60).arrivals(1800, seed=2)
    arrivals = np.concatenate([quiet, busy, 3600 + Shape("steady", 2).arrivals(3600, seed=3)])
    params = fleet(40, workers=1, queue=50, instances=1, autoscale=True, boot_s=60, target_utilisation=0.5)
    run = simulate_fleet(arrivals, params, end_s=7200)
    times, counts = run.instances
    assert counts.max() >= 4 and counts[-1] < counts.max()  # grew for the busy half hour, then gave instances back
    assert times[np.argmax(counts >= 2)] > 1800  # it grew only after the load came
    assert summarise(run, "x").requests == arrivals.size


# --- the fleet as a real instance, priced as AWS bills it ---------------------------------------------


@pytest.mark.parametrize("name,vcpus", [("c7a.medium", 1), ("c7i.large", 2), ("c7a.large", 2), ("c7i.xlarge", 4)])
def test_workers_per_instance_are_the_lanes_local_serve_runs_on_its_vcpus(name, vcpus):
    from lambda_onnx.resources import server_split

    instance = cost.instance_type(name)
    split = server_split(float(vcpus))
    assert instance.vcpus == vcpus and lanes_for(instance) == split.workers * split.lanes == vcpus
    assert fleet(100, instance=instance).workers == vcpus  # not 1, whatever the type
    assert fleet(100, instance=instance, workers=1).workers == 1  # unless given


def test_the_cpu_layout_carries_the_service_time_measured_here_to_the_type():
    # c7i: two hyperthreads per core; c7a: a core per vCPU. Here: one thread per core (lscpu), 100 ms of which 10 ms
    # outside the lane, every lane busy. On one SMT core two lanes share a core worth 1.1 cores: 2 / 1.1 x the lane part.
    assert cost.instance_type("c7i.large").threads_per_core == 2 and cost.instance_type("c7a.large").threads_per_core == 1
    assert lane_time_factor(1, 2, 1.1) == pytest.approx(2 / 1.1) and lane_time_factor(1, 1, 1.1) == 1.0
    assert lane_time_factor(2, 1, 1.25) == pytest.approx(1.25 / 2)  # measured on SMT siblings, carried to whole cores
    calibration = Calibration.of("m.onnx", 3008, fake_calibration().lambda_,
                                 ServerFigures(Distribution.constant(100.0), "t", 10.0, lanes=2, threads_per_core=1,
                                               worker_ms=90.0))
    c7i = calibration.fleet_params(instance=cost.instance_type("c7i.large"), smt_gain=1.1)
    c7a = calibration.fleet_params(instance=cost.instance_type("c7a.large"), smt_gain=1.1)
    assert c7i.service_ms.mean_ms == pytest.approx(10 + 90 * 2 / 1.1) and c7a.service_ms.mean_ms == pytest.approx(100)
    assert c7i.capacity_rps == pytest.approx(2 * 1000 / (90 * 2 / 1.1)) and c7a.capacity_rps == pytest.approx(2000 / 90)
    assert calibration.fleet_params().service_ms.mean_ms == 100  # no type: this machine as measured (the replay's)


def test_a_steady_rate_is_sized_by_hand_for_c7i_and_c7a():
    # 100 ms a request, all lanes busy, nothing outside the lane; Poisson 50 req/s for an hour: its busiest minute is
    # 50-55 req/s. c7a.large: 2 lanes x 10/s = 20/s, 10/s at 50 % busy -> 6 instances. c7i.large: the two lanes share a
    # core worth 1.1: 2 x 1000 / 181.8 = 11/s, 5.5/s at 50 % -> 10 instances.
    from local.measure.scenario.run import fleet_params, plan

    calibration = Calibration.of("m.onnx", 3008, fake_calibration().lambda_,
                                 ServerFigures(Distribution.constant(100.0), "t", 0.0, 2, 1, 100.0))
    sizes = {}
    for name in ("c7a.large", "c7i.large"):
        config = ScenarioConfig(traffic=Shape("steady", 50.0), duration_s=3600, instance_type=name, smt_gain=1.1)
        params, label = fleet_params(config, calibration, plan(config)[0])
        sizes[name] = params.instances
        assert f"x {name}, 2 lane(s) each" in label
    assert sizes == {"c7a.large": 6, "c7i.large": 10}


def test_the_load_balancer_bills_each_hours_largest_dimension():
    # 90,000 requests in an hour without a body: 25 new connections a second = 1 LCU (active: 1,500 a minute = 0.5)
    lcus = cost.alb_lcus(90_000, 1.0, request_bytes=0, response_bytes=0)
    assert lcus["new_connections"] == pytest.approx(1.0) and lcus["active_connections"] == pytest.approx(0.5)
    assert lcus["lcus"] == pytest.approx(1.0)
    # 1,000 requests of 1 MB answered with 1 MB: 2 GB processed = 2 LCUs; 12 rules: 2 beyond the free 10 per request
    assert cost.alb_lcus(1000, 1.0, request_bytes=1e6, response_bytes=1e6)["lcus"] == pytest.approx(2.0)
    assert cost.alb_lcus(3_600_000, 1.0, request_bytes=0, response_bytes=0, rules=12)["rule_evaluations"] == pytest.approx(2.0)
    bill = cost.alb_cost([90_000, 1000], request_bytes=1e6, response_bytes=1e6, last_hour=0.5)
    # hour 1: 180 GB = 180 LCUs; half an hour: 2 GB in 0.5 h = 4 LCUs for 0.5 h; 1.5 hours of the balancer
    assert bill["hours_usd"] == pytest.approx(1.5 * 0.0225)
    assert bill["lcus_usd"] == pytest.approx((180 + 4 * 0.5) * 0.008) and bill["dominant"] == "processed_bytes"


def test_fargate_and_the_load_balancer_priced_by_hand():
    assert cost.fargate_hourly(2, 4096) == pytest.approx(2 * 0.04048 + 4 * 0.004445)
    arrivals = Shape("steady", 5).arrivals(3600, seed=0)
    for platform, hourly in (("ec2", 0.08925), ("fargate", 2 * 0.04048 + 4 * 0.004445)):
        run = simulate_fleet(arrivals, fleet(50, instances=3, platform=platform), end_s=3600)
        lcus = arrivals.size * (fleet(50).request_bytes + fleet(50).response_bytes) / 1e9  # bytes dominate: > 5/25
        assert run.cost["instances"] == pytest.approx(3 * hourly)
        assert run.cost["load_balancer"] == pytest.approx(0.0225 + lcus * 0.008)
    assert "load_balancer" not in simulate_fleet(arrivals, fleet(50, load_balancer=False), end_s=3600).cost


def test_a_scenario_says_what_to_deploy_and_splits_the_servers_cost(tmp_path):
    from local.measure.scenario.deployment import FleetDeployment

    calibration = fake_calibration()
    config = ScenarioConfig(traffic=Shape("diurnal", 5.0, peak_to_trough=4.0), duration_s=6 * 3600, instance_type="c7a.large")
    result = run_scenario(config, calibration)
    deployment = FleetDeployment(**result.deployment)
    assert deployment.platform in ("ec2", "fargate") and deployment.platform == result.server_cost["platform"]
    assert deployment.instance_type == ("c7a.large" if deployment.platform == "ec2" else "fargate")
    assert (deployment.vcpus, deployment.memory_mib, deployment.lanes) == (2, 4096, 2)
    assert 1 <= deployment.min_instances <= deployment.max_instances and deployment.max_instances >= result.server.peak_instances
    assert (deployment.target_cpu_pct, deployment.drain_s, deployment.max_queue) == (50.0, 30, 16)
    assert deployment.model == "efficientnet_lite0.onnx" and deployment.boot_s == config.boot_s
    money = result.server_cost
    assert money["instances"] + money["load_balancer"] == pytest.approx(money["total"], abs=0.01)
    assert money["total"] == result.server.cost_per_month_usd
    assert money["total"] == pytest.approx(min(money["ec2_per_month_usd"], money["fargate_per_month_usd"]), abs=0.01)
    data = result.to_dict()
    assert {"deployment", "lambda_deployment", "server_cost", "lambda", "server", "verdict"} <= set(data)
    assert data["lambda_deployment"]["memory_mb"] == 3008 and data["lambda_deployment"]["precision"] == "fp32"
    from local.report.scenario import deployment_markdown, write_outputs

    assert "What to deploy" in deployment_markdown(result) and "Load Balancer" in deployment_markdown(result)
    paths = write_outputs(result, tmp_path)
    assert json.loads(paths["deployment"].read_text()) == result.deployment


# --- scenarios, month scale, results -----------------------------------------------------------------


def test_a_month_of_a_daily_shape_is_one_representative_day():
    config = ScenarioConfig(traffic=Shape("diurnal", 1), duration_s=30 * DAY_S)
    (segment,), how = plan(config)
    assert segment.weight == 30 and segment.arrivals.min() < 0 and "representative" in how  # a warm-up hour first
    result = run_scenario(config, fake_calibration())
    assert result.lambda_.requests == pytest.approx(30 * DAY_S, rel=0.03)  # 1 req/s for 30 days
    per_month = result.lambda_.cost_usd * cost.HOURS_PER_MONTH / (30 * 24)
    assert result.lambda_.cost_per_month_usd == pytest.approx(per_month, abs=1e-3)


def test_a_long_file_is_simulated_through_representative_days_weighted_to_its_volume():
    days = [Shape("steady", rate).arrivals(DAY_S, seed=i) + i * DAY_S for i, rate in enumerate([0.2, 0.5, 0.1, 1.0, 0.3])]
    from local.measure.scenario.traffic import Arrivals

    times = np.concatenate(days)
    traffic = Arrivals(times - times[0], "five-days.csv", "csv", times.size, 0)
    config = ScenarioConfig(traffic=traffic, representative_days=3)
    segments, how = plan(config)
    assert len(segments) == 3 and "representative" in how
    counted = sum(s.weight * (s.arrivals >= 0).sum() for s in segments)
    assert counted == pytest.approx(times.size)  # every day's requests count
    per_day = np.bincount(np.floor((times - times[0]) / DAY_S).astype(int))
    assert max((s.arrivals >= 0).sum() for s in segments) == per_day.max()  # the peak day is simulated
    result = run_scenario(config, fake_calibration())
    assert result.lambda_.requests == pytest.approx(times.size, rel=0.001)


def test_results_carry_the_issues_key_names_and_a_verdict():
    config = ScenarioConfig(traffic=Shape("sparse", every_s=60), duration_s=6 * 3600, idle_timeout_s=600)
    result = run_scenario(config, fake_calibration())
    data = result.to_dict()
    for side in ("lambda", "server"):
        for key in ("p50_ms", "p95_ms", "p99_ms", "requests", "cold_starts", "throttled", "rejected", "peak_concurrency",
                    "peak_instances", "cost_usd", "cost_per_month_usd"):
            assert key in data[side]
    assert data["lambda"]["requests"] == 360 and data["lambda"]["cold_starts"] == 1
    assert "Lambda is" in result.verdict and "cheaper" in result.verdict
    assert "sources" in data["calibration"] and data["calibration"]["assumptions"]["idle_timeout_s"] == 600
    series = time_series(simulate_lambda(np.arange(0, 100.0), lam()), buckets=10)
    assert sum(a * series.bucket_s for a in series.arrivals_per_s) == pytest.approx(100, rel=1e-5)


def test_verdict_names_what_the_cheaper_side_pays():
    from local.measure.scenario.results import SideResult

    def side(name, usd, p99, cold=0, refused=0):
        return SideResult(name, name, 1000, 1000 - refused, cold, refused, 0, 0, 50, 60, p99, 50, p99, 1, 1, usd, usd,
                          cold_start_pct=cold / 10)

    assert "pays with p99" in verdict(side("lambda", 1, 900, cold=30), side("server", 65, 80))
    assert "comparable tail" in verdict(side("lambda", 1, 85), side("server", 65, 80))
    assert verdict(side("lambda", 500, 85), side("server", 65, 80)).startswith("The server fleet is")


def test_distributions():
    assert Distribution.constant(5).draw(np.random.default_rng(0), 3).tolist() == [5, 5, 5]
    few = Distribution.measured([10, 11, 12, 30], "few")
    assert not few.samples and few.median_ms == pytest.approx(11.5) and "lognormal" in few.source
    many = Distribution.measured(list(range(100)), "many")
    assert len(many.samples) == 100 and set(many.draw(np.random.default_rng(0), 50)) <= set(range(100))
    with pytest.raises(ValueError):
        Distribution.measured([], "none")


def test_report_lines_of_a_real_function_calibrate_lambda(tmp_path):
    log = tmp_path / "function.log"
    lines = ["START RequestId: 1", "REPORT RequestId: 1\tDuration: 212.50 ms\tBilled Duration: 213 ms\tMemory Size: 2048 MB"
             "\tMax Memory Used: 300 MB\tInit Duration: 1800.00 ms"]
    lines += [f"REPORT RequestId: {i}\tDuration: {50 + i % 7}.00 ms\tBilled Duration: 57 ms\tMemory Size: 2048 MB\t"
              "Max Memory Used: 301 MB" for i in range(2, 80)]
    log.write_text("\n".join(lines))
    figures = from_report_log(log)
    assert figures.memory_mb == 2048 and figures.init_ms == 1800 and figures.cold_ms.p50_ms == pytest.approx(2012.5)
    assert 50 <= figures.warm_ms.p50_ms <= 56 and "REPORT lines" in figures.warm_ms.source


# --- the command line ------------------------------------------------------------------------------


@pytest.fixture
def model(tmp_path):
    """A model path for the calibration to match: nothing loads it when the figures are saved ones."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not loaded")
    return path


@pytest.fixture
def saved_calibration(tmp_path, model):
    return save_cache(fake_calibration(str(model), 3008), tmp_path / "calibration.json")


@pytest.mark.slow
def test_cli_prints_json_with_the_issues_keys(saved_calibration, model, tmp_path):
    out = run_module("local", "scenario", "spikes", "--rate", "0.5", "--duration", "2h", "--model", str(model),
                     "--calibration", str(saved_calibration), "--calibrate", "never", "--json", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["lambda"]["requests"] == data["server"]["requests"] > 0
    assert {"p50_ms", "p99_ms", "cold_starts", "throttled", "rejected", "cost_per_month_usd"} <= set(data["lambda"])
    assert "test warm" in out.stderr and "measuring" not in out.stderr  # the saved figures, said so; nothing measured
    assert (tmp_path / "scenario-spikes.png").stat().st_size > 0


@pytest.mark.slow
def test_cli_simulates_a_users_arrivals_file_through_both_sides(saved_calibration, model, tmp_path):
    log = tmp_path / "access.log"
    log.write_text("\n".join(f'{{"requestTimeEpoch": {1700000000000 + 1000 * i * i}}}' for i in range(40)))
    out = run_module("local", "scenario", "--arrivals", str(log), "--model", str(model), "--calibration",
                     str(saved_calibration), "--calibrate", "never", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "Verdict" in out.stdout and "40" in out.stdout


@pytest.mark.slow
def test_cli_says_what_is_missing():
    out = run_module("local", "scenario")
    assert out.returncode == 2 and "give a traffic shape" in out.stderr
    out = run_module("local", "scenario", "steady", "--duration", "soon")
    assert out.returncode == 2 and "not a duration" in out.stderr


@pytest.mark.slow
def test_cli_compare_writes_the_table_and_the_chart(saved_calibration, model, tmp_path):
    out = run_module("local", "scenario", "--compare", "--model", str(model), "--calibration", str(saved_calibration),
                     "--calibrate", "never", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    table = (tmp_path / "compare.md").read_text()
    for shape in ("sparse", "spikes", "diurnal", "steady"):
        assert f"**{shape}**" in table
    assert (tmp_path / "compare.png").stat().st_size > 0


# --- the app's view --------------------------------------------------------------------------------


@pytest.mark.slow  # imports Gradio
def test_the_views_plain_function_and_its_tab(saved_calibration, model):
    from types import SimpleNamespace

    import gradio as gr

    from gui.views.scenario import FILE, build_tab, run_view

    view = run_view(model, shape="diurnal", rate=1.0, duration="2h", calibration="never", saved_calibration=saved_calibration)
    assert "Verdict" in view.summary and view.result["lambda"]["requests"] > 0 and len(view.files) == 3
    assert list(view.table.columns) == ["", "Lambda", "server fleet"]
    with pytest.raises(ValueError, match="upload an arrivals file"):
        run_view(model, shape=FILE, calibration="never", saved_calibration=saved_calibration)
    with gr.Blocks() as demo:
        with gr.Tabs():
            build_tab(SimpleNamespace(model_path=model))
    names = {dependency.get("api_name") for dependency in demo.config["dependencies"]}
    assert {"scenario", "scenario_compare"} <= names
    # fields whose empty value means "the default" show empty, not 0
    labels = {c["props"].get("label"): c["props"] for c in demo.config["components"] if "label" in c.get("props", {})}
    for label in ("Lanes per instance (empty: one per vCPU)", "Server instances (empty: sized for the peak)",
                  "Reserved concurrency (empty: account's 1,000)"):
        assert labels[label].get("value") is None, label
    assert "What to deploy" in view.deployment and any(f.endswith("deployment.json") for f in view.deploy_files)


# --- the server's figures with every lane busy, measured ------------------------------------------------


@pytest.mark.slow
def test_the_servers_service_time_is_measured_with_every_lane_busy(lite0):
    from lambda_onnx.resources import server_split
    from local.measure.core.images import default_image
    from local.measure.scenario.calibrate import MEASURE_CHOICES, measure_server, threads_per_core

    assert "auto" in MEASURE_CHOICES
    figures = measure_server(lite0, default_image(), requests=50, loaded_seconds=2.0)
    split = server_split()
    assert figures.all_lanes_busy and figures.lanes == split.workers * split.lanes
    assert figures.threads_per_core == threads_per_core() >= 1 and figures.worker_ms and figures.worker_ms > 0
    assert f"all {figures.lanes} busy" in figures.source and "connections" in figures.source
    # the one-at-a-time distribution's lane part is scaled to the lane time measured under load
    assert figures.service_ms.mean_ms - figures.overhead_ms == pytest.approx(figures.worker_ms, rel=0.02)
    calibration = Calibration.of(lite0, 3008, fake_calibration().lambda_, figures)
    assert "lanes busy" in calibration.sources["server_service_ms"]
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))).server == figures
