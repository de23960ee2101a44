"""The emulator's Invoke API answered as Lambda's is (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html),
read by boto3 and the AWS CLI: Event (202, run in the background), DryRun (204, nothing runs), LogType
Tail (the invocation's last 4 KB of log), the function's name, ARN, partial ARN and $LATEST, Lambda's
404, function errors flagged Unhandled, throttles with their Reason, the bounded async queue.

The fast tests put the front over a stand-in for the environments; the slow ones over the real
emulator (a fixed pool and an elastic one, the real-weights EfficientNet-Lite0 or a small probe
handler). No timing assertions: waits are bounded waits for a state.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from lambda_onnx.errors import BackendError, BackendTimeoutError, ThrottledError
from lambda_onnx.photos import by_name
from local.clients.invoke import LambdaClient, LambdaInvokeBackend
from local.lambda_env import async_queue
from local.lambda_env.elastic import THROTTLE_REASON, ElasticPool
from local.lambda_env.front import (
    ASYNC_PAYLOAD_BYTES,
    EMULATOR_ACCOUNT_ID,
    LOG_TAIL_BYTES,
    ApiError,
    FunctionIdentity,
    InvokeFront,
    lambda_payload,
    log_result,
)
from local.lambda_env.pool import EmulatorPool
from local.lambda_env.rie import Invocation
from local.wire import invoke_answer, json_request, lambda_response
from tests.helpers.process import ROOT

CHELSEA = by_name("chelsea")
FUNCTION = FunctionIdentity("resnet-serverless", "us-east-1")
ARN = f"arn:aws:lambda:us-east-1:{EMULATOR_ACCOUNT_ID}:function:resnet-serverless"
AWS_CLI = ROOT / ".venv" / "awscli" / "bin" / "aws"  # its own virtualenv (.ci/install): it pins botocore exactly
WAIT_S = 60.0


# --- names: what reaches the one function, and Lambda's 404 for the rest --------------------------------


@pytest.mark.parametrize(("name", "qualifier"), [
    ("resnet-serverless", None), ("function", None), ("resnet-serverless:$LATEST", None), ("function:$LATEST", None),
    ("resnet-serverless", "$LATEST"), (ARN, None), (f"{ARN}:$LATEST", None), (ARN, "$LATEST"),
    (f"{EMULATOR_ACCOUNT_ID}:function:resnet-serverless", None), (f"{EMULATOR_ACCOUNT_ID}:function:resnet-serverless:$LATEST", None),
])
def test_the_name_the_arn_the_partial_arn_and_latest_reach_the_function(name, qualifier):
    FUNCTION.resolve(name, qualifier)  # no ApiError


@pytest.mark.parametrize(("name", "qualifier", "arn"), [
    ("other", None, f"arn:aws:lambda:us-east-1:{EMULATOR_ACCOUNT_ID}:function:other"),
    ("resnet-serverless:1", None, f"{ARN}:1"),  # a version that does not exist
    ("resnet-serverless", "prod", f"{ARN}:prod"),  # nor does an alias
    (f"{ARN}:live", None, f"{ARN}:live"),
    ("arn:aws:lambda:us-east-1:123456789012:function:resnet-serverless", None,
     "arn:aws:lambda:us-east-1:123456789012:function:resnet-serverless"),  # another account's
    (f"arn:aws:lambda:eu-west-1:{EMULATOR_ACCOUNT_ID}:function:resnet-serverless", None,
     f"arn:aws:lambda:eu-west-1:{EMULATOR_ACCOUNT_ID}:function:resnet-serverless"),  # another region's
])
def test_anything_else_is_lambdas_resource_not_found(name, qualifier, arn):
    with pytest.raises(ApiError) as raised:
        FUNCTION.resolve(name, qualifier)
    error = raised.value
    assert (error.status, error.error_type) == (404, "ResourceNotFoundException")
    assert error.body() == {"Type": "User", "Message": f"Function not found: {arn}"}


def test_a_qualifier_that_contradicts_the_name_and_a_malformed_name_are_400():
    with pytest.raises(ApiError) as mismatch:
        FUNCTION.resolve("resnet-serverless:$LATEST", "1")
    assert (mismatch.value.status, mismatch.value.error_type) == (400, "InvalidParameterValueException")
    with pytest.raises(ApiError) as malformed:
        FUNCTION.resolve("no spaces allowed")
    assert (malformed.value.status, malformed.value.error_type) == (400, "ValidationException")
    assert "functionName" in malformed.value.message


# --- what the RIE answers, as Lambda answers it ----------------------------------------------------------


def invocation(payload: bytes, status: int = 200, request_id: str = "r-1", log: tuple[str, ...] = ()) -> Invocation:
    return Invocation("env-0", status, payload, 1.0, request_id=request_id, log=log)


def error_object(kind: str, message: str, request_id: str | None = "r-1") -> bytes:
    return json.dumps({"errorMessage": message, "errorType": kind, "requestId": request_id, "stackTrace": []}).encode()


@pytest.mark.parametrize(("case", "answer"), [
    ("the handler raised", invocation(error_object("ValueError", "boom"))),
    ("the runtime could not unmarshal the event", invocation(error_object("Runtime.UnmarshalError", "Unable to unmarshal input"))),
    ("the runtime crashed (the RIE says 502)", invocation(error_object("Runtime.ExitError", "exit status 3", None), status=502)),
])
def test_function_errors_are_200_with_the_error_object_and_unhandled(case, answer):
    payload, flag = lambda_payload(answer)
    assert flag == "Unhandled" and payload == answer.payload, case


def test_a_timeout_is_lambdas_sandbox_timedout_error_object():
    payload, flag = lambda_payload(invocation(b"Task timed out after 1.00 seconds", request_id="r-9"))
    assert flag == "Unhandled"
    assert json.loads(payload) == {"errorType": "Sandbox.Timedout",
                                   "errorMessage": "RequestId: r-9 Error: Task timed out after 1.00 seconds"}
    with pytest.raises(BackendTimeoutError):  # and every client of this project reads it as a timeout
        lambda_response(payload, "front")


def test_a_value_that_looks_like_an_error_is_not_a_function_error():
    returned = json.dumps({"errorType": "Mine", "errorMessage": "a value the handler returned"}).encode()
    assert lambda_payload(invocation(returned)) == (returned, None)
    proxy = json.dumps({"statusCode": 400, "body": "{}"}).encode()
    assert lambda_payload(invocation(proxy)) == (proxy, None)


def test_log_result_is_the_last_4_kb_base64_encoded_cut_at_a_character():
    lines = ("START RequestId: r-1 Version: $LATEST", *(f"ligne {i}: café ☕" for i in range(400)), "END RequestId: r-1",
             "REPORT RequestId: r-1\tDuration: 1.00 ms")
    tail = base64.b64decode(log_result(lines))
    assert len(tail) <= LOG_TAIL_BYTES and len(tail) > LOG_TAIL_BYTES - 4
    text = tail.decode("utf-8")  # never a split character
    assert text.endswith("END RequestId: r-1\nREPORT RequestId: r-1\tDuration: 1.00 ms\n") and "START" not in text
    short = ("START RequestId: r-2 Version: $LATEST", "END RequestId: r-2")
    assert base64.b64decode(log_result(short)).decode() == "START RequestId: r-2 Version: $LATEST\nEND RequestId: r-2\n"


# --- the front over stand-in environments, read by boto3 -----------------------------------------------


class StandIn:
    """Environments that answer at once: each invoke echoes its event and logs four lines; ``gate``
    holds invokes until set, ``throttles`` throttles the next N invokes."""

    function_name, region = "resnet-serverless", "us-east-1"

    def __init__(self, concurrency: int = 1) -> None:
        self.concurrency = concurrency
        self.calls: list[tuple[bytes, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.throttles, self.throttle_code = 0, THROTTLE_REASON
        self._lock = threading.Lock()

    def invoke(self, payload: bytes, *, headers: Mapping[str, str] | None = None) -> Invocation:
        request_id = (headers or {})["X-Amzn-RequestId"]
        with self._lock:
            self.calls.append((payload, request_id))
            throttled, self.throttles = self.throttles > 0, max(0, self.throttles - 1)
        if throttled:
            raise ThrottledError("Rate Exceeded: all 1 execution environments are busy", status=429, code=self.throttle_code)
        assert self.gate.wait(WAIT_S)
        log = (f"START RequestId: {request_id} Version: $LATEST", "the function's own line", f"END RequestId: {request_id}",
               f"REPORT RequestId: {request_id}\tDuration: 1.00 ms\tBilled Duration: 1 ms\tMemory Size: 3008 MB")
        return invocation(json.dumps({"echo": json.loads(payload)}).encode(), request_id=request_id, log=log)


@contextlib.contextmanager
def front_over(environments, **kwargs) -> Iterator[tuple[InvokeFront, object]]:
    """A started front and a boto3 Lambda client pointed at it (fake credentials, no retries)."""
    with InvokeFront(environments, **kwargs) as front:
        client = boto3.client("lambda", region_name="us-east-1", endpoint_url=front.url,
                              config=Config(retries={"total_max_attempts": 1}, read_timeout=WAIT_S))
        try:
            yield front, client
        finally:
            client.close()


def error_of(raised: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, dict]:
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response


def test_request_response_returns_the_payload_the_version_and_with_tail_the_log(fake_aws):
    environments = StandIn()
    with front_over(environments) as (front, client):
        plain = client.invoke(FunctionName=ARN, Payload=b'{"a": 1}')
        assert plain["StatusCode"] == 200 and json.loads(plain["Payload"].read()) == {"echo": {"a": 1}}
        assert plain["ExecutedVersion"] == "$LATEST" and "LogResult" not in plain and "FunctionError" not in plain
        tailed = client.invoke(FunctionName="resnet-serverless", Payload=b"{}", LogType="Tail")
        request_id = tailed["ResponseMetadata"]["RequestId"]
        log = base64.b64decode(tailed["LogResult"]).decode()
        assert log.splitlines() == [f"START RequestId: {request_id} Version: $LATEST", "the function's own line",
                                    f"END RequestId: {request_id}", f"REPORT RequestId: {request_id}\tDuration: 1.00 ms\t"
                                    "Billed Duration: 1 ms\tMemory Size: 3008 MB"]
        client.invoke(FunctionName="function")  # no payload: the function gets an empty object
    assert environments.calls[-1][0] == b"{}"


def test_event_answers_202_at_once_and_runs_in_the_background(fake_aws):
    environments = StandIn()
    environments.gate.clear()  # the function cannot finish: the caller must not wait for it
    with front_over(environments) as (front, client):
        answer = client.invoke(FunctionName=ARN, InvocationType="Event", Payload=b'{"n": 1}', LogType="Tail")
        assert answer["StatusCode"] == 202 and answer["Payload"].read() == b""
        assert "LogResult" not in answer and "FunctionError" not in answer  # Tail is for synchronous invokes only
        request_id = answer["ResponseMetadata"]["RequestId"]
        environments.gate.set()
        assert front.events.wait_idle(WAIT_S)
    assert environments.calls == [(b'{"n": 1}', request_id)]  # run once, under the id the caller was given
    assert (front.events.accepted, front.events.succeeded) == (1, 1)


def test_dry_run_answers_204_runs_nothing_and_still_checks_the_function(fake_aws):
    environments = StandIn()
    with front_over(environments) as (front, client):
        answer = client.invoke(FunctionName=ARN, InvocationType="DryRun", Payload=b'{"n": 1}')
        assert answer["StatusCode"] == 204 and answer["Payload"].read() == b""
        with pytest.raises(ClientError) as missing:
            client.invoke(FunctionName="other", InvocationType="DryRun")
        status, code, response = error_of(missing)
        assert (status, code) == (404, "ResourceNotFoundException") and response["Type"] == "User"
        assert response["Message"] == f"Function not found: arn:aws:lambda:us-east-1:{EMULATOR_ACCOUNT_ID}:function:other"
        assert front.events.accepted == 0
    assert environments.calls == []


def test_lambdas_refusals_reach_boto3_with_their_types(fake_aws):
    with front_over(StandIn()) as (front, client):
        with pytest.raises(ClientError) as not_json:
            client.invoke(FunctionName="function", Payload=b"not json")
        status, code, response = error_of(not_json)
        assert (status, code, response["Type"]) == (400, "InvalidRequestContentException", "User")
        assert "Could not parse request body into json" in response["message"]
        with pytest.raises(ClientError) as version:
            client.invoke(FunctionName="resnet-serverless", Qualifier="7", Payload=b"{}")
        assert error_of(version)[:2] == (404, "ResourceNotFoundException")
        with pytest.raises(ClientError) as too_large:  # 1 MB for asynchronous invokes, 6 MB for synchronous ones
            client.invoke(FunctionName="function", InvocationType="Event", Payload=json.dumps("x" * ASYNC_PAYLOAD_BYTES).encode())
        assert error_of(too_large)[:2] == (413, "RequestTooLargeException")
        assert client.invoke(FunctionName="function", Payload=json.dumps("x" * ASYNC_PAYLOAD_BYTES).encode())["StatusCode"] == 200
        for header, value in (("X-Amz-Invocation-Type", "Later"), ("X-Amz-Log-Type", "All")):
            status, body = raw_post(front.url, b"{}", {header: value})
            assert status == 400 and json.loads(body)["message"].startswith("1 validation error"), (header, body)


def raw_post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """POST to the invoke URL with headers boto3 would never send."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", "/2015-03-31/functions/function/invocations", body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(("code", "reason"), [(THROTTLE_REASON, THROTTLE_REASON), ("throttled", THROTTLE_REASON),
                                               ("ConcurrentInvocationLimitExceeded", "ConcurrentInvocationLimitExceeded")])
