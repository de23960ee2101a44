"""The Gradio app: plain functions first (gui/compare.py, local/*), the layout under ``gr.Blocks``.

Every event has an ``api_name`` so scripts and tests can drive it with ``gradio_client``.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from gui import compare as cmp
from gui import tune as tuning
from gui.context import AppContext
from lambda_onnx.errors import ClassifierError
from lambda_onnx.limits import MAX_IMAGE_BYTES
from lambda_onnx.preprocess import decode
from lambda_onnx.cpu import cpu_info
from local import charts, cost, photos
from local.images import downscale_to_fit
from local.monitor import MonitorRun, start_monitor
from local.report import monitor_figures, write_monitor_outputs
from local.targets import serverless_backend

EXAMPLES = photos.available(photos.EVALUATION)
_RUNS: dict[str, MonitorRun] = {}  # monitor runs by browser session, so Stop stops only your own
_RUNS_LOCK = threading.Lock()


def _model_label(ctx: AppContext) -> str:
    try:
        return ctx.sidecar().label
    except ClassifierError as exc:
        return f"not ready ({exc.message})"


def _header(ctx: AppContext) -> str:
    return (f"# resnet-serverless\nOne ONNX model, two ways to serve it. **Model:** {_model_label(ctx)}  \n"
            f"**Server:** {ctx.targets.server_label} · **Serverless:** {ctx.targets.serverless_label}  \n"
            f"**This machine's CPU:** {cpu_info().describe()} (each answer below names the CPU that computed it)")


def _models_beside(path: Path) -> list[str]:
    """Exported models next to ``path`` (fp32, INT8, other archs): the ones with a sidecar."""
    folder = Path(path).parent
    found = sorted(str(p) for p in folder.glob("*.onnx") if p.with_suffix(".json").is_file() and ".partial" not in p.name)
    return found or [str(path)]


def _describe_upload(path: str | None) -> tuple[Any, str, Any]:
    """Preview (decoded upright, HEIC too), a size line, and whether to offer the downscale."""
    if not path:
        return None, "", gr.Button(visible=False)
    data = Path(path).read_bytes()
    try:
        decoded = decode(data, max_bytes=max(len(data), MAX_IMAGE_BYTES))
    except ClassifierError as exc:
        return None, f"❌ {exc.message} ({exc.status})", gr.Button(visible=False)
    line = f"{decoded.format} {decoded.width}×{decoded.height}, {len(data) / 1e3:,.0f} kB"
    if len(data) > MAX_IMAGE_BYTES:
        return decoded.image, (f"⚠️ {line}: over the {MAX_IMAGE_BYTES / 1e6:.2f} MB that fit in one Lambda invoke "
                               "(6 MiB payload, base64 adds a third). Downscale it to send it."), gr.Button(visible=True)
    return decoded.image, f"✅ {line}: fits the serverless limit ({MAX_IMAGE_BYTES / 1e6:.2f} MB)", gr.Button(visible=False)


def build_app(ctx: AppContext) -> gr.Blocks:
    """The whole app for one context; tests call this and launch with ``prevent_thread_lock``."""

    # ---- plain functions bound to this context -------------------------------------------------

    def banner_updates() -> list[Any]:
        text = ctx.banner()
        return [gr.Markdown(text, visible=bool(text)) for _ in banners]

    def compare(path: str | None) -> tuple:
        try:
            data = cmp.read(path)
            cmp.check_size(data)
            backends = [ctx.server(), ctx.serverless()]
        except ClassifierError as exc:
            raise gr.Error(exc.message) from None
        outcomes = cmp.classify_both(backends, data)
        if all(o.result is None for o in outcomes):
            gr.Warning("neither backend answered: " + "; ".join(f"{o.name}: {o.error}" for o in outcomes))
        random = ctx.banner() != ""
        labels = [gr.Label(cmp.label_value(o), label=f"{o.name} — top-5" + (" (RANDOM WEIGHTS: meaningless)" if random else ""))
                  for o in outcomes]
        return (labels[0], cmp.facts_markdown(outcomes[0]), labels[1], cmp.facts_markdown(outcomes[1]),
                cmp.agreement_markdown(outcomes), cmp.breakdown_figure(outcomes), cmp.summary(outcomes))

    def downscale(path: str | None) -> str:
        if not path:
            raise gr.Error("choose an image first")
        try:
            smaller = downscale_to_fit(Path(path).read_bytes())
        except ClassifierError as exc:
            raise gr.Error(exc.message) from None
        out = Path(tempfile.mkdtemp(prefix="downscaled-")) / (Path(path).stem + "-downscaled.jpg")
        out.write_bytes(smaller)
        gr.Info(f"downscaled to {len(smaller) / 1e3:,.0f} kB")
        return str(out)

    def cold_start() -> str:
        try:
            message = ctx.restart_serverless()
        except ClassifierError as exc:
            raise gr.Error(exc.message) from None
        gr.Info(message)
        return message

    def monitor(which: list[str], interval: float, mode: str, count: float, duration: float, concurrency: float,
                photo: str, request: gr.Request, progress: gr.Progress = gr.Progress()):
        if not which:
            raise gr.Error("choose at least one backend")
        data = photos.by_name(photo).read()
        n = int(concurrency)
        owned = []  # backends made for this run, closed at the end
        try:
            backends = []
            if "server" in which:
                backends.append(ctx.server())
            if "serverless" in which:
                if ctx.targets.serverless_is_aws:
                    backends.append(ctx.serverless())
                else:  # a fresh pool of n emulators: n environments, n cold starts, as on Lambda
                    owned.append(serverless_backend(ctx.targets, pool=n))
                    backends.append(owned[-1])
        except ClassifierError as exc:
            raise gr.Error(exc.message) from None
        by_count = mode == "request count"
        run = start_monitor(backends, data, interval_s=float(interval), concurrency=n,
                            requests=int(count) if by_count else None, duration_s=None if by_count else float(duration))
        with _RUNS_LOCK:
            _RUNS[request.session_hash] = run
        try:
            while True:
                finished = run.finished.wait(1.0)
                samples = run.samples
                if by_count:
                    progress((len(samples), run.planned), desc="requests", unit="requests")
                else:
                    progress(min(1.0, (samples[-1].t_s if samples else 0) / max(float(duration), 1e-9)), desc="time")
                stats = pd.DataFrame([asdict(s) for s in run.stats()])
                errors = sum(not s.ok for s in samples)
                status = f"{'Finished' if finished else 'Running'}: {len(samples)} requests, {errors} errors"
                if finished:
                    break
                yield (status, charts.latency_over_time(samples, run.backends), charts.latency_histogram(samples, run.backends),
                       stats, None, None)
            settings = {"backends": ", ".join(run.backends), "interval_s": interval, "concurrency": n,
                        "stop": f"{int(count)} requests" if by_count else f"{duration} s", "photo": photo,
                        "model": _model_label(ctx)}
            figures = monitor_figures(run)
            csv_path, html_path = write_monitor_outputs(run, Path(tempfile.mkdtemp(prefix="monitor-")), settings, figures)
            yield (status + (" (stopped)" if run.stop.is_set() else ""), *figures, stats, str(csv_path), str(html_path))
        finally:
            run.stop.set()
            for backend in owned:
                backend.close()
            with _RUNS_LOCK:
                if _RUNS.get(request.session_hash) is run:
                    del _RUNS[request.session_hash]

    def stop(request: gr.Request) -> str:
        with _RUNS_LOCK:
            run = _RUNS.get(request.session_hash)
        if run is None:
            return "nothing is running"
        run.stop.set()
        return "stopping…"

    def cost_compare(memory_mb: float, architecture: str, warm_ms: float, init_ms: float, cold_fraction: float,
                     api_gateway: bool, gb_second_usd: float, request_per_million: float, api_per_million: float,
                     server_hourly: float, server_rps: float, utilisation: float) -> tuple:
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
        volumes = cost.log_volumes()
        rows = cost.curve(inputs, volumes)
        table = pd.DataFrame(cost.curve(inputs, [1e5, 1e6, 1e7, 1e8]))
        return text, charts.cost_curve(rows, crossover), table, result.to_dict()

    def last_serverless_answer(summary: dict | None) -> dict:
        """The serverless side's answer to the last compare click, or a visible error saying why not."""
        if not summary:
            raise gr.Error("classify an image in the Compare view first")
        serverless = next((v for v in summary.values() if v.get("kind") == "serverless" and "metrics" in v), None)
        if serverless is None:
            raise gr.Error("the last compare click has no serverless answer")
        return serverless

    def measured(summary: dict | None, server_rps: float) -> tuple:
        """Fill the cost inputs from the last compare click."""
        serverless = last_serverless_answer(summary)
        m = serverless["metrics"]
        return (m.get("memory_mb") or ctx.targets.emulator_memory_mb, m["handler_ms"], m["init_ms"], server_rps)

    def throughput() -> float:
        from local.monitor import run_monitor

        data = photos.by_name("chelsea").read()
        run = run_monitor([ctx.server()], data, interval_s=0, requests=24, concurrency=2)
        ok = [s for s in run.samples if s.ok]
        if not ok:
            raise gr.Error("the server did not answer")
        elapsed = max(s.t_s + s.round_trip_ms / 1e3 for s in ok)
        rps = round(len(ok) / elapsed, 2)
        gr.Info(f"server throughput: {rps} requests/s ({len(ok)} requests, 2 clients)")
        return rps

    def aws_lookup(summary: dict | None, function_name: str) -> str:
        from gui.aws import lookup_markdown

        serverless = last_serverless_answer(summary)
        name = function_name or ctx.targets.lambda_function or serverless.get("function_name")
        return lookup_markdown(region=ctx.targets.region, function_name=name, request_id=serverless.get("request_id"),
                               trace_id=serverless.get("trace_id"))

    def switch_model(path: str) -> tuple:
        """Serve another exported model (e.g. the INT8 one) on both sides: the same artifact on each."""
        if not path or Path(path) == ctx.model_path:
            return (_header(ctx), *banner_updates())
        previous = ctx.model_path
        ctx.use_model(Path(path))
        try:
            label = ctx.sidecar().label
            ctx.server()  # loads the model here and runs its canary on this CPU: a model that fails it is not served
        except ClassifierError as exc:
            ctx.use_model(previous)
            raise gr.Error(f"{Path(path).name} is not served: {exc.message}") from None
        gr.Info(f"both sides now serve {label}; the next serverless request is a cold start")
        return (_header(ctx), *banner_updates())

    def setup(choice: str, progress: gr.Progress = gr.Progress()) -> tuple:
        from gui.setup import export_for_app

        ready, message = export_for_app(ctx, choice, progress)
        return (gr.Markdown(message), gr.Row(visible=not ready), gr.Column(visible=not ready), gr.Tabs(visible=ready),
                _header(ctx), *banner_updates(),
                gr.Dropdown(_models_beside(ctx.model_path), value=str(ctx.model_path), visible=ready))

    def tune(sizes: str, requests: float, budget_ms: float | None, percentile: str, precisions: list[str], function: str,
             architecture: str, gb_second_usd: float, request_per_million: float, api_per_million: float, api_gateway: bool,
             cold_fraction: float, progress: gr.Progress = gr.Progress()) -> tuple:
        try:
            view = tuning.run_view(ctx.model_path, sizes=sizes, requests=requests, budget_ms=budget_ms, percentile=percentile,
                                   precisions=precisions, architecture=architecture, gb_second_usd=gb_second_usd,
                                   request_usd_per_million=request_per_million, api_usd_per_million=api_per_million,
                                   api_gateway=api_gateway, cold_fraction=cold_fraction, function=function,
                                   region=ctx.targets.region, on_progress=tuning.progress_callback(progress))
        except ClassifierError as exc:
            raise gr.Error(exc.message) from None
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return view.summary, view.figure, view.table, view.files

    # ---- layout ---------------------------------------------------------------------------------

    with gr.Blocks(title="resnet-serverless: server vs serverless") as demo:
        header = gr.Markdown(_header(ctx))
        share_note = gr.Markdown(ctx.share_status, visible=bool(ctx.share_status))
        banners: list[gr.Markdown] = []
        model_choice = gr.Dropdown(_models_beside(ctx.model_path), value=str(ctx.model_path), label="Model (both sides)",
                                   allow_custom_value=True, visible=ctx.model_ready(), elem_id="model-choice")
        setup_message = gr.Markdown("" if ctx.model_ready() else f"No model at `{ctx.model_path}` yet: exporting it (pretrained weights)…")
        with gr.Column(visible=not ctx.model_ready()) as setup_column:
            with gr.Row(visible=False) as fallback_row:
                lite0_button = gr.Button("Export EfficientNet-Lite0 (real ImageNet weights, works offline)", variant="primary")
                random_button = gr.Button("Export ResNet-50 with RANDOM weights (predictions meaningless)", variant="stop")
        with gr.Tabs(visible=ctx.model_ready()) as tabs:
            with gr.Tab("Compare"):
                banners.append(gr.Markdown(ctx.banner(), visible=bool(ctx.banner())))
                with gr.Row():
                    with gr.Column(scale=1):
                        image_file = gr.File(label="Image (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, AVIF)", type="filepath",
                                             file_types=["image", ".heic", ".heif", ".avif"], elem_id="image-file")
                        preview = gr.Image(label="What the model sees (upright)", type="pil", interactive=False, height=240)
                        size_note = gr.Markdown()
                        gr.Examples(examples=[[str(p.path)] for p in EXAMPLES], inputs=[image_file],
                                    example_labels=[p.name for p in EXAMPLES], label="Example photos (shipped in installed packages)")
                        with gr.Row():
                            classify_button = gr.Button("Classify on both", variant="primary", elem_id="classify")
                            downscale_button = gr.Button("Downscale to fit", visible=False)
                            cold_button = gr.Button("Force a cold start (serverless)")
                        cold_note = gr.Markdown()
                    with gr.Column(scale=2):
                        with gr.Row():
                            with gr.Column():
                                server_label = gr.Label(num_top_classes=5, label=f"Server: {ctx.targets.server_label}",
                                                        elem_id="server-top5")
                                server_facts = gr.Markdown()
                            with gr.Column():
                                serverless_label = gr.Label(num_top_classes=5, label=f"Serverless: {ctx.targets.serverless_label}",
                                                            elem_id="serverless-top5")
                                serverless_facts = gr.Markdown()
                        agreement = gr.Markdown()
                        breakdown = gr.Plot(label="Where the time went", elem_id="breakdown")
                        with gr.Accordion("Raw results", open=False):
                            raw = gr.JSON()
            with gr.Tab("Monitor"):
                banners.append(gr.Markdown(ctx.banner(), visible=bool(ctx.banner())))
                gr.Markdown("The reference project's one-hour CloudWatch run (a request every 30 s), done here: pick the "
                            "pace and length. On the emulator, concurrency N runs a pool of N environments, so cold "
                            "starts show as on Lambda; on the server it is N parallel clients.")
                with gr.Row():
                    monitor_backends = gr.CheckboxGroup(["server", "serverless"], value=["server", "serverless"], label="Backends")
                    monitor_photo = gr.Dropdown([p.name for p in EXAMPLES], value=EXAMPLES[0].name if EXAMPLES else None,
                                                label="Photo")
                    monitor_interval = gr.Number(2.0, minimum=0, label="Seconds between a worker's requests")
                    monitor_concurrency = gr.Slider(1, 4, value=1, step=1, label="Concurrency")
                with gr.Row():
                    monitor_mode = gr.Radio(["request count", "duration"], value="request count", label="Stop after")
                    monitor_count = gr.Number(20, minimum=1, precision=0, label="Requests per backend")
                    monitor_duration = gr.Number(60, minimum=1, label="Duration (s)")
                with gr.Row():
                    monitor_start = gr.Button("Start", variant="primary")
                    monitor_stop = gr.Button("Stop", variant="stop")
                monitor_status = gr.Markdown()
                monitor_time = gr.Plot(label="Latency over time (cold starts ringed)")
                monitor_hist = gr.Plot(label="Distribution")
                monitor_stats = gr.Dataframe(label="Per backend (ms, successful requests)")
                with gr.Row():
                    monitor_csv = gr.File(label="Raw samples (CSV)")
                    monitor_html_file = gr.File(label="One-file HTML report")
            with gr.Tab("Cost"):
                banners.append(gr.Markdown(ctx.banner(), visible=bool(ctx.banner())))
                gr.Markdown(f"Serverless cost from measured durations against servers. Defaults: {cost.PRICES_DATE}.")
                defaults = cost.CostInputs()
                with gr.Row():
                    cost_memory = gr.Number(ctx.targets.emulator_memory_mb, precision=0, label="Lambda memory (MB)")
                    cost_arch = gr.Radio(["x86_64", "arm64"], value=defaults.architecture, label="Architecture")
                    cost_warm = gr.Number(defaults.warm_duration_ms, label="Warm duration (ms)")
                    cost_init = gr.Number(defaults.init_ms, label="Billed INIT per cold start (ms)")
                    cost_cold = gr.Number(defaults.cold_start_fraction, minimum=0, maximum=1, label="Share of requests that are cold")
                with gr.Row():
                    cost_api = gr.Checkbox(defaults.api_gateway, label="Behind API Gateway (HTTP API)")
                    cost_gbs = gr.Number(cost.gb_second_price(defaults), label="USD per GB-second")
                    cost_req = gr.Number(defaults.request_usd * 1e6, label="USD per million Lambda requests")
                    cost_apireq = gr.Number(defaults.api_request_usd * 1e6, label="USD per million API requests")
                with gr.Row():
                    cost_hourly = gr.Number(defaults.server_hourly_usd, label="Server USD per hour")
                    cost_rps = gr.Number(defaults.server_throughput_rps, label="Server throughput (requests/s, measured)")
                    cost_util = gr.Number(defaults.server_utilisation, minimum=0.05, maximum=1, label="Plan servers at this utilisation")
                with gr.Row():
                    cost_fill = gr.Button("Use figures measured in Compare")
                    cost_measure = gr.Button("Measure server throughput")
                    cost_button = gr.Button("Compare costs", variant="primary")
                cost_text = gr.Markdown()
                cost_plot = gr.Plot(label="Monthly cost against volume")
                cost_table = gr.Dataframe(label="At a few volumes (USD per month)")
                cost_json = gr.JSON(visible=False)
            with gr.Tab("Tune"):
                gr.Markdown(tuning.INTRO)
                with gr.Row():
                    tune_sizes = gr.Textbox(tuning.SIZES_TEXT, label="Memory sizes (MB)")
                    tune_requests = gr.Number(tuning.DEFAULT_REQUESTS, minimum=1, precision=0, label="Warm requests per size")
                    tune_budget = gr.Number(None, minimum=0, label="Latency budget (ms; empty: none)")
                    tune_percentile = gr.Radio(list(tuning.PERCENTILES), value="p90", label="Budget applies to")
                    tune_precisions = gr.CheckboxGroup(list(tuning.PRECISIONS), value=list(tuning.PRECISIONS), label="Precisions")
                tune_function = gr.Textbox(ctx.targets.lambda_function or "", visible=ctx.targets.serverless_is_aws,
                                           label="Real function to sweep too (its memory is changed, then restored)")
                tune_button = gr.Button("Sweep memory sizes", variant="primary")
                tune_summary = gr.Markdown()
                tune_plot = gr.Plot(label="Latency and cost against memory size (EMULATED)")
                tune_table = gr.Dataframe(label="Per configuration (EMULATED)")
                tune_files = gr.File(label="tune.md, tune.json, tune.png", file_count="multiple")
            with gr.Tab("AWS", visible=ctx.targets.serverless_is_aws):
                gr.Markdown("X-Ray and CloudWatch Logs for the exact request just made (matched by its trace id and "
                            "request id). Traces arrive late: the look-up retries a few times.")
                aws_function = gr.Textbox(ctx.targets.lambda_function or "", label="Function name (for its log group)")
                aws_button = gr.Button("Look up the last serverless request")
                aws_result = gr.Markdown()
        last = gr.State()

        # ---- events -------------------------------------------------------------------------------
        image_file.change(_describe_upload, inputs=image_file, outputs=[preview, size_note, downscale_button],
                          api_name="describe")
        classify_button.click(compare, inputs=image_file,
                              outputs=[server_label, server_facts, serverless_label, serverless_facts, agreement, breakdown, raw],
                              api_name="compare").then(lambda summary: summary, inputs=raw, outputs=last, api_visibility="private")
        downscale_button.click(downscale, inputs=image_file, outputs=image_file, api_name="downscale")
        cold_button.click(cold_start, outputs=cold_note, api_name="cold_start")
        monitor_start.click(
            monitor, inputs=[monitor_backends, monitor_interval, monitor_mode, monitor_count, monitor_duration,
                             monitor_concurrency, monitor_photo],
            outputs=[monitor_status, monitor_time, monitor_hist, monitor_stats, monitor_csv, monitor_html_file],
            api_name="monitor")
        monitor_stop.click(stop, outputs=monitor_status, api_name="monitor_stop")
        cost_inputs = [cost_memory, cost_arch, cost_warm, cost_init, cost_cold, cost_api, cost_gbs, cost_req, cost_apireq,
                       cost_hourly, cost_rps, cost_util]
        cost_button.click(cost_compare, inputs=cost_inputs, outputs=[cost_text, cost_plot, cost_table, cost_json], api_name="cost")
        cost_arch.change(lambda arch: cost.LAMBDA_GB_SECOND_USD[arch], inputs=cost_arch, outputs=cost_gbs, api_visibility="private")
        cost_fill.click(measured, inputs=[last, cost_rps], outputs=[cost_memory, cost_warm, cost_init, cost_rps],
                        api_name="cost_from_compare")
        cost_measure.click(throughput, outputs=cost_rps, api_name="server_throughput")
        aws_button.click(aws_lookup, inputs=[last, aws_function], outputs=aws_result, api_name="aws_trace")
        tune_button.click(tune, inputs=[tune_sizes, tune_requests, tune_budget, tune_percentile, tune_precisions, tune_function,
                                        cost_arch, cost_gbs, cost_req, cost_apireq, cost_api, cost_cold],
                          outputs=[tune_summary, tune_plot, tune_table, tune_files], api_name="tune")
        model_choice.change(switch_model, inputs=model_choice, outputs=[header, *banners], api_name="switch_model")
        setup_outputs = [setup_message, fallback_row, setup_column, tabs, header, *banners, model_choice]
        if not ctx.model_ready():
            demo.load(lambda p=gr.Progress(): setup("default", p), outputs=setup_outputs, api_visibility="private")
        lite0_button.click(lambda p=gr.Progress(): setup("efficientnet_lite0", p), outputs=setup_outputs, api_name="setup_lite0")
        random_button.click(lambda p=gr.Progress(): setup("random", p), outputs=setup_outputs, api_name="setup_random")
        demo.load(lambda: gr.Markdown(ctx.share_status, visible=bool(ctx.share_status)), outputs=share_note,
                  api_visibility="private")
    return demo
