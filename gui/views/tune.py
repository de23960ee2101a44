"""Tune tab: the emulated power-tuning sweep of ``python -m local tune``, with the Cost tab's prices.

Plain functions first (:func:`run_view` and what it shows); :func:`build_tab` lays out the inputs
and wires the sweep to a button.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from gui.access import Access, number, one_of, some_of, whole
from gui.context import AppContext
from gui.views.cost import Prices
from lambda_onnx.errors import ClassifierError
from local.measure import cost
from local.measure.tune import DEFAULT_REQUESTS, DEFAULT_SIZES, PERCENTILES, PRECISIONS, TuneConfig, TuneProgress, TuneReport, run_tune
from local.report.tune import figure, write_outputs

INTRO = ("Which Lambda memory size is the cheapest that is fast enough? Each size runs the real handler on the Lambda "
         "emulator inside a Linux cgroup sized as Lambda sizes a function (CPU quota of memory / 1,769 MB vCPU, memory "
         "limit without swap): one cold start, then the warm requests. Costs use the **Cost** tab's prices. The figures "
         "are **EMULATED** (same code and runtime client, no network or image pull, this machine's CPU); it needs root or "
         "a delegated cgroup, and says so otherwise. Same as `python -m local tune`.")
SIZES_TEXT = ", ".join(map(str, DEFAULT_SIZES))


@dataclass
class TuneView:
    """What the view shows after a sweep."""

    summary: str  # Markdown: the EMULATED label, the recommendation, notes
    figure: Any  # matplotlib Figure: latency and cost against memory
    table: pd.DataFrame
    files: list[str]  # tune.json, tune.md, tune.png
    report: TuneReport


# ---- plain functions ------------------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"512, 1024,1769"`` -> ``(512, 1024, 1769)``; a ValueError that says what was wrong otherwise."""
    parts = [p.strip() for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    try:
        sizes = tuple(int(float(p)) for p in parts)
    except ValueError:
        raise ValueError(f"memory sizes are whole MB separated by commas (e.g. 512, 1024, 1769), not {text!r}") from None
    if not sizes:
        raise ValueError("give at least one memory size in MB")
    return sizes


def progress_callback(progress: Callable[..., Any]) -> Callable[[TuneProgress], None]:
    """Adapt a ``gr.Progress`` to the sweep's steps, keeping the last message as the description."""
    last = {"message": "starting"}

    def update(step: TuneProgress) -> None:
        last["message"] = step.message.strip() or last["message"]
        progress((step.done, step.total), desc=last["message"], unit="invokes")

    return update


def run_view(model: Path, *, sizes: str, requests: float, budget_ms: float | None, percentile: str, precisions: list[str],
             architecture: str, gb_second_usd: float | None, request_usd_per_million: float, api_usd_per_million: float,
             api_gateway: bool, cold_fraction: float, function: str | None = None, region: str | None = None,
             on_progress: Callable[[TuneProgress], None] | None = None, out: Path | None = None) -> TuneView:
    """Run the sweep with the cost view's price inputs and build the view's outputs.

    Raises ValueError for bad inputs, ``CgroupUnavailableError`` (a ClassifierError) where cgroups
    cannot be made, ``ModelLoadError`` for a missing model.
    """
    prices = cost.CostInputs(architecture=architecture, gb_second_usd=float(gb_second_usd) if gb_second_usd else None,
                             request_usd=float(request_usd_per_million) / 1e6, api_request_usd=float(api_usd_per_million) / 1e6,
                             api_gateway=bool(api_gateway), cold_start_fraction=float(cold_fraction))
    config = TuneConfig(model=Path(model), precisions=tuple(precisions or ()), sizes=parse_sizes(sizes),
                        requests=int(requests), budget_ms=float(budget_ms) if budget_ms else None, percentile=percentile,
                        prices=prices, function=function or None, region=region or None)
    report = run_tune(config, on_progress=on_progress)
    chart = figure(report)
    paths = write_outputs(report, out or Path(tempfile.mkdtemp(prefix="tune-")), chart)
    return TuneView(summary_markdown(report), chart, table(report), [str(paths[k]) for k in ("markdown", "json", "png")],
                    report)


def summary_markdown(report: TuneReport) -> str:
    """The EMULATED label, the recommendation(s) and the notes."""
    lines = [f"⚠️ **{report.emulation_note}**", ""]
    if report.recommendation is not None:
        lines += ["### Recommendation (emulated)", report.recommendation.text, ""]
    if report.aws_recommendation is not None:
        lines += ["### On AWS (real figures)", report.aws_recommendation.text, ""]
    warned = [f"- {r.key}: {'; '.join(r.warnings)}" for r in report.results if r.warnings]
    if warned or report.notes:
        lines += ["**Notes**", *warned, *[f"- {note}" for note in report.notes]]
    return "\n".join(lines)


def table(report: TuneReport) -> pd.DataFrame:
    """One row per configuration: emulated figures, and AWS's next to them where measured."""
    p, metric = report.config["percentile"], report.config["metric"]
    aws = {(r.precision, r.memory_mb): r for r in report.aws_results}
    rows = []
    for r in report.results:
        w = r.warm.get(metric, {})
        warm = r.throttling.get("warm", {})
        throttled = f"{warm.get('nr_throttled', 0):.0f}/{warm.get('nr_periods', 0):.0f}" if warm else None
        row = {"precision": r.precision, "memory MB": r.memory_mb, "vCPU here": r.cpus, "CPU capped": r.cpu_capped,
               "threads": r.threads, "cold round trip ms": r.cold_round_trip_ms, "init phase ms": r.init_phase_ms,
               "p50 ms": w.get("p50"), f"{p} ms" if p != "p50" else "p50 ms": w.get(p), "peak MB (cgroup)": r.memory_peak_mb,
               "peak RSS MB": r.peak_rss_mb, "throttled periods (warm)": throttled, "USD per 1M": r.cost_per_million_usd,
               "status": r.status if r.status == "ok" else f"{r.status.upper()}: {r.message}"}
        if aws:
            real = aws.get((r.precision, r.memory_mb))
            row.update({"AWS p50 ms": real.latency("p50") if real else None, f"AWS {p} ms": real.latency(p) if real else None,
                        "AWS USD per 1M": real.cost_per_million_usd if real else None})
        rows.append(row)
    return pd.DataFrame(rows)


def bounded_sizes(text: str, access: Access) -> str:
    """The sweep's sizes within Lambda's 128-10,240 MB and the role's count, as the text :func:`parse_sizes` reads."""
    try:
        sizes = parse_sizes(text)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    if len(sizes) > access.limits.tune_sizes:
        raise gr.Error(f"at most {access.limits.tune_sizes} memory sizes in one sweep")
    return ", ".join(str(whole(size, "a memory size (MB)", 128, 10_240)) for size in sizes)


def tune(ctx: AppContext, sizes: str, requests: float, budget_ms: float | None, percentile: str, precisions: list[str],
         function: str, architecture: str, gb_second_usd: float, request_per_million: float, api_per_million: float,
         api_gateway: bool, cold_fraction: float, progress: Callable[..., Any] = lambda *args, **kwargs: None,
         access: Access | None = None) -> tuple:
    """Sweep the served model's memory sizes: the summary, the chart, the table and the files (each input
    within ``access``'s bounds first)."""
    access = access or Access()
    sizes = bounded_sizes(sizes, access)
    requests = whole(requests, "warm requests per size", 1, max(1, access.limits.tune_requests))
    budget_ms = None if budget_ms in (None, "", 0) else number(budget_ms, "the latency budget (ms)", 0, 900_000)
    percentile = one_of(percentile, "the budget's percentile", tuple(PERCENTILES))
    precisions = some_of(precisions, "precisions", tuple(PRECISIONS))
    one_of(architecture, "architecture", tuple(cost.LAMBDA_GB_SECOND_USD))
    cold_fraction = number(cold_fraction, "the share of cold requests", 0, 1)
    try:
        view = run_view(ctx.model_path, sizes=sizes, requests=requests, budget_ms=budget_ms, percentile=percentile,
                        precisions=precisions, architecture=architecture, gb_second_usd=gb_second_usd,
                        request_usd_per_million=request_per_million, api_usd_per_million=api_per_million,
                        api_gateway=api_gateway, cold_fraction=cold_fraction, function=function,
                        region=ctx.targets.region, on_progress=progress_callback(progress),
                        out=ctx.scratch.folder("tune-"))
    except ClassifierError as exc:
        raise gr.Error(exc.message) from None
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    return view.summary, view.figure, view.table, view.files


# ---- the tab --------------------------------------------------------------------------------------


def build_tab(ctx: AppContext, access: Access, prices: Prices) -> None:
    """The Tune tab, under the app's ``gr.Blocks``; event ``tune``, priced with the Cost tab's ``prices``. The
    operator's only (it makes cgroups, loads the CPUs for minutes, and on AWS changes a real function): the app
    does not build it for a viewer."""

    # The event's parameter names are its API's (gradio_client's keywords).
    def on_tune(sizes: str, requests: float, budget_ms: float | None, percentile: str, precisions: list[str], function: str,
                architecture: str, gb_second_usd: float, request_per_million: float, api_per_million: float,
                api_gateway: bool, cold_fraction: float, request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple:
        with access.work(request):
            return tune(ctx, sizes, requests, budget_ms, percentile, precisions, function, architecture, gb_second_usd,
                        request_per_million, api_per_million, api_gateway, cold_fraction, progress, access)

    with gr.Tab("Tune"):
        gr.Markdown(INTRO)
        with gr.Row():
            sizes = gr.Textbox(SIZES_TEXT, label="Memory sizes (MB)")
            requests = gr.Number(DEFAULT_REQUESTS, minimum=1, precision=0, label="Warm requests per size")
            budget = gr.Number(None, minimum=0, label="Latency budget (ms; empty: none)")
            percentile = gr.Radio(list(PERCENTILES), value="p90", label="Budget applies to")
            precisions = gr.CheckboxGroup(list(PRECISIONS), value=list(PRECISIONS), label="Precisions")
        function = gr.Textbox(ctx.targets.lambda_function or "", visible=ctx.targets.serverless_is_aws,
                              label="Real function to sweep too (its memory is changed, then restored)")
        button = gr.Button("Sweep memory sizes", variant="primary")
        summary = gr.Markdown()
        plot = gr.Plot(label="Latency and cost against memory size (EMULATED)")
        rows = gr.Dataframe(label="Per configuration (EMULATED)")
        files = gr.File(label="tune.md, tune.json, tune.png", file_count="multiple")

    button.click(on_tune, inputs=[sizes, requests, budget, percentile, precisions, function, *prices.inputs()],
                 outputs=[summary, plot, rows, files], api_name="tune", concurrency_limit=1)
