"""boto3's Lambda client: the one place this project talks to the Lambda API (invoke, configuration)."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

from lambda_onnx.errors import BackendError, BackendTimeoutError, BackendUnavailableError, ThrottledError
from local.clients.base import CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, BackendResult
from local.wire import EMULATOR_PLACEHOLDERS, Report, invoke_answer, json_request, last_report, refuse_oversized_invoke

THROTTLE_CODES = frozenset({"TooManyRequestsException", "ThrottlingException"})
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")


@dataclass(frozen=True)
class InvokeAnswer:
    """What the Invoke API answered: the function's payload, its error flag, and the log tail's REPORT."""

    status: int  # the Invoke API's own HTTP status (200, 202 Event, 204 DryRun)
    payload: bytes  # the function's answer or error object; empty for Event and DryRun
    function_error: str | None  # "Unhandled" when the handler raised, timed out or the runtime crashed
    executed_version: str | None
    report: Report | None  # with log_tail: the invocation's REPORT line
    log_tail: str  # with log_tail: the last 4 KB of the invocation's log, decoded
    request_id: str | None = None  # the Invoke API's x-amzn-RequestId (an Event's, to find it in the logs)


class LambdaClient:
    """boto3's Lambda client with this project's error handling: every failure is a typed error.

    botocore's own retries are off: a throttle comes back as :class:`ThrottledError` for the caller
    (benchmarks count them), a read timeout as :class:`BackendTimeoutError`, and only a connection
    that never reached Lambda is retried here, so an invoke never runs twice. ``endpoint_url``
    points it at the local emulator's Invoke API URL (``python -m local emulator``), which answers
    to the function's name, ARN or partial ARN, and to ``"function"``.
    """

    def __init__(self, region: str | None = None, *, endpoint_url: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 connect_timeout: float = CONNECT_TIMEOUT_S, connect_retries: int = 2, session: Any = None,
                 name: str = "lambda") -> None:
        import boto3
        from botocore.config import Config

        self.name, self.connect_retries = name, connect_retries
        config = Config(connect_timeout=connect_timeout, read_timeout=timeout,
                        retries={"total_max_attempts": 1, "mode": "standard"})
        self._client = (session or boto3.session.Session()).client("lambda", region_name=region, endpoint_url=endpoint_url,
                                                                   config=config)

    def call(self, operation: str, **kwargs: Any) -> Any:
        """One Lambda API call by its boto3 name; failures become typed errors (see the class docstring)."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            NoRegionError,
            ReadTimeoutError,
        )

        for attempt in range(self.connect_retries + 1):
            try:
                return getattr(self._client, operation)(**kwargs)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code, message = error.get("Code", "ClientError"), error.get("Message", str(exc))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                if code in THROTTLE_CODES or status == 429:
                    raise ThrottledError(f"{self.name}: throttled ({code}): {message}", status=429, code="throttled") from None
                raise BackendError(f"{self.name}: {operation}: {code}: {message}", status=status, code=code) from None
            except ReadTimeoutError:
                raise BackendTimeoutError(f"{self.name}: {operation}: no answer within the read timeout") from None
            except ConnectionError as exc:  # never reached Lambda: safe to try again
                if attempt == self.connect_retries:
                    raise BackendUnavailableError(f"{self.name}: cannot connect ({exc})") from None
                time.sleep(0.2 * 2**attempt)
            except (NoCredentialsError, NoRegionError) as exc:
                raise BackendError(f"{self.name}: {exc}", code="aws_configuration") from None
            except HTTPClientError as exc:  # closed or reset after the request went out: it may have run, never retried
                raise BackendUnavailableError(f"{self.name}: the connection failed before an answer came back "
                                              f"({type(exc).__name__}: {exc})") from None
            except BotoCoreError as exc:  # anything else botocore raises: still a typed error, not a traceback
                raise BackendError(f"{self.name}: {operation}: {type(exc).__name__}: {exc}", code="aws_error") from None
        raise AssertionError("unreachable")

    def invoke(self, function: str, payload: bytes, *, log_tail: bool = False, invocation_type: str = "RequestResponse",
               qualifier: str | None = None) -> InvokeAnswer:
        """Invoke ``function`` (a name, ``name:$LATEST``, an ARN or a partial ARN; on the emulator also
        ``function``), at ``qualifier`` (a version or alias) if given.

        ``invocation_type``: ``RequestResponse`` waits for the function (200, its answer);
        ``Event`` queues the payload and returns at once (202, an empty payload: the function runs
        later and its result goes nowhere); ``DryRun`` only checks the call (204, nothing runs).
        With ``log_tail`` a synchronous invoke also returns the last 4 KB of its log, whose REPORT
        line is parsed (Lambda returns no log for the other types).
        """
        if invocation_type not in INVOCATION_TYPES:
            raise ValueError(f"invocation_type must be one of {INVOCATION_TYPES}, got {invocation_type!r}")
        refuse_oversized_invoke(payload, self.name)
        kwargs: dict[str, Any] = {"FunctionName": function, "InvocationType": invocation_type, "Payload": payload}
        if qualifier:
            kwargs["Qualifier"] = qualifier
        tailed = log_tail and invocation_type == "RequestResponse"
        if tailed:
            kwargs["LogType"] = "Tail"
        response = self.call("invoke", **kwargs)
        body = response.get("Payload")
        tail = base64.b64decode(response.get("LogResult") or b"").decode("utf-8", "replace") if tailed else ""
        return InvokeAnswer(int(response.get("StatusCode", 200)), body.read() if body is not None else b"",
                            response.get("FunctionError"), response.get("ExecutedVersion"), last_report(tail) if tail else None,
                            tail, response.get("ResponseMetadata", {}).get("RequestId"))

    def memory_mb(self, function: str) -> int:
        return int(self.call("get_function_configuration", FunctionName=function)["MemorySize"])

    def set_memory(self, function: str, memory_mb: int) -> None:
        """Set a function's memory size and wait until the update is live (new environments: the next invoke is cold)."""
        from botocore.exceptions import WaiterError

        self.call("update_function_configuration", FunctionName=function, MemorySize=int(memory_mb))
        try:
            self._client.get_waiter("function_updated_v2").wait(FunctionName=function, WaiterConfig={"Delay": 2, "MaxAttempts": 90})
        except WaiterError as exc:
            raise BackendError(f"{self.name} {function}: the update to {memory_mb} MB did not complete: {exc}",
                               code="update_failed") from None

    def close(self) -> None:
        self._client.close()


