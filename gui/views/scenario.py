"""Scenario view: "which one wins for my traffic?", the simulation of ``python -m local scenario``.

Plain functions first (:func:`run_view`, :func:`compare_view`); :func:`build_tab` lays the tab out
under the app's ``gr.Blocks`` and names every event (``api_name``) for ``gradio_client``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from local.lambda_env.elastic import DEFAULT_IDLE_TIMEOUT_S
from local.measure import cost
from local.measure.scenario.breakeven import DEFAULT_RATES, breakeven, parse_rates
from local.measure.scenario.calibrate import DEFAULT_CACHE, MEASURE_CHOICES, Calibration, calibrate
from local.measure.scenario.results import ScenarioResult
from local.measure.scenario.run import COMPARE, ScenarioConfig, compare_shapes, run_scenario
from local.measure.scenario.traffic import SHAPES, Shape, parse_duration, read_arrivals
from local.report import breakeven as breakeven_report
from local.report import scenario as report

INTRO = ("Which wins for **your** traffic? A traffic shape, or your own access log (API Gateway or ALB) or a CSV of "
         "arrival times, simulated through Lambda (cold starts, idle timeout, concurrency limit, scaling rate, API "
         "Gateway's 30 s) and through a server fleet (EC2 instances or Fargate tasks running `local serve`'s lanes, one "
         "per vCPU, behind an Application Load Balancer; bounded queues, fixed or autoscaled), with latencies measured "
         "on this machine with every lane busy. Costs use the Cost tab's prices (defaults: "
         f"{cost.PRICES_DATE}; the fleet's {cost.FLEET_PRICES_DATE}). Each run says what to deploy on both sides and "
         "offers the ECS stack's parameters and the Kubernetes overlay. Same as `python -m local scenario`; every "
         "figure says where it came from.")
FILE = "my arrivals (file)"


@dataclass
class ScenarioView:
    """What the view shows after a run."""

    summary: str  # Markdown: verdict, the two sides, sources
    figure: Any  # matplotlib Figure: over time, or the comparison
    table: pd.DataFrame
    result: dict[str, Any]  # the JSON ``--json`` prints
    files: list[str]
    deployment: str = ""  # Markdown: what to deploy on each side (one scenario)
    deploy_files: list[str] = field(default_factory=list)  # deployment.json, the ECS parameters, the Kubernetes overlay


def progress_callback(progress: Callable[..., Any]) -> Callable[[str, float | None], None]:
    """Adapt a ``gr.Progress`` to the library's ``(message, fraction)`` progress."""
    def update(message: str, fraction: float | None = None) -> None:
        progress(fraction if fraction is not None else 0.0, desc=message)
    return update


def table(result: ScenarioResult) -> pd.DataFrame:
    return pd.DataFrame(report.side_rows(result), columns=["", "Lambda", "server fleet"])


def _calibration(model: Path, memory_mb: int, precision: str, measure: str,
                 on_progress: Callable[[str, float | None], None] | None, saved: Path) -> Calibration:
    if measure not in MEASURE_CHOICES:
        raise ValueError(f"calibration must be one of {', '.join(MEASURE_CHOICES)}")
    return calibrate(model, int(memory_mb), precision, measure=measure, cache=saved, on_progress=on_progress)


