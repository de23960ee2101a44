"""Cost tab: serverless against servers per month, from measured durations and throughput.

The figures are :mod:`local.measure.cost`'s; the server's throughput is measured by
:func:`local.measure.throughput.measure_throughput`, as ``python -m local throughput`` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from gui.access import Access
from gui.context import AppContext
from gui.views.banner import random_banner
from gui.views.compare import last_serverless_answer
from lambda_onnx import photos
from lambda_onnx.errors import ClassifierError
from local.measure import cost
from local.measure.core.images import DEFAULT_PHOTO
from local.measure.throughput import DEFAULT_CLIENTS, DEFAULT_REQUESTS, measure_throughput
from local.report import charts


@dataclass
class Prices:
    """The Cost tab's price inputs that the Tune tab's sweep uses too, in the order its event takes them."""

    architecture: gr.Radio
    gb_second_usd: gr.Number
    request_per_million: gr.Number
    api_per_million: gr.Number
    api_gateway: gr.Checkbox
    cold_fraction: gr.Number

    def inputs(self) -> list[gr.components.Component]:
        return [self.architecture, self.gb_second_usd, self.request_per_million, self.api_per_million, self.api_gateway,
                self.cold_fraction]


@dataclass
class CostTab:
    """What other tabs read from this one."""

    banner: gr.Markdown
    prices: Prices


# ---- plain functions ------------------------------------------------------------------------------


def compare_costs(memory_mb: float, architecture: str, warm_ms: float, init_ms: float, cold_fraction: float,
                  api_gateway: bool, gb_second_usd: float, request_per_million: float, api_per_million: float,
                  server_hourly: float, server_rps: float, utilisation: float) -> tuple:
    """The comparison in words, the monthly cost against volume, a table at a few volumes, and the figures as JSON."""
    try:
        inputs = cost.CostInputs(
            memory_mb=int(memory_mb), architecture=architecture, warm_duration_ms=float(warm_ms), init_ms=float(init_ms),
            cold_start_fraction=float(cold_fraction), api_gateway=bool(api_gateway), gb_second_usd=float(gb_second_usd),
            request_usd=float(request_per_million) / 1e6, api_request_usd=float(api_per_million) / 1e6,
            server_hourly_usd=float(server_hourly), server_throughput_rps=float(server_rps),
            server_utilisation=float(utilisation))
        result = cost.compare(inputs)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    crossover = result.crossover_requests_per_month
    text = "\n".join([
        f"- serverless: **${result.serverless_per_million_usd:,.2f} per million requests** "
        f"(${result.serverless_per_request_usd:.8f} each, cold starts' billed INIT included)",
        f"- one server: **${result.server_monthly_usd_one:,.2f} a month**, carrying up to "
        f"{result.server_capacity_per_month:,.0f} requests a month at {utilisation:.0%} utilisation",
        f"- crossover: **{crossover:,.0f} requests a month** (≈ {crossover / (cost.HOURS_PER_MONTH * 3600):.2f} requests/s on average); "
        "below it serverless is cheaper" if crossover else
        "- crossover: none: at these prices serverless is cheaper than even a fully busy server",
        f"- prices: defaults are AWS's published prices, {cost.PRICES_DATE}; edit them to match yours",
    ])
    rows = cost.curve(inputs, cost.log_volumes())
    table = pd.DataFrame(cost.curve(inputs, [1e5, 1e6, 1e7, 1e8]))
    return text, charts.cost_curve(rows, crossover), table, result.to_dict()


def measured(ctx: AppContext, summary: dict | None, server_rps: float) -> tuple:
    """Fill the cost inputs from the last compare click."""
    serverless = last_serverless_answer(summary)
    m = serverless["metrics"]
    return (m.get("memory_mb") or ctx.targets.emulator_memory_mb, m["handler_ms"], m["init_ms"], server_rps)


def server_throughput(ctx: AppContext) -> float:
    """Measure the server side's requests per second, as ``python -m local throughput`` does."""
    try:
        result = measure_throughput(ctx.server(), photos.by_name(DEFAULT_PHOTO).read(), requests=DEFAULT_REQUESTS,
                                    clients=DEFAULT_CLIENTS)
    except ClassifierError as exc:
        raise gr.Error(exc.message) from None
    gr.Info(f"server throughput: {result.requests_per_s} requests/s ({result.answered} requests, {result.clients} clients)")
    return result.requests_per_s


