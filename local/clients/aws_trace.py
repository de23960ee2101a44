"""The AWS view: X-Ray timings and the CloudWatch REPORT line of one exact request.

Matched by the trace id and request id the handler returned, never "the most recent trace"
(which is racy when several requests run). Traces and logs arrive late, so both look-ups retry a
bounded number of times with backoff; a request the trace header marks as not sampled is said to
be so instead of being waited for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from local.wire import Report, parse_report

# Lambda's function segment names its phases like this; newer traces use the short names.
# https://docs.aws.amazon.com/lambda/latest/dg/services-xray.html
_PHASES = {"Initialization": "initialization_ms", "Init": "initialization_ms", "Invocation": "invocation_ms",
           "Invoke": "invocation_ms", "Overhead": "overhead_ms", "Restore": "restore_ms"}


@dataclass(frozen=True)
class TraceHeader:
    root: str | None
    parent: str | None
    sampled: bool | None  # None: the header does not say


def parse_trace_header(value: str | None) -> TraceHeader:
    """``Root=1-5f84c7a1-...;Parent=...;Sampled=1`` -> its parts (any order, any missing)."""
    parts: dict[str, str] = {}
    for item in (value or "").split(";"):
        key, sep, val = item.strip().partition("=")
        if sep:
            parts[key.strip().lower()] = val.strip()
    sampled = parts.get("sampled")
    return TraceHeader(parts.get("root"), parts.get("parent"), None if sampled in (None, "?") else sampled == "1")


@dataclass
class TraceTiming:
    """X-Ray's view of one invocation."""

    trace_id: str | None
    sampled: bool | None
    found: bool
    message: str
    initialization_ms: float | None = None
    invocation_ms: float | None = None
    overhead_ms: float | None = None
    restore_ms: float | None = None
    service_ms: float | None = None  # AWS::Lambda segment: time in the Lambda service
    function_ms: float | None = None  # AWS::Lambda::Function segment
    status: int | None = None
    error: bool = False
    fault: bool = False
    throttle: bool = False
    attempts: int = 0


def _ms(doc: dict[str, Any]) -> float | None:
    if "start_time" in doc and "end_time" in doc:
        return round((float(doc["end_time"]) - float(doc["start_time"])) * 1000.0, 3)
    return None


def parse_trace(trace: dict[str, Any], header: TraceHeader) -> TraceTiming:
    """A ``BatchGetTraces`` trace -> the phases of the Lambda function segment."""
    timing = TraceTiming(trace.get("Id"), header.sampled, True, "found")
    documents = [json.loads(s["Document"]) for s in trace.get("Segments", [])]
    for doc in documents:
        origin = doc.get("origin", "")
        if origin == "AWS::Lambda":
            timing.service_ms = _ms(doc)
            timing.status = (doc.get("http", {}).get("response", {}) or {}).get("status")
            timing.error, timing.fault, timing.throttle = bool(doc.get("error")), bool(doc.get("fault")), bool(doc.get("throttle"))
        elif origin == "AWS::Lambda::Function":
            timing.function_ms = _ms(doc)
            for sub in doc.get("subsegments", []):
                attribute = _PHASES.get(sub.get("name", ""))
                if attribute:
                    setattr(timing, attribute, _ms(sub))
    if timing.invocation_ms is None:
        timing.found, timing.message = False, "trace found but its function segment has not arrived yet"
    return timing


def fetch_trace(xray: Any, trace_header: str | None, *, attempts: int = 6, delay_s: float = 2.0,
                sleep: Callable[[float], None] = time.sleep) -> TraceTiming:
    """Fetch the trace of one request by its id, retrying (with backoff) while X-Ray catches up."""
    header = parse_trace_header(trace_header)
    if not header.root:
        return TraceTiming(None, header.sampled, False, "no trace id: is active tracing on for the function?")
    if header.sampled is False:
        return TraceTiming(header.root, False, False, "not sampled: the trace header says Sampled=0, so X-Ray kept no trace")
    timing = TraceTiming(header.root, header.sampled, False, "not found")
    for attempt in range(1, attempts + 1):
        traces = xray.batch_get_traces(TraceIds=[header.root]).get("Traces", [])
        if traces:
            timing = parse_trace(traces[0], header)
        timing.attempts = attempt
        if timing.found:
            return timing
        if attempt < attempts:
            sleep(delay_s * (1.5 ** (attempt - 1)))
    timing.message = f"{timing.message}; gave up after {attempts} attempts (X-Ray can take half a minute)"
    return timing


def fetch_report(logs: Any, function_name: str, request_id: str, *, start_time_ms: int | None = None,
                 attempts: int = 6, delay_s: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> Report | None:
    """The REPORT line of ``request_id`` from the function's log group, retrying while logs arrive."""
    kwargs: dict[str, Any] = {"logGroupName": f"/aws/lambda/{function_name}",
                              "filterPattern": f'"REPORT RequestId: {request_id}"'}
    if start_time_ms is not None:
        kwargs["startTime"] = start_time_ms
    for attempt in range(1, attempts + 1):
        for page in logs.get_paginator("filter_log_events").paginate(**kwargs):
            for event in page.get("events", []):
                report = parse_report(event.get("message", ""))
                if report and report.request_id == request_id:
                    return report
        if attempt < attempts:
            sleep(delay_s * (1.5 ** (attempt - 1)))
    return None


def lookup_request(*, region: str | None, function_name: str | None, request_id: str | None, trace_id: str | None,
                   attempts: int = 6, endpoint_url: str | None = None) -> tuple[TraceTiming, Report | None]:
    """X-Ray timings and the REPORT line of one request, through boto3 with bounded timeouts."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 3, "mode": "standard"})
    session = boto3.session.Session(region_name=region)
    xray = session.client("xray", config=config, endpoint_url=endpoint_url)
    timing = fetch_trace(xray, trace_id, attempts=attempts)
    report = None
    if function_name and request_id:
        logs = session.client("logs", config=config, endpoint_url=endpoint_url)
        start = int((time.time() - 3600) * 1000)
        report = fetch_report(logs, function_name, request_id, start_time_ms=start, attempts=attempts)
    return timing, report