def run_view(model: Path, *, shape: str, arrivals_file: str | None = None, rate: float = 1.0, duration: str = "1d",
             memory_mb: float = 3008, precision: str = "fp32", idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
             reserved_concurrency: float | None = None, provisioned: float = 0, instances: float | None = None,
             workers: float | None = None, autoscale: bool = False, calibration: str = "auto", seed: int = 0,
             instance_type: str = cost.DEFAULT_INSTANCE_TYPE, platform: str = "auto",
             prices: cost.CostInputs | None = None, saved_calibration: Path = DEFAULT_CACHE,
             on_progress: Callable[[str, float | None], None] | None = None) -> ScenarioView:
    """Simulate one scenario and build the view's outputs. ValueError (and the library's typed
    errors) for bad inputs; a shape's other parameters are its defaults (the CLI offers them all)."""
    if shape == FILE:
        if not arrivals_file:
            raise ValueError("upload an arrivals file (CSV of seconds, API Gateway or ALB access log) first")
        traffic: Shape | Any = read_arrivals(arrivals_file)
        period = parse_duration(duration) if duration and duration.strip() else None
    elif shape in SHAPES:
        traffic = Shape(shape, rate=float(rate)) if shape != "sparse" else Shape("sparse", every_s=1.0 / float(rate))
        period = parse_duration(duration or "1d")
    else:
        raise ValueError(f"choose a traffic shape ({', '.join(SHAPES)}) or {FILE!r}")
    config = ScenarioConfig(traffic=traffic, duration_s=period, seed=int(seed), idle_timeout_s=float(idle_timeout_s),
                            reserved_concurrency=int(reserved_concurrency) if reserved_concurrency else None,
                            provisioned=int(provisioned or 0), instances=int(instances) if instances else None,
                            workers=int(workers) if workers else None, autoscale=bool(autoscale),
                            instance_type=instance_type or cost.DEFAULT_INSTANCE_TYPE, platform=platform or "auto",
                            api_gateway=(prices or cost.CostInputs()).api_gateway,
                            prices=replace(prices or cost.CostInputs(), memory_mb=int(memory_mb)))
    figures = _calibration(model, int(memory_mb), precision, calibration, on_progress, saved_calibration)
    result = run_scenario(config, figures, on_progress=on_progress)
    paths = report.write_outputs(result, Path(tempfile.mkdtemp(prefix="scenario-")))
    return ScenarioView(report.markdown(result), report.over_time(result), table(result), result.to_dict(),
                        [str(paths[k]) for k in ("markdown", "json", "png")], report.deployment_markdown(result),
                        report.deploy_file_list(paths))


def compare_view(model: Path, *, memory_mb: float = 3008, precision: str = "fp32", calibration: str = "auto",
                 prices: cost.CostInputs | None = None, saved_calibration: Path = DEFAULT_CACHE,
                 on_progress: Callable[[str, float | None], None] | None = None) -> ScenarioView:
    """A month of every built-in shape: the Serverless vs Server table and its chart."""
    figures = _calibration(model, int(memory_mb), precision, calibration, on_progress, saved_calibration)
    chosen = prices or cost.CostInputs()
    base = ScenarioConfig(traffic=COMPARE[0][1], duration_s=1.0, api_gateway=chosen.api_gateway,
                          prices=replace(chosen, memory_mb=int(memory_mb)))
    results = compare_shapes(figures, base, on_progress=on_progress)
    paths = report.write_compare(results, Path(tempfile.mkdtemp(prefix="scenario-compare-")))
    summary = report.compare_markdown(results) + "\n\n" + "\n".join(f"- **{r.name}**: {r.verdict}" for r in results)
    rows = pd.DataFrame([{"shape": r.name, **{f"lambda {k}": v for k, v in r.lambda_.to_dict().items()
                                              if k in ("requests", "p50_ms", "p99_ms", "cold_starts", "cost_per_month_usd")},
                          **{f"server {k}": v for k, v in r.server.to_dict().items()
                             if k in ("p50_ms", "p99_ms", "rejected", "peak_instances", "cost_per_month_usd")}}
                         for r in results])
    return ScenarioView(summary, report.compare_chart(results), rows, {"results": [r.to_dict() for r in results]},
                        [str(paths[k]) for k in ("markdown", "json", "png")])


def breakeven_view(model: Path, *, rates: str = DEFAULT_RATES, burstiness: float | None = None, rate: float | None = None,
                   memory_mb: float = 3008, precision: str = "fp32", calibration: str = "auto",
                   instance_type: str = cost.DEFAULT_INSTANCE_TYPE, prices: cost.CostInputs | None = None,
                   saved_calibration: Path = DEFAULT_CACHE,
                   on_progress: Callable[[str, float | None], None] | None = None) -> ScenarioView:
    """Which option at which rate (``scenario --breakeven``): every Lambda option and the fleet over the rates,
    steady and with ``burstiness`` (over 1), and the line for the user's ``rate``."""
    chosen = prices or cost.CostInputs()
    base = ScenarioConfig(traffic=Shape("spikes"), duration_s=1.0, api_gateway=chosen.api_gateway,
                          instance_type=instance_type or cost.DEFAULT_INSTANCE_TYPE,
                          prices=replace(chosen, memory_mb=int(memory_mb)))
    grid = parse_rates(rates or DEFAULT_RATES)
    figures = _calibration(model, int(memory_mb), precision, calibration, on_progress, saved_calibration)
    result = breakeven(figures, base, grid, burstiness=float(burstiness) if burstiness else None,
                       rate=float(rate) if rate else None, on_progress=on_progress)
    paths = breakeven_report.write_outputs(result, Path(tempfile.mkdtemp(prefix="breakeven-")))
    first = result.sweeps[0]
    rows = pd.DataFrame([{"rate_rps": r, "cheapest": first.names[first.cheapest[i]],
                          **{f"{first.names[k]} $/month": first.points[k][i].cost_per_month_usd for k in first.points},
                          **{f"{first.names[k]} p99 ms": first.points[k][i].p99_ms for k in first.points}}
                         for i, r in enumerate(first.rates)])
    return ScenarioView(breakeven_report.markdown(result), breakeven_report.figure(result), rows, result.to_dict(),
                        [str(paths[k]) for k in ("markdown", "json", "png")])