# ---- the tab --------------------------------------------------------------------------------------


def build_tab(ctx: AppContext, access: Access, last: gr.State) -> CostTab:
    """The Cost tab, under the app's ``gr.Blocks``; events ``cost``, ``cost_from_compare`` (reads ``last``, the
    Compare tab's last answer) and ``server_throughput``."""

    # The events' parameter names and docstrings are their API's (gradio_client's keywords and descriptions).
    def on_cost(memory_mb: float, architecture: str, warm_ms: float, init_ms: float, cold_fraction: float,
                api_gateway: bool, gb_second_usd: float, request_per_million: float, api_per_million: float,
                server_hourly: float, server_rps: float, utilisation: float) -> tuple:
        return compare_costs(memory_mb, architecture, warm_ms, init_ms, cold_fraction, api_gateway, gb_second_usd,
                             request_per_million, api_per_million, server_hourly, server_rps, utilisation)

    def on_measured(summary: dict | None, server_rps: float) -> tuple:
        """Fill the cost inputs from the last compare click."""
        return measured(ctx, summary, server_rps)

    def on_throughput(request: gr.Request) -> float:
        with access.work(request):
            return server_throughput(ctx)

    with gr.Tab("Cost"):
        banner = random_banner(ctx)
        gr.Markdown(f"Serverless cost from measured durations against servers. Defaults: {cost.PRICES_DATE}.")
        defaults = cost.CostInputs()
        with gr.Row():
            memory = gr.Number(ctx.targets.emulator_memory_mb, precision=0, label="Lambda memory (MB)")
            architecture = gr.Radio(["x86_64", "arm64"], value=defaults.architecture, label="Architecture")
            warm = gr.Number(defaults.warm_duration_ms, label="Warm duration (ms)")
            init = gr.Number(defaults.init_ms, label="Billed INIT per cold start (ms)")
            cold = gr.Number(defaults.cold_start_fraction, minimum=0, maximum=1, label="Share of requests that are cold")
        with gr.Row():
            api_gateway = gr.Checkbox(defaults.api_gateway, label="Behind API Gateway (HTTP API)")
            gb_second = gr.Number(cost.gb_second_price(defaults), label="USD per GB-second")
            request = gr.Number(defaults.request_usd * 1e6, label="USD per million Lambda requests")
            api_request = gr.Number(defaults.api_request_usd * 1e6, label="USD per million API requests")
        with gr.Row():
            hourly = gr.Number(defaults.server_hourly_usd, label="Server USD per hour")
            rps = gr.Number(defaults.server_throughput_rps, label="Server throughput (requests/s, measured)")
            utilisation = gr.Number(defaults.server_utilisation, minimum=0.05, maximum=1, label="Plan servers at this utilisation")
        with gr.Row():
            fill_button = gr.Button("Use figures measured in Compare")
            measure_button = gr.Button("Measure server throughput")
            cost_button = gr.Button("Compare costs", variant="primary")
        text = gr.Markdown()
        plot = gr.Plot(label="Monthly cost against volume")
        table = gr.Dataframe(label="At a few volumes (USD per month)")
        figures = gr.JSON(visible=False)

    cost_button.click(on_cost, inputs=[memory, architecture, warm, init, cold, api_gateway, gb_second, request, api_request,
                                       hourly, rps, utilisation],
                      outputs=[text, plot, table, figures], api_name="cost")
    architecture.change(lambda arch: cost.LAMBDA_GB_SECOND_USD[arch], inputs=architecture, outputs=gb_second,
                        api_visibility="private")
    fill_button.click(on_measured, inputs=[last, rps], outputs=[memory, warm, init, rps], api_name="cost_from_compare")
    # A measurement loads the server side's CPUs: one at a time, whoever asks.
    measure_button.click(on_throughput, outputs=rps, api_name="server_throughput", concurrency_limit=1)
    return CostTab(banner=banner, prices=Prices(architecture, gb_second, request, api_request, api_gateway, cold))
