"""Scenario view: "which one wins for my traffic?", the simulation of ``python -m local scenario``.

Plain functions first (:func:`run_view`, :func:`compare_view`, :func:`breakeven_view`); :func:`build_tab` lays the tab out
under the app's ``gr.Blocks`` and names every event (``api_name``) for ``gradio_client``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from gui.access import Access, Limits, number, one_of, whole
from gui.uploads import read_arrivals as read_bounded
from lambda_onnx.errors import ClassifierError
from lambda_onnx.sidecar import int8_path
from local.lambda_env.elastic import DEFAULT_IDLE_TIMEOUT_S
from local.measure import cost
from local.measure.scenario.breakeven import (
    DEFAULT_RATES,
    DEFAULT_TARGET_REQUESTS,
    breakeven,
    bursty_shape,
    parse_rates,
    window_for,
)
from local.measure.scenario.calibrate import DEFAULT_CACHE, MEASURE_CHOICES, Calibration, calibrate
from local.measure.scenario.params import PLATFORMS
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
FLEET_PLATFORMS = ("auto", *PLATFORMS)  # auto: the cheaper for the traffic
RATES_CHARS = 60  # LOW:HIGH:N is short; a longer text is not parsed



def refused(exc: ClassifierError | ValueError) -> gr.Error:
    """A library's refusal as the tab's one-line error (a typed error's message, a ValueError's text)."""
    return gr.Error(exc.message if isinstance(exc, ClassifierError) else str(exc))

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
             instance_type: str = cost.DEFAULT_INSTANCE_TYPE, platform: str = "auto", prices: cost.CostInputs | None = None,
             saved_calibration: Path = DEFAULT_CACHE,
             on_progress: Callable[[str, float | None], None] | None = None, limits: Limits | None = None,
             out: Path | None = None) -> ScenarioView:
    """Simulate one scenario and build the view's outputs (written to ``out``, a new temporary folder by
    default). ValueError (and the library's typed errors) for bad inputs; a shape's other parameters are
    its defaults (the CLI offers them all). With ``limits`` (the app's), the arrivals file is read within them."""
    if shape == FILE:
        if not arrivals_file:
            raise ValueError("upload an arrivals file (CSV of seconds, API Gateway or ALB access log) first")
        if limits is not None:
            traffic: Shape | Any = read_bounded(arrivals_file, limits)
        else:
            traffic = read_arrivals(arrivals_file)
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
    paths = report.write_outputs(result, out or Path(tempfile.mkdtemp(prefix="scenario-")))
    return ScenarioView(report.markdown(result), report.over_time(result), table(result), result.to_dict(),
                        [str(paths[k]) for k in ("markdown", "json", "png")], report.deployment_markdown(result),
                        report.deploy_file_list(paths))


def compare_view(model: Path, *, memory_mb: float = 3008, precision: str = "fp32", calibration: str = "auto",
                 prices: cost.CostInputs | None = None, saved_calibration: Path = DEFAULT_CACHE,
                 on_progress: Callable[[str, float | None], None] | None = None, out: Path | None = None) -> ScenarioView:
    """A month of every built-in shape: the Serverless vs Server table and its chart (written to ``out``)."""
    figures = _calibration(model, int(memory_mb), precision, calibration, on_progress, saved_calibration)
    chosen = prices or cost.CostInputs()
    base = ScenarioConfig(traffic=COMPARE[0][1], duration_s=1.0, api_gateway=chosen.api_gateway,
                          prices=replace(chosen, memory_mb=int(memory_mb)))
    results = compare_shapes(figures, base, on_progress=on_progress)
    paths = report.write_compare(results, out or Path(tempfile.mkdtemp(prefix="scenario-compare-")))
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
                   on_progress: Callable[[str, float | None], None] | None = None, out: Path | None = None) -> ScenarioView:
    """Which option at which rate (``scenario --breakeven``): every Lambda option and the fleet over the rates,
    steady and with ``burstiness`` (over 1), and the line for the user's ``rate`` (written to ``out``)."""
    chosen = prices or cost.CostInputs()
    base = ScenarioConfig(traffic=Shape("spikes"), duration_s=1.0, api_gateway=chosen.api_gateway,
                          instance_type=instance_type or cost.DEFAULT_INSTANCE_TYPE,
                          prices=replace(chosen, memory_mb=int(memory_mb)))
    grid = parse_rates(rates or DEFAULT_RATES)
    figures = _calibration(model, int(memory_mb), precision, calibration, on_progress, saved_calibration)
    result = breakeven(figures, base, grid, burstiness=float(burstiness) if burstiness else None,
                       rate=float(rate) if rate else None, on_progress=on_progress)
    paths = breakeven_report.write_outputs(result, out or Path(tempfile.mkdtemp(prefix="breakeven-")))
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


def build_tab(ctx: Any, prices: Any = None, access: Access | None = None) -> None:
    """The Scenario tab, under the app's ``gr.Blocks``; events ``scenario``, ``scenario_compare`` and
    ``scenario_breakeven`` (every role's, each input bounded by ``access``'s limits, one run of the three at a time;
    files written to the app's scratch folder; a viewer's saved figures are a copy in the app's temporary folder).
    ``ctx`` is the app's ``AppContext``; ``prices``, the Cost tab's price inputs (``gui.views.cost.Prices``)
    if the app has them, else AWS's defaults from :mod:`local.measure.cost`."""
    access = access or Access()
    limits = access.limits
    price_inputs = prices.inputs() if prices is not None else []

    def model_for(precision: str) -> Path:
        return int8_path(ctx.model_path) if precision == "int8" else ctx.model_path

    def costs(architecture: str | None, *values: Any) -> cost.CostInputs | None:
        if not architecture:
            return None
        one_of(architecture, "architecture", tuple(cost.LAMBDA_GB_SECOND_USD))
        gb_second, per_request, per_api = (number(v or 0, "a price", 0, 1e6) for v in values[:3])
        return priced(architecture, gb_second or None, per_request, per_api, bool(values[3]))

    def saved() -> Path:
        """The saved figures this role reads and writes: the operator's own; a viewer's copy under the app's temporary
        folder (a measurement a viewer's run makes is kept there, not written over the operator's)."""
        if access.operator:
            return DEFAULT_CACHE
        copy = ctx.scratch.root / "_calibration" / DEFAULT_CACHE.name
        if not copy.exists():
            copy.parent.mkdir(exist_ok=True)
            if DEFAULT_CACHE.is_file():
                shutil.copyfile(DEFAULT_CACHE, copy)
        return copy

    def common(memory_mb: Any, precision: Any, calibration: Any) -> tuple[int, str, str]:
        return (whole(memory_mb, "Lambda memory (MB)", 128, 10_240), one_of(precision, "precision", ("fp32", "int8")),
                one_of(calibration, "figures", limits.calibrations))

    def period_of(text: Any, what: str) -> float:
        try:
            seconds = parse_duration(str(text))
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return number(seconds, what, 1, limits.scenario_period_s)

    def fleet_type(instance_type: Any) -> str:
        return one_of(instance_type, "instance type", tuple(cost.INSTANCE_TYPES))

    def bounded(shape: Any, rate: Any, duration: Any, idle_timeout_s: Any, reserved: Any, provisioned: Any,
                instances: Any, workers: Any, instance_type: Any, platform: Any) -> dict[str, Any]:
        """Every scenario input within this role's bounds (a one-line ``gr.Error`` names the first that is not)."""
        one_of(shape, "traffic", (*SHAPES, FILE))
        if shape != FILE:
            rate = number(rate, "requests per second", 1e-6, limits.scenario_rate)
            seconds = period_of(duration or "1d", "the period (s)")
            if rate * seconds > limits.scenario_requests:
                raise gr.Error(f"rate x period is {rate * seconds:,.0f} requests; at most {limits.scenario_requests:,.0f} "
                               "are simulated: lower the rate or shorten the period")
        elif duration and str(duration).strip():
            period_of(duration, "the period (s)")
        reserved = None if reserved in (None, "") else whole(reserved, "reserved concurrency", 1, limits.scenario_reserved)
        return {"rate": rate, "duration": duration,
                "idle_timeout_s": number(idle_timeout_s, "the idle timeout (s)", 1, 86_400),
                "reserved_concurrency": reserved,
                "provisioned": whole(provisioned or 0, "provisioned concurrency", 0, reserved or limits.scenario_reserved),
                "instances": None if instances in (None, "") else whole(instances, "server instances", 1,
                                                                        limits.scenario_instances),
                "workers": None if workers in (None, "") else whole(workers, "lanes per instance", 1,
                                                                    limits.scenario_workers),
                "instance_type": fleet_type(instance_type), "platform": one_of(platform, "fleet on", FLEET_PLATFORMS)}

    def sweep_bounded(rate: Any, rates: Any, burstiness: Any) -> tuple[float | None, str, float | None]:
        """The break-even's rates within this role's bounds: at most ``breakeven_points`` rates, and what the sweep
        simulates (every rate's window, steady and bursty) at most the scenario's ``scenario_requests``."""
        user = None if rate in (None, "", 0) else number(rate, "requests per second", 1e-6, limits.scenario_rate)
        text = DEFAULT_RATES if rates in (None, "") else rates
        if not isinstance(text, str) or len(text) > RATES_CHARS:
            raise gr.Error("rates are LOW:HIGH:N, e.g. 1/3600:500:25 (requests per second)")
        try:
            grid = parse_rates(text)
        except (ValueError, OverflowError) as exc:
            raise gr.Error(str(exc) if isinstance(exc, ValueError) else "rates are LOW:HIGH:N, e.g. 1/3600:500:25") from None
        if len(grid) > limits.breakeven_points:
            raise gr.Error(f"at most {limits.breakeven_points} rates in one break-even, not {len(grid)}")
        peak = None if burstiness in (None, "") else number(burstiness, "burstiness (peak / mean)", 1, 1_000)
        simulated = 0.0
        for kind in [1.0] + ([peak] if peak and peak > 1 else []):
            for each in {*grid, *((user,) if user else ())}:
                try:
                    shape = bursty_shape(each, kind)
                except ValueError as exc:
                    raise gr.Error(str(exc)) from None
                simulated += each * window_for(shape, DEFAULT_TARGET_REQUESTS)
        if simulated > limits.scenario_requests:
            raise gr.Error(f"these rates simulate about {simulated:,.0f} requests per option; at most "
                           f"{limits.scenario_requests:,.0f}: lower the highest rate or use fewer rates")
        return user, text, peak

    # The Cost tab's prices come last, when the app passes them (gradio_client's keywords are these names).
    def simulate(request: gr.Request, shape: str, arrivals_file: str | None, rate: float, duration: str, memory_mb: float, precision: str,
                 idle_timeout_s: float, reserved: float | None, provisioned: float, instances: float | None,
                 workers: float | None, autoscale: bool, calibration: str, instance_type: str = cost.DEFAULT_INSTANCE_TYPE,
                 platform: str = "auto", architecture: str | None = None, gb_second_usd: float | None = None,
                 request_per_million: float = 0.0, api_per_million: float = 0.0, api_gateway: bool = True,
                 cold_fraction: float | None = None, progress: gr.Progress = gr.Progress()) -> tuple:
        with access.work(request):
            memory, precision, calibration = common(memory_mb, precision, calibration)
            inputs = bounded(shape, rate, duration, idle_timeout_s, reserved, provisioned, instances, workers,
                             instance_type, platform)
            chosen = costs(architecture, gb_second_usd, request_per_million, api_per_million, api_gateway)
            try:
                view = run_view(model_for(precision), shape=shape, arrivals_file=arrivals_file, memory_mb=memory,
                                precision=precision, autoscale=bool(autoscale), calibration=calibration, prices=chosen,
                                saved_calibration=saved(), on_progress=progress_callback(progress), limits=limits,
                                out=ctx.scratch.folder("scenario-"), **inputs)
            except (ClassifierError, ValueError) as exc:
                raise refused(exc) from None
        return view.summary, view.figure, view.table, view.result, view.files, view.deployment, view.deploy_files or None

    def compare(request: gr.Request, memory_mb: float, precision: str, calibration: str, architecture: str | None = None,
                gb_second_usd: float | None = None, request_per_million: float = 0.0, api_per_million: float = 0.0,
                api_gateway: bool = True, cold_fraction: float | None = None, progress: gr.Progress = gr.Progress()) -> tuple:
        with access.work(request):
            memory, precision, calibration = common(memory_mb, precision, calibration)
            chosen = costs(architecture, gb_second_usd, request_per_million, api_per_million, api_gateway)
            try:
                view = compare_view(model_for(precision), memory_mb=memory, precision=precision, calibration=calibration,
                                    prices=chosen, saved_calibration=saved(), on_progress=progress_callback(progress),
                                    out=ctx.scratch.folder("scenario-compare-"))
            except (ClassifierError, ValueError) as exc:
                raise refused(exc) from None
        return view.summary, view.figure, view.table, view.result, view.files, "", None

    def crossover(request: gr.Request, rate: float | None, rates: str, burstiness: float | None, memory_mb: float,
                  precision: str, calibration: str, instance_type: str = cost.DEFAULT_INSTANCE_TYPE,
                  architecture: str | None = None, gb_second_usd: float | None = None, request_per_million: float = 0.0,
                  api_per_million: float = 0.0, api_gateway: bool = True, cold_fraction: float | None = None,
                  progress: gr.Progress = gr.Progress()) -> tuple:
        with access.work(request):
            memory, precision, calibration = common(memory_mb, precision, calibration)
            user, grid, peak = sweep_bounded(rate, rates, burstiness)
            chosen = costs(architecture, gb_second_usd, request_per_million, api_per_million, api_gateway)
            try:
                view = breakeven_view(model_for(precision), rates=grid, burstiness=peak, rate=user, memory_mb=memory,
                                      precision=precision, calibration=calibration, instance_type=fleet_type(instance_type),
                                      prices=chosen, saved_calibration=saved(), on_progress=progress_callback(progress),
                                      out=ctx.scratch.folder("breakeven-"))
            except (ClassifierError, ValueError) as exc:
                raise refused(exc) from None
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
            platform = gr.Radio(list(FLEET_PLATFORMS), value="auto", label="Fleet on (auto: the cheaper)")
            autoscale = gr.Checkbox(False, label="Autoscale (target tracking, boot delay)")
            calibration = gr.Radio(list(limits.calibrations), value="auto",
                                   label="Figures: latest measurements (auto), measure now (always), never measure")
        with gr.Row():
            run_button = gr.Button("Simulate", variant="primary")
            compare_button = gr.Button("Compare every built-in shape (a month each)")
        with gr.Row():
            rates = gr.Textbox(DEFAULT_RATES, max_length=RATES_CHARS,
                               label="Break-even rates LOW:HIGH:N (req/s, log-spaced; 1/3600 allowed; "
                                     f"at most {limits.breakeven_points} rates)")
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
                         api_name="scenario", concurrency_limit=1, concurrency_id="scenario")
        # One simulation at a time, whoever asks (a calibration may measure both sides first).
        compare_button.click(compare, inputs=[memory, precision, calibration, *price_inputs], outputs=outputs,
                             api_name="scenario_compare", concurrency_limit=1, concurrency_id="scenario")
        # The break-even simulates every option at every rate: bounded above, and in the same one-at-a-time queue.
        breakeven_button.click(crossover, inputs=[rate, rates, burstiness, memory, precision, calibration, instance_type,
                                                  *price_inputs], outputs=outputs, api_name="scenario_breakeven",
                               concurrency_limit=1, concurrency_id="scenario")
