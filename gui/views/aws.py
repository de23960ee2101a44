"""AWS tab: X-Ray phases and the REPORT line of the exact request the Compare tab just made.

Shown only when the serverless side is a deployed function.
"""

from __future__ import annotations

import gradio as gr

from gui.context import AppContext
from gui.views.compare import last_serverless_answer

INTRO = ("X-Ray and CloudWatch Logs for the exact request just made (matched by its trace id and request id). Traces "
         "arrive late: the look-up retries a few times.")


# ---- plain functions ------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} ms"


def lookup_markdown(*, region: str | None, function_name: str | None, request_id: str | None,
                    trace_id: str | None) -> str:
    """The request's X-Ray phases and its REPORT line as Markdown tables, or what could not be found and why."""
    # Imported here: botocore is needed only on AWS, and the app starts without loading it.
    from botocore.exceptions import BotoCoreError, ClientError

    from local.clients.aws_trace import lookup_request

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


def aws_lookup(ctx: AppContext, summary: dict | None, function_name: str) -> str:
    """Look up the serverless side's answer to the last compare click (``summary``) on AWS."""
    serverless = last_serverless_answer(summary)
    name = function_name or ctx.targets.lambda_function or serverless.get("function_name")
    return lookup_markdown(region=ctx.targets.region, function_name=name, request_id=serverless.get("request_id"),
                           trace_id=serverless.get("trace_id"))


# ---- the tab --------------------------------------------------------------------------------------


def build_tab(ctx: AppContext, last: gr.State) -> None:
    """The AWS tab, under the app's ``gr.Blocks``; event ``aws_trace``, on ``last`` (the Compare tab's last answer)."""

    # The event's parameter names are its API's (gradio_client's keywords).
    def on_lookup(summary: dict | None, function_name: str) -> str:
        return aws_lookup(ctx, summary, function_name)

    with gr.Tab("AWS", visible=ctx.targets.serverless_is_aws):
        gr.Markdown(INTRO)
        function = gr.Textbox(ctx.targets.lambda_function or "", label="Function name (for its log group)")
        button = gr.Button("Look up the last serverless request")
        result = gr.Markdown()

    button.click(on_lookup, inputs=[last, function], outputs=result, api_name="aws_trace")
