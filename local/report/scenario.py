"""Tables and charts of scenarios (Markdown, PNG through :func:`local.report.charts.to_png`).

(Issue 15 gathers every renderer under ``local/report/``; this module moves there with it.)
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.ticker

from local.defaults import SCENARIO_OUT
from local.measure.scenario.deployment import FleetDeployment
from local.measure.scenario.results import ScenarioResult, SideResult, TimeSeries, failed
from local.measure.scenario.traffic import format_duration
from local.report.charts import to_png

DEFAULT_OUT = SCENARIO_OUT
COLOURS = {"lambda": "C1", "server": "C0"}
NAMES = {"lambda": "Lambda", "server": "server fleet"}


def money(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 0.995 else f"${usd:.3f}" if usd >= 0.001 else f"${usd:.5f}"


def ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _count(value: int) -> str:
    return f"{value:,}"


def side_rows(result: ScenarioResult) -> list[tuple[str, str, str]]:
    """(figure, Lambda, server) rows of one scenario."""
    lam, srv = result.lambda_, result.server
    return [
        ("setup", lam.label, srv.label),
        ("requests", _count(lam.requests), _count(srv.requests)),
        ("p50 / p95 / p99", f"{ms(lam.p50_ms)} / {ms(lam.p95_ms)} / {ms(lam.p99_ms)}",
         f"{ms(srv.p50_ms)} / {ms(srv.p95_ms)} / {ms(srv.p99_ms)}"),
        ("cold starts", f"{lam.cold_starts:,} ({lam.cold_start_pct:.2g} %)", "none (always running)"),
        ("throttled (429) / rejected (503) / timed out (504)", f"{lam.throttled:,} / {lam.rejected:,} / {lam.timeouts:,}",
         f"{srv.throttled:,} / {srv.rejected:,} / {srv.timeouts:,}"),
        ("peak concurrency / peak environments or instances", f"{lam.peak_concurrency:,} / {lam.peak_instances:,}",
         f"{srv.peak_concurrency:,} / {srv.peak_instances:,}"),
        (f"cost for {format_duration(result.duration_s)}", money(lam.cost_usd), money(srv.cost_usd)),
        ("cost per month", money(lam.cost_per_month_usd), money(srv.cost_per_month_usd)),
    ]


def markdown(result: ScenarioResult) -> str:
    """One scenario: the two sides, the verdict, how it was simulated and where the figures came from."""
    lines = [f"### {result.name}: {_describe(result)}", "", f"**Verdict:** {result.verdict}", "",
             "| | Lambda | server fleet |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in side_rows(result)]
    lines += ["", f"Simulated: {result.method} ({format_duration(result.simulated_s)} simulated in {result.wall_s:.1f} s)."]
    sources = result.calibration.get("sources", {})
    if sources:
        lines += ["", "Figures used:"] + [f"- {key}: {text}" for key, text in sources.items()]
    assumptions = result.calibration.get("assumptions", {})
    if assumptions:
        lines += [f"- idle timeout {assumptions['idle_timeout_s']:g} s ({assumptions['idle_timeout_source']}); concurrency "
                  f"limit {assumptions['concurrency_limit']:,}; scaling: {assumptions['scaling']}; prices "
                  f"{assumptions['prices']}"]
        if "instance_type" in assumptions:
            lines += [f"- fleet: {assumptions['instance_type']} ({assumptions['instance_price_source']}); CPU layout: "
                      f"{assumptions['cpu_layout']}; this machine's service time carried to it with an SMT gain of "
                      f"{assumptions['smt_gain']:g} ({assumptions['smt_gain_source']}), at this machine's speed per core; "
                      f"Fargate: {assumptions['fargate_prices']}; load balancer: {assumptions['load_balancer_prices']}, "
                      f"{assumptions['request_bytes']:,} bytes a request"]
    notes = result.lambda_.notes + result.server.notes
    lines += [f"- {note}" for note in notes]
    if result.deployment:
        lines += ["", deployment_markdown(result)]
    return "\n".join(lines)


def deployment_markdown(result: ScenarioResult) -> str:
    """What to deploy on each side for this traffic, and what the server side's month is made of."""
    d, lam, money_of = result.deployment, result.lambda_deployment, result.server_cost
    where = (f"EC2 **{d['instance_type']}** ({d['vcpus']} vCPU, {d['memory_mib'] // 1024} GiB)" if d["platform"] == "ec2"
             else f"**Fargate** tasks of {d['vcpus']} vCPU and {d['memory_mib'] // 1024} GB")
    lines = ["#### What to deploy", "",
             f"- **Server**: {where}, {d['lanes']} lane(s) each; **{d['min_instances']} to {d['max_instances']}** "
             f"instances, target tracking at **{d['target_cpu_pct']:g} % CPU**; drain {d['drain_s']} s (the load "
             f"balancer's deregistration delay), {d['max_queue']} requests queued per instance; boot {d['boot_s']:g} s; "
             f"model {d['model']}."]
    if lam:
        extra = (f", {lam['provisioned']} provisioned" if lam.get("provisioned") else "") + (
            f", reserved concurrency {lam['reserved_concurrency']}" if lam.get("reserved_concurrency") else "")
        lines.append(f"- **Lambda**: {lam['memory_mb']} MB, {lam['precision']}, {lam['architecture']}{extra}"
                     f"{' behind an HTTP API' if lam.get('api_gateway') else ', invoked directly'}; peak concurrency "
                     f"{lam.get('peak_concurrency', 0):,}.")
    if money_of:
        other = "fargate" if money_of["platform"] == "ec2" else "ec2"
        lines.append(f"- **Server per month**: {money(money_of['instances'])} for the "
                     f"{'instances' if money_of['platform'] == 'ec2' else 'tasks'} + {money(money_of['load_balancer'])} "
                     f"for the Application Load Balancer (its LCUs mostly from "
                     f"{money_of['load_balancer_dominant'].replace('_', ' ')}) = **{money(money_of['total'])}**; on "
                     f"{'Fargate' if other == 'fargate' else 'EC2'} the same fleet would cost "
                     f"{money(money_of.get(f'{other}_per_month_usd', 0.0))} with the load balancer.")
    return "\n".join(lines)


