"""AWS view: X-Ray phases and the REPORT line of the exact request the Compare view just made."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from local.aws_trace import lookup_request


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} ms"


def lookup_markdown(*, region: str | None, function_name: str | None, request_id: str | None,
                    trace_id: str | None) -> str:
    try:
        timing, report = lookup_request(region=region, function_name=function_name, request_id=request_id, trace_id=trace_id)
    except (BotoCoreError, ClientError) as exc:
        return f"❌ AWS look-up failed: {exc}"
    lines = [f"**Request** `{request_id}` · **trace** `{timing.trace_id or trace_id or 'none'}`", ""]
    if timing.found:
        lines += ["| X-Ray | duration |", "|---|---|",
                  f"| Initialization | {_ms(timing.initialization_ms)} |", f"| Invocation | {_ms(timing.invocation_ms)} |",
                  f"| Overhead | {_ms(timing.overhead_ms)} |", f"| Lambda service (total) | {_ms(timing.service_ms)} |",
                  f"| invoke status | {timing.status or '—'}{' (error)' if timing.error else ''}{' (fault)' if timing.fault else ''} |"]
    else:
        lines.append(f"X-Ray: {timing.message}")
    lines.append("")
    if report is None:
        lines.append("CloudWatch Logs: no REPORT line found for this request yet"
                     + ("" if function_name else " (give the function name)"))
    else:
        lines += ["| REPORT | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report.fields.items() if k != "RequestId"]
    return "\n".join(lines)
