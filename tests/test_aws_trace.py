"""X-Ray and CloudWatch Logs look-ups for one exact request, against moto's AWS."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from moto import mock_aws

from local.clients.aws_trace import fetch_report, fetch_trace, parse_report, parse_trace_header

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("xray", region_name=REGION), boto3.client("logs", region_name=REGION)


def put_lambda_trace(xray, trace_id: str, start: float, cold: bool) -> None:
    """The two segments Lambda emits for a traced invocation."""
    function_subsegments = [{"id": "a1", "name": "Invocation", "start_time": start + 0.40, "end_time": start + 0.45},
                            {"id": "a2", "name": "Overhead", "start_time": start + 0.45, "end_time": start + 0.452}]
    if cold:
        function_subsegments.insert(0, {"id": "a0", "name": "Initialization", "start_time": start + 0.01, "end_time": start + 0.39})
    service = {"id": "1111111111111111", "trace_id": trace_id, "name": "classify", "origin": "AWS::Lambda",
               "start_time": start, "end_time": start + 0.46, "http": {"response": {"status": 200}}}
    function = {"id": "2222222222222222", "trace_id": trace_id, "name": "classify", "origin": "AWS::Lambda::Function",
                "parent_id": "1111111111111111", "start_time": start + 0.01, "end_time": start + 0.452,
                "subsegments": function_subsegments}
    xray.put_trace_segments(TraceSegmentDocuments=[json.dumps(service), json.dumps(function)])


def test_trace_header_parts_in_any_order():
    header = parse_trace_header("Sampled=1;Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8")
    assert (header.root, header.parent, header.sampled) == ("1-67891233-abcdef012345678912345678", "53995c3f42cd8ad8", True)
    assert parse_trace_header("Root=1-1-1;Sampled=0").sampled is False
    assert parse_trace_header(None).root is None


def test_fetches_the_exact_trace_by_id_among_others(aws):
    xray, _ = aws
    now = time.time()
    mine, other = "1-5f84c7a1-0123456789abcdef01234567", "1-5f84c7a2-fedcba9876543210fedcba98"
    put_lambda_trace(xray, other, now, cold=False)
    put_lambda_trace(xray, mine, now, cold=True)
    timing = fetch_trace(xray, f"Root={mine};Parent=1111111111111111;Sampled=1", attempts=1)
    assert timing.found and timing.trace_id == mine and timing.status == 200
    assert timing.initialization_ms == pytest.approx(380, abs=1)
    assert timing.invocation_ms == pytest.approx(50, abs=1) and timing.overhead_ms == pytest.approx(2, abs=1)
    warm = fetch_trace(xray, f"Root={other};Sampled=1", attempts=1)
    assert warm.found and warm.initialization_ms is None


def test_not_sampled_is_said_without_waiting(aws):
    xray, _ = aws
    waits = []
    timing = fetch_trace(xray, "Root=1-5f84c7a1-0123456789abcdef01234567;Sampled=0", sleep=waits.append)
    assert not timing.found and timing.sampled is False and "not sampled" in timing.message and waits == []


def test_missing_trace_retries_a_bounded_number_of_times(aws):
    xray, _ = aws
    waits = []
    timing = fetch_trace(xray, "Root=1-5f84c7a1-0123456789abcdef01234567;Sampled=1", attempts=3, delay_s=1, sleep=waits.append)
    assert not timing.found and timing.attempts == 3 and waits == [1, 1.5]
    assert "gave up after 3 attempts" in timing.message


@pytest.mark.parametrize("line", [
    "REPORT RequestId: 3f1c\tDuration: 45.12 ms\tBilled Duration: 46 ms\tMemory Size: 3008 MB\tMax Memory Used: 180 MB\t"
    "Init Duration: 812.50 ms\t",
    "REPORT RequestId: 3f1c\tInit Duration: 812.50 ms\tMax Memory Used: 180 MB\tMemory Size: 3008 MB\tBilled Duration: 46 ms\t"
    "Duration: 45.12 ms",
])
def test_report_line_parsed_whatever_the_field_order(line):
    report = parse_report(line)
    assert report.request_id == "3f1c" and report.duration_ms == 45.12 and report.billed_duration_ms == 46
    assert (report.memory_size_mb, report.max_memory_used_mb, report.init_duration_ms) == (3008, 180, 812.5)


def test_fetches_the_report_line_of_the_exact_request(aws):
    _, logs = aws
    group = "/aws/lambda/classify"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    now = int(time.time() * 1000)
    lines = ["START RequestId: req-a Version: $LATEST",
             "REPORT RequestId: req-a\tDuration: 10.00 ms\tBilled Duration: 10 ms\tMemory Size: 3008 MB\tMax Memory Used: 170 MB",
             "REPORT RequestId: req-b\tDuration: 20.00 ms\tBilled Duration: 20 ms\tMemory Size: 3008 MB\tMax Memory Used: 171 MB\t"
             "Init Duration: 900.00 ms"]
    logs.put_log_events(logGroupName=group, logStreamName="s",
                        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)])
    report = fetch_report(logs, "classify", "req-b", start_time_ms=now - 1000, attempts=1)
    assert report is not None and report.request_id == "req-b" and report.init_duration_ms == 900
    assert fetch_report(logs, "classify", "req-zzz", attempts=2, sleep=lambda s: None) is None