def deployment_of(result: ScenarioResult) -> FleetDeployment | None:
    return FleetDeployment(**result.deployment) if result.deployment else None


def write_deploy_files(result: ScenarioResult, out: Path) -> dict[str, Path]:
    """``deployment.json`` (the record), and where the deploy writers are installed (the server image's
    ``local/report/deploy.py``) the ECS stack's parameters and the Kubernetes overlay made from it."""
    deployment = deployment_of(result)
    if deployment is None:
        return {}
    out.mkdir(parents=True, exist_ok=True)
    paths = {"deployment": out / "deployment.json"}
    paths["deployment"].write_text(json.dumps(result.deployment, indent=1) + "\n", encoding="utf-8")
    try:
        writers = importlib.import_module("local.report.deploy")
    except ImportError:  # a branch without the server image's deploy files
        return paths
    paths["ecs_parameters"] = out / "ecs-parameters.json"
    writers.write_ecs_parameters(deployment, paths["ecs_parameters"])
    paths["k8s_overlay"] = out / "k8s"
    writers.write_k8s_overlay(deployment, paths["k8s_overlay"])
    return paths


def deploy_file_list(paths: dict[str, Path]) -> list[str]:
    """Every file :func:`write_deploy_files` wrote (the overlay's directory opened), for a download."""
    files: list[str] = []
    for key in ("deployment", "ecs_parameters", "k8s_overlay"):
        path = paths.get(key)
        if path is not None and path.is_dir():
            files += [str(f) for f in sorted(path.rglob("*")) if f.is_file()]
        elif path is not None and path.is_file():
            files.append(str(path))
    return files


def compare_markdown(results: Sequence[ScenarioResult]) -> str:
    """The "Serverless vs Server" table of the PyTorch-on-Lambda project (ARCHITECTURE.md), with numbers:
    a month of each shape."""
    header = ["| traffic (a month of it) | requests | Lambda p50 / p99 | server p50 / p99 | Lambda cold starts | "
              "refused: Lambda / server | Lambda per month | server per month | cheaper |",
              "|---|---:|---|---|---:|---|---:|---:|---|"]
    rows = []
    for r in results:
        lam, srv = r.lambda_, r.server
        cheaper = "Lambda" if lam.cost_per_month_usd <= srv.cost_per_month_usd else "server"
        ratio = max(lam.cost_per_month_usd, srv.cost_per_month_usd) / max(min(lam.cost_per_month_usd,
                                                                              srv.cost_per_month_usd), 1e-9)
        what = r.traffic.get("summary") or r.traffic.get("description", "")
        rows.append(f"| **{r.name}**: {what} | {lam.requests:,} | {ms(lam.p50_ms)} / "
                    f"{ms(lam.p99_ms)} | {ms(srv.p50_ms)} / {ms(srv.p99_ms)} | {lam.cold_starts:,} "
                    f"({lam.cold_start_pct:.2g} %) | {failed(lam):,} / {failed(srv):,} | {money(lam.cost_per_month_usd)} | "
                    f"{money(srv.cost_per_month_usd)} ({srv.peak_instances} inst.) | **{cheaper}** ({ratio:.1f}x) |")
    return "\n".join(header + rows)


# --- charts --------------------------------------------------------------------------------------