class LambdaInvokeBackend:
    """boto3 ``lambda.invoke`` (RequestResponse) with the ``{"image": "<base64>"}`` payload.

    ``function`` is a name or an ARN; ``endpoint_url`` points the same client at the local emulator's
    Invoke API URL (the same name or ARN, or ``"function"``). ``log_tail`` asks Lambda for each invocation's log tail, whose REPORT
    line (duration, billed duration, memory; on AWS all real) lands in the result's ``extra``.
    """

    kind = "serverless"

    def __init__(self, function: str, region: str | None = None, *, endpoint_url: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, connect_timeout: float = CONNECT_TIMEOUT_S,
                 connect_retries: int = 2, session: Any = None, name: str | None = None, log_tail: bool = False) -> None:
        self.function, self.log_tail = function, log_tail
        # Pointed at the local emulator, the REPORT line's Max Memory Used and Init Duration are placeholders.
        self.placeholders = EMULATOR_PLACEHOLDERS if endpoint_url else ()
        self.name = name or f"lambda invoke {function}" + (f" @ {endpoint_url}" if endpoint_url else "")
        self.client = LambdaClient(region, endpoint_url=endpoint_url, timeout=timeout, connect_timeout=connect_timeout,
                                   connect_retries=connect_retries, session=session, name=self.name)

    def classify(self, image: bytes) -> BackendResult:
        payload = json_request(image)
        start = time.perf_counter()
        answer = self.client.invoke(self.function, payload, log_tail=self.log_tail)
        elapsed = (time.perf_counter() - start) * 1e3
        status, body = invoke_answer(answer.payload, answer.function_error, self.name)
        extra: dict[str, Any] = {"executed_version": answer.executed_version}
        if answer.report is not None:
            extra.update(answer.report.facts(exclude=self.placeholders))
        return BackendResult(self.name, self.kind, status, body, elapsed, len(payload), len(answer.payload), extra=extra)

    def close(self) -> None:
        self.client.close()
