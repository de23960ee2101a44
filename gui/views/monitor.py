"""Monitor tab: the reference project's one-hour CloudWatch run, done here, with a chosen pace and length.

The run itself is :func:`local.measure.monitor.start_monitor`, the one ``python -m local monitor`` runs;
both describe it with a :class:`~local.measure.monitor.MonitorSettings` and write the same CSV and report.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from gui.access import Access, number, one_of, some_of, whole
from gui.context import AppContext
from gui.views.banner import random_banner
from lambda_onnx import photos
from lambda_onnx.errors import ClassifierError
from local.clients.base import Backend
from local.clients.targets import serverless_backend
from local.measure.monitor import MonitorRun, MonitorSettings, model_facts, start_monitor
from local.report import charts
from local.report.monitor import monitor_figures, write_monitor_outputs

BY_COUNT = "request count"
MODES = (BY_COUNT, "duration")
BACKENDS = ("server", "serverless")
INTRO = ("The reference project's one-hour CloudWatch run (a request every 30 s), done here: pick the pace and length. "
         "On the emulator, concurrency N runs a pool of N environments, so cold starts show as on Lambda; on the server "
         "it is N parallel clients.")


class RunRegistry:
    """The monitor run of each browser session, so that Stop stops only your own.

    One per app (:func:`build_tab` makes it), not a module global: two apps in one process (the
    tests launch several) keep their runs apart.
    """

    def __init__(self) -> None:
        self._runs: dict[str | None, MonitorRun] = {}
        self._lock = threading.Lock()

    def add(self, session: str | None, run: MonitorRun) -> None:
        with self._lock:
            self._runs[session] = run

    def get(self, session: str | None) -> MonitorRun | None:
        with self._lock:
            return self._runs.get(session)

    def forget(self, session: str | None, run: MonitorRun) -> None:
        with self._lock:
            if self._runs.get(session) is run:
                del self._runs[session]


# ---- plain functions ------------------------------------------------------------------------------


def backends_for(ctx: AppContext, which: list[str], concurrency: int) -> tuple[list[Backend], list[Backend]]:
    """The backends a run sends to, and those of them made for this run only (the caller closes them)."""
    owned: list[Backend] = []
    backends: list[Backend] = []
    try:
        if "server" in which:
            backends.append(ctx.server())
        if "serverless" in which:
            if ctx.targets.serverless_is_aws:
                backends.append(ctx.serverless())
            else:  # a fresh pool of n emulators: n environments, n cold starts, as on Lambda
                owned.append(serverless_backend(ctx.targets, pool=concurrency))
                backends.append(owned[-1])
    except ClassifierError as exc:
        for backend in owned:
            backend.close()
        raise gr.Error(exc.message) from None
    return backends, owned


def monitor(ctx: AppContext, runs: RunRegistry, session: str | None, which: list[str], interval: float, mode: str, count: float,
            duration: float, concurrency: float, photo: str,
            progress: Callable[..., Any] = lambda *args, **kwargs: None, access: Access | None = None,
            folder: Path | None = None) -> Iterator[tuple]:
    """Run and show a monitor run: status, the two charts and the table while it runs, then the CSV and the report
    (written to ``folder``, a temporary one). Every input is checked against ``access``'s bounds first; a
    viewer's run never reaches AWS."""
    access = access or Access()
    limits = access.limits
    which = some_of(which, "backends", BACKENDS)
    if not which:
        raise gr.Error("choose at least one backend")
    if "serverless" in which and ctx.targets.serverless_is_aws and not access.operator:
        raise gr.Error("monitoring AWS spends the host's money: the operator's; a viewer monitors the server")
    photo = one_of(photo, "photo", [p.name for p in photos.available(photos.EVALUATION)])
    by_count = one_of(mode, "stop after", MODES) == BY_COUNT
    interval = number(interval, "the interval (s)", limits.monitor_min_interval_s, limits.monitor_max_interval_s)
    n = whole(concurrency, "concurrency", 1, limits.monitor_concurrency)
    if by_count:
        count = whole(count, "requests per backend", 1, limits.monitor_requests)
    else:
        duration = number(duration, "the duration (s)", 1, limits.monitor_duration_s)
    try:
        data = photos.by_name(photo).read()
    except (KeyError, FileNotFoundError) as exc:
        raise gr.Error(str(exc.args[0])) from None
    backends, owned = backends_for(ctx, which, n)
    model, random_weights = model_facts(ctx.model_path)
    settings = MonitorSettings(backends=tuple(b.name for b in backends), model=model, random_weights=random_weights,
                               photo=photo, interval_s=float(interval), concurrency=n,
                               requests=int(count) if by_count else None, duration_s=None if by_count else float(duration))
    try:
        run = start_monitor(backends, data, interval_s=settings.interval_s, concurrency=settings.concurrency,
                            requests=settings.requests, duration_s=settings.duration_s)
    except ValueError as exc:  # a negative interval or concurrency 0, sent through the API
        for backend in owned:
            backend.close()
        raise gr.Error(str(exc)) from None
    runs.add(session, run)
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
        figures = monitor_figures(run)
        csv_path, html_path = write_monitor_outputs(run, folder or ctx.scratch.folder("monitor-"), settings, figures)
        yield (status + (" (stopped)" if run.stop.is_set() else ""), *figures, stats, str(csv_path), str(html_path))
    finally:
        run.stop.set()
        for backend in owned:
            backend.close()
        runs.forget(session, run)