def priced(architecture: str, gb_second_usd: float | None, request_per_million: float, api_per_million: float,
           api_gateway: bool, cold_fraction: float | None = None) -> cost.CostInputs:
    """The Cost tab's price inputs as :class:`local.measure.cost.CostInputs` (its cold-start share is not
    used: the simulation counts cold starts)."""
    return cost.CostInputs(architecture=architecture, gb_second_usd=float(gb_second_usd) if gb_second_usd else None,
                           request_usd=float(request_per_million) / 1e6, api_request_usd=float(api_per_million) / 1e6,
                           api_gateway=bool(api_gateway))


def build_tab(ctx: Any, prices: Any = None) -> None:
    """The Scenario tab, under the app's ``gr.Blocks``; events ``scenario`` and ``scenario_compare``.
    ``ctx`` is the app's ``AppContext``; ``prices``, the Cost tab's price inputs (``gui.views.cost.Prices``)
    if the app has them, else AWS's defaults from :mod:`local.measure.cost`."""
    import gradio as gr

    from lambda_onnx.errors import ClassifierError
    from lambda_onnx.sidecar import int8_path

    price_inputs = prices.inputs() if prices is not None else []

    def model_for(precision: str) -> Path:
        return int8_path(ctx.model_path) if precision == "int8" else ctx.model_path

    def costs(architecture: str | None, *values: Any) -> cost.CostInputs | None:
        return priced(architecture, *values) if architecture else None

    # The Cost tab's prices come last, when the app passes them (gradio_client's keywords are these names).
    def simulate(shape: str, arrivals_file: str | None, rate: float, duration: str, memory_mb: float, precision: str,
                 idle_timeout_s: float, reserved: float | None, provisioned: float, instances: float | None,
                 workers: float | None, autoscale: bool, calibration: str, instance_type: str = cost.DEFAULT_INSTANCE_TYPE,
                 platform: str = "auto", architecture: str | None = None, gb_second_usd: float | None = None,
                 request_per_million: float = 0.0, api_per_million: float = 0.0, api_gateway: bool = True,
                 cold_fraction: float | None = None, progress: gr.Progress = gr.Progress()) -> tuple:
        chosen = costs(architecture, gb_second_usd, request_per_million, api_per_million, api_gateway)
        try:
            view = run_view(model_for(precision), shape=shape, arrivals_file=arrivals_file, rate=rate, duration=duration,
                            memory_mb=memory_mb, precision=precision, idle_timeout_s=idle_timeout_s,
                            reserved_concurrency=reserved, provisioned=provisioned, instances=instances, workers=workers,
                            autoscale=autoscale, calibration=calibration, instance_type=instance_type, platform=platform,
                            prices=chosen, on_progress=progress_callback(progress))
        except ClassifierError as exc:
            raise gr.Error(exc.message) from None
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return view.summary, view.figure, view.table, view.result, view.files, view.deployment, view.deploy_files or None

    def compare(memory_mb: float, precision: str, calibration: str, architecture: str | None = None,
                gb_second_usd: float | None = None, request_per_million: float = 0.0, api_per_million: float = 0.0,
                api_gateway: bool = True, cold_fraction: float | None = None, progress: gr.Progress = gr.Progress()) -> tuple:
        chosen = costs(architecture, gb_second_usd, request_per_million, api_per_million, api_gateway)
        try:
            view = compare_view(model_for(precision), memory_mb=memory_mb, precision=precision, calibration=calibration,
                                prices=chosen, on_progress=progress_callback(progress))
        except ClassifierError as exc:
            raise gr.Error(exc.message) from None
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return view.summary, view.figure, view.table, view.result, view.files, "", None

    def crossover(rate: float, rates: str, burstiness: float | None, memory_mb: float, precision: str, calibration: str,
                  instance_type: str = cost.DEFAULT_INSTANCE_TYPE, architecture: str | None = None,
                  gb_second_usd: float | None = None, request_per_million: float = 0.0, api_per_million: float = 0.0,
                  api_gateway: bool = True, cold_fraction: float | None = None, progress: gr.Progress = gr.Progress()) -> tuple:
        chosen = costs(architecture, gb_second_usd, request_per_million, api_per_million, api_gateway)
        try:
            view = breakeven_view(model_for(precision), rates=rates, burstiness=burstiness, rate=rate, memory_mb=memory_mb,
                                  precision=precision, calibration=calibration, instance_type=instance_type, prices=chosen,
                                  on_progress=progress_callback(progress))
        except ClassifierError as exc:
            raise gr.Error(exc.message) from None
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return view.summary, view.figure, view.table, view.result, view.files, "", None

    with gr.Tab("Scenario"):
        gr.Markdown(INTRO)
        with gr.Row():
            shape = gr.Dropdown([*SHAPES, FILE], value="diurnal", label="Traffic")
            arrivals = gr.File(label="Arrivals (CSV of seconds, API Gateway or ALB access log)", type="filepath")
            rate = gr.Number(2.0, minimum=0.0001, label="Requests per second (mean; sparse: 1 / interval)")
            duration = gr.Textbox("30d", label="Period (90s, 15m, 2h, 30d; a file: empty for all of it)")
        with gr.Row():
            memory = gr.Number(cost.CostInputs().memory_mb, precision=0, label="Lambda memory (MB)")
            precision = gr.Radio(["fp32", "int8"], value="fp32", label="Precision")
            idle = gr.Number(DEFAULT_IDLE_TIMEOUT_S, minimum=1, label="Idle timeout (s; not documented by AWS)")
            reserved = gr.Number(None, precision=0, label="Reserved concurrency (empty: account's 1,000)")
            provisioned = gr.Number(0, precision=0, minimum=0, label="Provisioned concurrency")
        with gr.Row():
            instances = gr.Number(None, precision=0, label="Server instances (empty: sized for the peak)")
            workers = gr.Number(None, precision=0, minimum=1, label="Lanes per instance (empty: one per vCPU)")
            instance_type = gr.Dropdown(list(cost.INSTANCE_TYPES), value=cost.DEFAULT_INSTANCE_TYPE,
                                        label="Instance type (c7i: 2 hyperthreads per core; c7a: a core per vCPU)")
            platform = gr.Radio(["auto", "ec2", "fargate"], value="auto", label="Fleet on (auto: the cheaper)")
            autoscale = gr.Checkbox(False, label="Autoscale (target tracking, boot delay)")
            calibration = gr.Radio(list(MEASURE_CHOICES), value="auto",
                                   label="Figures: latest measurements (auto), measure now (always), never measure")
        with gr.Row():
            run_button = gr.Button("Simulate", variant="primary")
            compare_button = gr.Button("Compare every built-in shape (a month each)")
        with gr.Row():
            rates = gr.Textbox(DEFAULT_RATES, label="Break-even rates LOW:HIGH:N (req/s, log-spaced; 1/3600 allowed)")
            burstiness = gr.Number(None, minimum=1, label="Burstiness: peak / mean (empty: steady only)")
            breakeven_button = gr.Button("Break-even: which option at which rate (your rate above)")
        summary = gr.Markdown()
        plot = gr.Plot(label="Over time / per shape (simulated)")
        rows = gr.Dataframe(label="Lambda against the server fleet")
        raw = gr.JSON(label="Everything (the --json keys)")
        files = gr.File(label="Markdown, JSON and PNG", file_count="multiple")
        deployment = gr.Markdown()
        deploy_files = gr.File(label="What to deploy: deployment.json, the ECS stack's parameters, the Kubernetes overlay",
                               file_count="multiple")
        outputs = [summary, plot, rows, raw, files, deployment, deploy_files]
        run_button.click(simulate, inputs=[shape, arrivals, rate, duration, memory, precision, idle, reserved, provisioned,
                                           instances, workers, autoscale, calibration, instance_type, platform,
                                           *price_inputs], outputs=outputs,
                         api_name="scenario")
        compare_button.click(compare, inputs=[memory, precision, calibration, *price_inputs], outputs=outputs,
                             api_name="scenario_compare")
        breakeven_button.click(crossover, inputs=[rate, rates, burstiness, memory, precision, calibration, instance_type,
                                                  *price_inputs], outputs=outputs, api_name="scenario_breakeven")
