"""A one-file HTML report of a monitor run: charts embedded, tables, the raw samples as CSV."""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lambda_onnx.sidecar import RANDOM_WEIGHTS_WARNING
from local.measure.monitor import MonitorRun, MonitorSettings
from local.report import charts

# The rule: a model with random weights is labelled loudly on every view, a shared report included.
RANDOM_WEIGHTS_NOTE = html.escape(RANDOM_WEIGHTS_WARNING).replace("RANDOM WEIGHTS", "<strong>RANDOM WEIGHTS</strong>", 1)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>no samples</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{'' if v is None else html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def monitor_figures(run: MonitorRun) -> tuple[Any, Any]:
    """The run's two charts: latency over time (cold starts marked) and the histogram."""
    samples = run.samples
    return charts.latency_over_time(samples, run.backends), charts.latency_histogram(samples, run.backends)


def answered_on(samples: list) -> list[dict[str, Any]]:
    """One row per backend x CPU that answered: how many answers, with which INT8 kernel and canary."""
    rows: dict[tuple[str, str, str, str], int] = {}
    for sample in samples:
        if sample.cpu:
            key = (sample.backend, sample.cpu, sample.int8_kernel or "–", sample.canary or "–")
            rows[key] = rows.get(key, 0) + 1
    return [{"backend": b, "cpu": c, "int8 kernel": k, "canary": v, "answers": n} for (b, c, k, v), n in sorted(rows.items())]


def _stop_text(settings: MonitorSettings) -> str:
    if settings.requests is not None:
        return f"{settings.requests} requests per backend"
    if settings.duration_s is not None:
        return f"{settings.duration_s:g} s"
    return "when stopped"


def settings_rows(settings: MonitorSettings | Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The run's settings as a reader wants them: named in words, every row filled in.

    A plain mapping (a caller's own notes) is shown too, but only its filled-in values that are not
    functions: a namespace's handlers and unset options are the command line's business, not the reader's.
    """
    if settings is None:
        return []
    if isinstance(settings, MonitorSettings):
        pairs = [("backends", ", ".join(settings.backends)), ("model", settings.model), ("photo", settings.photo),
                 ("seconds between a worker's requests", f"{settings.interval_s:g}"),
                 ("concurrency", f"{settings.concurrency} worker(s) per backend"), ("stop after", _stop_text(settings))]
    else:
        pairs = [(k, v) for k, v in settings.items() if v is not None and v != "" and not callable(v)]
    return [{"setting": str(k), "value": str(v)} for k, v in pairs]


def monitor_html(run: MonitorRun, title: str = "Monitor run", settings: MonitorSettings | Mapping[str, Any] | None = None,
                 figures: tuple[Any, Any] | None = None, csv_text: str | None = None) -> str:
    """Everything needed to keep or share the run, in one self-contained HTML document
    (``figures`` and ``csv_text``: the run's, if the caller already made them). With
    :class:`~local.measure.monitor.MonitorSettings` of a random-weights model it says so first."""
    samples = run.samples
    over_time, histogram = (charts.to_data_uri(f) for f in (figures or monitor_figures(run)))
    csv_text = run.csv_text() if csv_text is None else csv_text
    csv_uri = "data:text/csv;base64," + base64.b64encode(csv_text.encode()).decode()
    made = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    random_weights = isinstance(settings, MonitorSettings) and settings.random_weights
    warning = f'<p class="random-weights">⚠️ {RANDOM_WEIGHTS_NOTE}</p>' if random_weights else ""
    rows = settings_rows(settings)
    settings_html = f"<h2>Settings</h2>\n{_table(rows)}" if rows else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{background:#f3f3f3}}img{{max-width:100%}}
.random-weights{{background:#fff3cd;border:2px solid #c0392b;padding:.6em 1em;font-size:1.15em}}</style></head><body>
<h1>{html.escape(title)}</h1>
{warning}
<p>Made {made}. {len(samples)} requests. Round-trip times are measured by the client; percentiles over successful requests.</p>
{settings_html}
<h2>Where the answers were computed</h2>
{_table(answered_on(samples))}
<h2>Summary</h2>
{_table([asdict(s) for s in run.stats()])}
<h2>Latency over time</h2><img alt="latency over time" src="{over_time}">
<h2>Distribution</h2><img alt="latency histogram" src="{histogram}">
<h2>Raw samples</h2><p><a download="samples.csv" href="{csv_uri}">samples.csv</a></p>
</body></html>
"""


def write_monitor_outputs(run: MonitorRun, folder: Path, settings: MonitorSettings | Mapping[str, Any] | None = None,
                          figures: tuple[Any, Any] | None = None) -> tuple[Path, Path]:
    """``samples.csv`` and the one-file ``report.html`` of a finished run in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = folder / "samples.csv", folder / "report.html"
    csv_text = run.csv_text()
    csv_path.write_text(csv_text)
    html_path.write_text(monitor_html(run, "Monitor run", settings, figures, csv_text))
    return csv_path, html_path