def stop(runs: RunRegistry, session: str | None) -> str:
    """Stop this session's run, if it has one."""
    run = runs.get(session)
    if run is None:
        return "nothing is running"
    run.stop.set()
    return "stopping…"


# ---- the tab --------------------------------------------------------------------------------------


def build_tab(ctx: AppContext, access: Access) -> gr.Markdown:
    """The Monitor tab, under the app's ``gr.Blocks``; events ``monitor`` and ``monitor_stop`` (every role's, each
    bounded by ``access``: a viewer's runs are short and local). Returns its banner."""
    runs = RunRegistry()
    examples = photos.available(photos.EVALUATION)

    # The events' parameter names are their API's (gradio_client's keywords).
    def on_monitor(which: list[str], interval: float, mode: str, count: float, duration: float, concurrency: float,
                   photo: str, request: gr.Request, progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:
        with access.work(request):
            yield from monitor(ctx, runs, request.session_hash, which, interval, mode, count, duration, concurrency, photo,
                               progress, access)

    def on_stop(request: gr.Request) -> str:
        return stop(runs, request.session_hash)

    with gr.Tab("Monitor"):
        banner = random_banner(ctx)
        gr.Markdown(INTRO)
        with gr.Row():
            backends = gr.CheckboxGroup(list(BACKENDS), value=list(BACKENDS), label="Backends")
            photo = gr.Dropdown([p.name for p in examples], value=examples[0].name if examples else None, label="Photo")
            interval = gr.Number(2.0, minimum=access.limits.monitor_min_interval_s, maximum=access.limits.monitor_max_interval_s,
                                 label="Seconds between a worker's requests")
            concurrency = gr.Slider(1, access.limits.monitor_concurrency, value=1, step=1, label="Concurrency")
        with gr.Row():
            mode = gr.Radio([BY_COUNT, "duration"], value=BY_COUNT, label="Stop after")
            count = gr.Number(20, minimum=1, maximum=access.limits.monitor_requests, precision=0,
                              label="Requests per backend")
            duration = gr.Number(60, minimum=1, maximum=access.limits.monitor_duration_s, label="Duration (s)")
        with gr.Row():
            start_button = gr.Button("Start", variant="primary")
            stop_button = gr.Button("Stop", variant="stop")
        status = gr.Markdown()
        over_time = gr.Plot(label="Latency over time (cold starts ringed)")
        histogram = gr.Plot(label="Distribution")
        stats = gr.Dataframe(label="Per backend (ms, successful requests)")
        with gr.Row():
            csv_file = gr.File(label="Raw samples (CSV)")
            html_file = gr.File(label="One-file HTML report")

    # Two runs at once, whoever starts them (each may hold a pool of emulators); the rest wait in the queue.
    start_button.click(on_monitor, inputs=[backends, interval, mode, count, duration, concurrency, photo],
                       outputs=[status, over_time, histogram, stats, csv_file, html_file], api_name="monitor",
                       concurrency_limit=2)
    stop_button.click(on_stop, outputs=status, api_name="monitor_stop")
    return banner