def over_time(result: ScenarioResult) -> Any:
    """Arrivals, concurrency and instances, and latency (p50, p99) over the simulated period."""
    import matplotlib.pyplot as plt

    lam, srv = result.series["lambda"], result.series["server"]
    figure, (rate, size, latency) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    scale, unit = _time_unit(lam)
    x = [t / scale for t in lam.t_s]
    rate.step(x, lam.arrivals_per_s, where="post", color="grey")
    rate.set_ylabel(f"arrivals / s\n(mean of {series_bucket(lam)})")
    size.step(x, lam.concurrency, where="post", color=COLOURS["lambda"], label="Lambda: busy environments")
    size.step(x, lam.instances, where="post", color=COLOURS["lambda"], ls=":", label="Lambda: environments alive")
    size.step(x, srv.instances, where="post", color=COLOURS["server"], label="server: instances")
    size.step(x, srv.concurrency, where="post", color=COLOURS["server"], ls=":", label="server: busy workers")
    size.set_ylabel("peak in bucket")
    size.legend(fontsize=7, ncol=2)
    for series, side in ((lam, "lambda"), (srv, "server")):
        xs = [x[i] for i, v in enumerate(series.p99_ms) if v is not None]
        latency.plot(xs, [v for v in series.p99_ms if v is not None], color=COLOURS[side], lw=1, label=f"{NAMES[side]} p99")
        xs = [x[i] for i, v in enumerate(series.p50_ms) if v is not None]
        latency.plot(xs, [v for v in series.p50_ms if v is not None], color=COLOURS[side], lw=1, ls="--",
                     label=f"{NAMES[side]} p50")
    latency.set_yscale("log")
    latency.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    latency.set_ylabel("latency (ms)")
    latency.set_xlabel(f"time ({unit})")
    latency.legend(fontsize=7, ncol=2)
    for axes in (rate, size, latency):
        axes.grid(alpha=0.3)
    title = f"{result.name}: {_describe(result)}\n{result.verdict}".replace("$", r"\$")  # not mathtext
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def _describe(result: ScenarioResult) -> str:
    """The traffic in words, without repeating the scenario's name."""
    text = result.traffic.get("description", "")
    prefix = f"{result.name}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def series_bucket(series: TimeSeries) -> str:
    return format_duration(round(series.bucket_s, 3)) if series.bucket_s >= 1 else f"{series.bucket_s * 1000:.0f} ms"


def _time_unit(series: TimeSeries) -> tuple[float, str]:
    span = (series.t_s[-1] - series.t_s[0]) + series.bucket_s if series.t_s else 0
    return (3600.0, "h") if span > 3 * 3600 else (60.0, "min") if span > 180 else (1.0, "s")


def compare_chart(results: Sequence[ScenarioResult]) -> Any:
    """Cost per month and p99 per shape, both sides."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r.name for r in results]
    x = np.arange(len(results))
    figure, (money_axes, tail_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for offset, side in ((-0.2, "lambda"), (0.2, "server")):
        sides: list[SideResult] = [r.lambda_ if side == "lambda" else r.server for r in results]
        money_axes.bar(x + offset, [s.cost_per_month_usd for s in sides], 0.4, color=COLOURS[side], label=NAMES[side])
        tail_axes.bar(x + offset, [s.p99_ms or 0 for s in sides], 0.4, color=COLOURS[side], label=NAMES[side])
    money_axes.set_yscale("log")
    money_axes.set_ylabel("USD per month")
    tail_axes.set_ylabel("p99 latency (ms)")
    for axes, title in ((money_axes, "cost per month (log scale; lower is cheaper)"), (tail_axes, "p99 (lower is faster)")):
        axes.set_xticks(x, names)
        axes.set_title(title, fontsize=9)
        axes.grid(alpha=0.3, axis="y")
        axes.legend(fontsize=8)
    figure.suptitle("Serverless vs server, a month of each traffic shape (simulated, calibrated on this machine)", fontsize=10)
    figure.tight_layout()
    return figure


def write_outputs(result: ScenarioResult, out: Path = DEFAULT_OUT, stem: str | None = None) -> dict[str, Path]:
    """``<stem>.json`` (with the series), ``<stem>.md`` and ``<stem>.png`` (over time) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"scenario-{result.name}"
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["png"].write_bytes(to_png(over_time(result)))
    result.charts = {"over_time": str(paths["png"])}
    paths["json"].write_text(json.dumps(result.to_dict(with_series=True), indent=1) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(result) + "\n", encoding="utf-8")
    paths.update(write_deploy_files(result, out / f"{stem}-deploy"))
    return paths


def write_compare(results: Sequence[ScenarioResult], out: Path = DEFAULT_OUT) -> dict[str, Path]:
    """``compare.md``, ``compare.json`` and ``compare.png`` (plus each shape's own chart)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "compare.md", "json": out / "compare.json", "png": out / "compare.png"}
    for result in results:
        write_outputs(result, out)
    paths["png"].write_bytes(to_png(compare_chart(results)))
    paths["markdown"].write_text(compare_markdown(results) + "\n", encoding="utf-8")
    paths["json"].write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n", encoding="utf-8")
    return paths