def test_a_throttle_is_429_too_many_requests_with_its_reason(fake_aws, code, reason):
    environments = StandIn()
    environments.throttles, environments.throttle_code = 1, code
    with front_over(environments) as (front, client):
        with pytest.raises(ClientError) as throttled:
            client.invoke(FunctionName=ARN, Payload=b"{}")
        status, error_code, response = error_of(throttled)
        assert (status, error_code, response["Reason"], response["Type"]) == (429, "TooManyRequestsException", reason, "User")
        assert client.invoke(FunctionName=ARN, Payload=b"{}")["StatusCode"] == 200  # the next one is served


def test_async_throttles_are_retried_in_the_background_never_reported(fake_aws, monkeypatch):
    monkeypatch.setattr(async_queue, "FIRST_RETRY_DELAY_S", 0.05)
    environments = StandIn()
    environments.throttles = 2
    with front_over(environments) as (front, client):
        assert client.invoke(FunctionName=ARN, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
        assert front.events.wait_idle(WAIT_S)
    assert (front.events.retried, front.events.succeeded, len(environments.calls)) == (2, 1, 3)


def test_the_async_queue_is_bounded_and_a_full_queue_throttles(fake_aws):
    environments = StandIn(concurrency=1)
    environments.gate.clear()  # the one worker holds the first event; two more fill the queue
    with front_over(environments, async_queue=2) as (front, client):
        answers = [client.invoke(FunctionName=ARN, InvocationType="Event", Payload=b"{}")["StatusCode"] for _ in range(3)]
        assert answers == [202, 202, 202] and front.events.queued == 2
        with pytest.raises(ClientError) as full:
            client.invoke(FunctionName=ARN, InvocationType="Event", Payload=b"{}")
        status, code, response = error_of(full)
        assert (status, code, response["Reason"]) == (429, "TooManyRequestsException", async_queue.QUEUE_FULL_REASON)
        assert client.invoke(FunctionName=ARN, InvocationType="DryRun")["StatusCode"] == 204  # the front still answers
        environments.gate.set()
        assert front.events.wait_idle(WAIT_S)
    assert (front.events.accepted, front.events.refused, front.events.succeeded) == (3, 1, 3)


def test_at_shutdown_queued_events_are_dropped_and_counted(fake_aws):
    environments = StandIn(concurrency=1)
    environments.gate.clear()
    front = InvokeFront(environments, async_queue=5).start()
    client = LambdaClient("us-east-1", endpoint_url=front.url)
    try:
        answers = [client.invoke(ARN, b"{}", invocation_type="Event") for _ in range(4)]
        assert [a.status for a in answers] == [202] * 4 and all(a.payload == b"" and a.request_id for a in answers)
        assert wait_for(lambda: len(environments.calls) == 1)  # one runs, three wait
    finally:
        client.close()
        threading.Timer(0.5, environments.gate.set).start()  # the one in flight finishes within the drain
        front.stop()
    assert front.dropped_at_stop == 3 and front.events.dropped == 3 and front.events.succeeded == 1
    assert len(environments.calls) == 1


def test_the_client_reads_202_and_204_and_refuses_an_unknown_type(fake_aws):
    with front_over(StandIn()) as (front, _):
        client = LambdaClient("us-east-1", endpoint_url=front.url)
        try:
            event = client.invoke(ARN, b"{}", invocation_type="Event", log_tail=True)
            dry = client.invoke("resnet-serverless", b"{}", invocation_type="DryRun", qualifier="$LATEST")
            sync = client.invoke(ARN, b"{}", log_tail=True)
            with pytest.raises(ValueError, match="invocation_type"):
                client.invoke(ARN, b"{}", invocation_type="Async")
        finally:
            client.close()
        assert front.events.wait_idle(WAIT_S)
    assert (event.status, event.payload, event.log_tail, event.report) == (202, b"", "", None)
    assert (dry.status, dry.payload, dry.function_error) == (204, b"", None)
    assert sync.status == 200 and sync.report is not None and sync.report.request_id == sync.request_id


def wait_for(condition, timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- the real emulator: a fixed pool and an elastic one ---------------------------------------------------

PROBE = """import json
import os
import sys
import time

print("probe: module loaded")


def handler(event, context):
    print("probe: invoked", json.dumps(event))
    print("probe: to stderr", file=sys.stderr)
    if event.get("raise"):
        raise ValueError("the probe was asked to fail")
    if event.get("exit"):
        os._exit(3)
    time.sleep(event.get("sleep", 0))
    custom = context.client_context.custom if context.client_context else None
    return {"request_id": context.aws_request_id, "arn": context.invoked_function_arn, "client_context": custom}
"""


@pytest.fixture
def probe(tmp_path) -> dict[str, object]:
    """Emulator arguments for a small handler that logs, raises, crashes or sleeps on request (timeout 2 s)."""
    (tmp_path / "probe.py").write_text(PROBE)
    return {"handler": "probe.handler", "pythonpath": [tmp_path], "cwd": tmp_path, "timeout_s": 2}


@pytest.mark.slow
def test_boto3_through_a_fixed_pool_with_the_real_model(lite0, fake_aws):
    with EmulatorPool(lite0, size=1, memory_mb=3008) as pool, front_over(pool) as (front, client):
        emulator = pool.emulators[0]
        # DryRun first: nothing runs, so the environment is still cold afterwards
        assert client.invoke(FunctionName=ARN, InvocationType="DryRun")["StatusCode"] == 204
        assert not any(line.startswith("START ") for line in emulator.log_lines())
        backend = LambdaInvokeBackend(ARN, region="us-east-1", endpoint_url=front.url, timeout=WAIT_S, log_tail=True)
        try:
            cold = backend.classify(CHELSEA.read())
        finally:
            backend.close()
        assert cold.cold_start and cold.predictions[0].label in CHELSEA.expected
        assert cold.extra["executed_version"] == "$LATEST" and cold.extra["duration_ms"] > 0  # from the tail's REPORT line
        answer = client.invoke(FunctionName=f"{EMULATOR_ACCOUNT_ID}:function:resnet-serverless", Qualifier="$LATEST",
                               Payload=json_request(CHELSEA.read()), LogType="Tail")
        request_id = answer["ResponseMetadata"]["RequestId"]
        log = base64.b64decode(answer["LogResult"]).decode().splitlines()
        assert log[0] == f"START RequestId: {request_id} Version: $LATEST" and log[-2] == f"END RequestId: {request_id}"
        assert log[-1].startswith(f"REPORT RequestId: {request_id}\tDuration: ")
        assert any('"message":"classified"' in line and request_id in line for line in log[1:-2])  # the handler's own line
        # Event: 202 at once, then the function runs on the same environment, under the id the caller got
        event = client.invoke(FunctionName="resnet-serverless:$LATEST", InvocationType="Event", Payload=json_request(CHELSEA.read()))
        assert event["StatusCode"] == 202 and event["Payload"].read() == b""
        assert front.events.wait_idle(WAIT_S) and front.events.succeeded == 1
        event_id = event["ResponseMetadata"]["RequestId"]
        assert any(line.startswith(f"REPORT RequestId: {event_id}") for line in emulator.log_lines())
        with pytest.raises(ClientError) as missing:
            client.invoke(FunctionName=f"{ARN}:1", Payload=b"{}")
        assert error_of(missing)[2]["Message"] == f"Function not found: {ARN}:1"


@pytest.mark.slow
def test_function_errors_through_a_fixed_pool_are_unhandled(probe, fake_aws):
    with EmulatorPool(None, size=1, **probe) as pool, front_over(pool) as (front, client):
        context = base64.b64encode(json.dumps({"custom": {"caller": "tests"}}).encode()).decode()
        ok = client.invoke(FunctionName="function", Payload=b'{"hello": 1}', ClientContext=context)
        answer = json.loads(ok["Payload"].read())
        assert "FunctionError" not in ok and answer["arn"] == ARN  # the ARN the function sees is the one it answers to
        assert answer["client_context"] == {"caller": "tests"} and answer["request_id"] == ok["ResponseMetadata"]["RequestId"]
        raised = client.invoke(FunctionName=ARN, Payload=b'{"raise": true}', LogType="Tail")
        error = json.loads(raised["Payload"].read())
        assert (raised["StatusCode"], raised["FunctionError"]) == (200, "Unhandled")
        assert (error["errorType"], error["errorMessage"]) == ("ValueError", "the probe was asked to fail")
        log = base64.b64decode(raised["LogResult"]).decode()
        assert "probe: to stderr" in log and "[ERROR] ValueError: the probe was asked to fail" in log
        crashed = client.invoke(FunctionName=ARN, Payload=b'{"exit": true}')
        assert (crashed["StatusCode"], crashed["FunctionError"]) == (200, "Unhandled")
        assert json.loads(crashed["Payload"].read())["errorType"] == "Runtime.ExitError"
        timed_out = client.invoke(FunctionName=ARN, Payload=b'{"sleep": 5}')
        assert (timed_out["StatusCode"], timed_out["FunctionError"]) == (200, "Unhandled")
        assert json.loads(timed_out["Payload"].read())["errorType"] == "Sandbox.Timedout"
        # this project's boto3 client reads each as a typed error; the environment serves on
        ours = LambdaClient("us-east-1", endpoint_url=front.url, timeout=WAIT_S)
        try:
            for event, error in ((b'{"sleep": 5}', BackendTimeoutError), (b'{"raise": true}', BackendError)):
                answer = ours.invoke(ARN, event)
                with pytest.raises(error) as typed:
                    invoke_answer(answer.payload, answer.function_error, "front")
                assert typed.value.status in (502, 504) and answer.function_error == "Unhandled"
        finally:
            ours.close()
        after = client.invoke(FunctionName=ARN, Payload=b"{}")
        assert "FunctionError" not in after and after["StatusCode"] == 200
        # an asynchronous invoke that fails is logged, never reported
        assert client.invoke(FunctionName=ARN, InvocationType="Event", Payload=b'{"raise": true}')["StatusCode"] == 202
        assert front.events.wait_idle(WAIT_S) and front.events.function_errors == 1


@pytest.mark.slow
def test_concurrent_sync_and_async_invokes_share_a_pool_safely(probe, fake_aws):
    """The RIE crashes on overlapping invokes: synchronous clients and the async workers together
    must never overlap on one environment."""
    with EmulatorPool(None, size=2, **probe) as pool, front_over(pool) as (front, client):
        pids = [emulator.pid for emulator in pool.emulators]

        def one(i: int) -> int:
            kind = "Event" if i % 3 == 0 else "RequestResponse"
            answer = client.invoke(FunctionName=ARN, InvocationType=kind, Payload=json.dumps({"sleep": 0.1, "i": i}).encode())
            assert "FunctionError" not in answer
            return answer["StatusCode"]

        with ThreadPoolExecutor(6) as clients:
            statuses = list(clients.map(one, range(18)))
        assert front.events.wait_idle(WAIT_S)
        assert sorted(statuses) == [200] * 12 + [202] * 6 and front.events.succeeded == 6
        assert [emulator.pid for emulator in pool.emulators] == pids and pool.alive()  # no emulator crashed


@pytest.mark.slow
def test_an_elastic_pool_throttles_with_its_reason_and_async_events_wait_their_turn(probe, fake_aws, monkeypatch):
    monkeypatch.setattr(async_queue, "FIRST_RETRY_DELAY_S", 0.2)
    with ElasticPool(None, max_concurrency=1, idle_timeout_s=60, **probe) as pool, front_over(pool) as (front, client):
        busy = threading.Thread(target=client.invoke, kwargs={"FunctionName": ARN, "Payload": b'{"sleep": 1.5}'})
        busy.start()
        assert wait_for(lambda: pool.size == 1)  # the one environment the limit allows is taken
        with pytest.raises(ClientError) as throttled:
            client.invoke(FunctionName=ARN, Payload=b"{}")
        status, code, response = error_of(throttled)
        assert (status, code, response["Reason"], response["Type"]) == (429, "TooManyRequestsException",
                                                                        "ReservedFunctionConcurrentInvocationLimitExceeded", "User")
        assert "concurrency limit" in response["message"]
        event = client.invoke(FunctionName=ARN, InvocationType="Event", Payload=b'{"async": true}')
        assert event["StatusCode"] == 202  # throttled in the background, retried, never reported
        busy.join(WAIT_S)
        assert front.events.wait_idle(WAIT_S)
        assert front.events.succeeded == 1 and front.events.retried >= 1 and pool.throttled >= 2
        assert client.invoke(FunctionName=ARN, InvocationType="DryRun")["StatusCode"] == 204


@pytest.mark.slow
def test_the_aws_cli_invokes_through_the_front(lite0, tmp_path):
    assert AWS_CLI.is_file(), f"{AWS_CLI} is missing: run `bash .ci/install` (it puts the AWS CLI in a virtualenv of its own)"
    event = tmp_path / "event.json"
    event.write_bytes(json_request(CHELSEA.read()))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "AWS_ACCESS_KEY_ID": "AKIDTESTSONLY",
           "AWS_SECRET_ACCESS_KEY": "tests-only-secret", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    if "RSLS_PROCESS_TAG" in os.environ:  # the suite's leak check follows every process it starts
        env["RSLS_PROCESS_TAG"] = os.environ["RSLS_PROCESS_TAG"]

    def aws(front: InvokeFront, *args: str, out: Path = tmp_path / "out.json") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(AWS_CLI), "lambda", "invoke", "--endpoint-url", front.url, *args, str(out)],
                              capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

    with EmulatorPool(lite0, size=1, memory_mb=3008) as pool, InvokeFront(pool) as front:
        sync = aws(front, "--function-name", ARN, "--log-type", "Tail", "--payload", f"fileb://{event}")
        assert sync.returncode == 0, sync.stderr
        printed = json.loads(sync.stdout)
        assert printed["StatusCode"] == 200 and printed["ExecutedVersion"] == "$LATEST" and "FunctionError" not in printed
        _, body = lambda_response((tmp_path / "out.json").read_bytes(), "aws cli")
        assert body["predictions"][0]["label"] in CHELSEA.expected
        log = base64.b64decode(printed["LogResult"]).decode()
        assert log.startswith("START RequestId: ") and "\nREPORT RequestId: " in log
        asynchronous = aws(front, "--function-name", "resnet-serverless", "--invocation-type", "Event", "--payload", f"fileb://{event}")
        assert asynchronous.returncode == 0 and json.loads(asynchronous.stdout) == {"StatusCode": 202}, asynchronous.stderr
        dry = aws(front, "--function-name", f"{EMULATOR_ACCOUNT_ID}:function:resnet-serverless", "--invocation-type", "DryRun")
        assert dry.returncode == 0 and json.loads(dry.stdout) == {"StatusCode": 204}, dry.stderr
        missing = aws(front, "--function-name", "resnet-serverless:prod", "--payload", f"fileb://{event}")
        assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr
        assert f"Function not found: {ARN}:prod" in missing.stderr
        assert front.events.wait_idle(WAIT_S) and front.events.succeeded == 1
