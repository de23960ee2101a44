"""The power-tuning report as Markdown, JSON, a chart and the lines the CLI prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from local.measure.tune.config import METRICS
from local.measure.tune.results import TuneReport, format_ms


def markdown(report: TuneReport) -> str:
    """The report as Markdown: the EMULATED label, the machine, one table, the recommendation."""
    config, machine = report.config, report.machine
    p, metric = config["percentile"], config["metric"]
    prices = config["prices"]
    aws = {(r.precision, r.memory_mb): r for r in report.aws_results}
    lines = [
        "# Lambda power tuning (EMULATED)", "",
        f"> **{report.emulation_note}**", "",
        f"- machine: {machine.get('cpu', '?')} ({', '.join(machine.get('isa', []))}"
        f"{'' if machine.get('vnni') is None else '; VNNI' if machine.get('vnni') else '; no VNNI'}), "
        f"{machine.get('cpus')} CPUs ({machine.get('available_cpus')} usable), "
        f"{machine.get('memory_gb', '?')} GB, {machine.get('platform')}; {machine.get('cgroups')}; sizes above "
        f"{machine.get('max_full_share_mb')} MB get this machine's {machine.get('available_cpus')} CPUs, not Lambda's share",
        "- models: " + ", ".join(f"{k} `{v}`" for k, v in report.models.items()),
        f"- image: `{config['image']}` ({config['image_bytes'] / 1e3:,.0f} kB); 1 cold + {config['requests']} warm "
        f"invokes per configuration; latency = {config['metric_means']}",
        f"- prices: {prices['architecture']}, ${prices['gb_second_usd']:.10f}".rstrip("0")
        + f" per GB-s, ${prices['request_usd'] * 1e6:.2f} per million requests"
        + (f", API Gateway ${prices['api_request_usd'] * 1e6:.2f} per million" if prices["api_gateway"] else "")
        + f"; {prices['cold_start_fraction']:.1%} of requests cold (billed init phase); {prices['prices_date']}",
        f"- run {report.created}", "",
    ]
    head = ["precision", "memory MB", "vCPU (Lambda → here)", "threads", "cold round trip ms", "init phase ms",
            "p50 ms", "p90 ms", "p99 ms", "peak MB (cgroup / RSS)", "throttled periods (warm)", "INT8 kernel, canary",
            "$ per 1M", "status"]
    if aws:
        head[-1:-1] = ["AWS p50 / p90 ms", "AWS $ per 1M"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.results:
        w = r.warm.get(metric, {})
        throttled = r.throttling.get("warm") or r.throttling.get("total") or {}
        cpu = f"{r.lambda_cpus:.2f} → {r.cpus:.2f}" + (" (capped)" if r.cpu_capped else "")
        status = r.status if r.status == "ok" else f"**{r.status.upper()}**: {r.message}"
        if r.warnings:
            status += " ⚠ " + "; ".join(r.warnings)
        row = [r.precision, str(r.memory_mb), cpu, _cell(r.threads), _cell(r.cold_round_trip_ms), _cell(r.init_phase_ms),
               _cell(w.get("p50")), _cell(w.get("p90")), _cell(w.get("p99")),
               f"{_cell(r.memory_peak_mb)} / {_cell(r.peak_rss_mb)}",
               f"{throttled.get('nr_throttled', 0):.0f} / {throttled.get('nr_periods', 0):.0f}" if throttled else "–",
               f"{r.int8_kernel or '–'}, {r.canary or '–'}", _cell(r.cost_per_million_usd, money=True), status]
        if aws:
            real = aws.get((r.precision, r.memory_mb))
            row[-1:-1] = [f"{_cell(real.latency('p50'))} / {_cell(real.latency('p90'))}" if real else "–",
                          _cell(real.cost_per_million_usd, money=True) if real else "–"]
        if report.recommendation and report.recommendation.choice == r.key:
            row[0] = f"**{row[0]}** ⭐"
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Latency columns: warm {METRICS[metric]}. Throttled periods: CFS periods in which the function used up "
              "its CPU quota and waited (the cgroup's cpu.stat).", ""]
    rec = report.recommendation
    if rec is not None:
        budget = f"{p} ≤ {rec.budget_ms:g} ms" if rec.budget_ms is not None else "no latency budget"
        lines += [f"## Recommendation (emulated, {budget})", "", rec.text, ""]
    if report.aws_results:
        lines += [f"## Real AWS Lambda: `{config['function']}` ({config.get('region') or 'default region'})", "",
                  "| precision | memory MB | cold round trip ms | Init Duration ms | p50 ms | p90 ms | p99 ms | Max Memory Used MB "
                  "| $ per 1M | status |", "|" + "---|" * 10]
        for r in report.aws_results:
            w = r.warm.get("duration", {})
            lines.append(f"| {r.precision} | {r.memory_mb} | {_cell(r.cold_round_trip_ms)} | {_cell(r.init_phase_ms)} | "
                         f"{_cell(w.get('p50'))} | {_cell(w.get('p90'))} | {_cell(w.get('p99'))} | {_cell(r.memory_peak_mb)} | "
                         f"{_cell(r.cost_per_million_usd, money=True)} | {r.status if r.status == 'ok' else r.message} |")
        if report.aws_recommendation is not None:
            lines += ["", f"**On AWS:** {report.aws_recommendation.text}"]
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    lines += ["Chart: `tune.png` (latency and cost per million requests against memory size)", ""]
    return "\n".join(lines)


def _cell(value: float | int | None, money: bool = False) -> str:
    if value is None:
        return "–"
    if money:
        return f"${value:.2f}"
    return f"{value:.0f}" if isinstance(value, int) or abs(value) >= 100 else f"{value:.1f}"


def chart_rows(report: TuneReport) -> list[dict[str, Any]]:
    """One row per configuration (emulated and AWS) for :func:`local.charts.power_tuning`."""
    p, metric = report.config["percentile"], report.config["metric"]
    rows = []
    for r in [*report.results, *report.aws_results]:
        m = metric if r.source == "emulated" else "duration"
        rows.append({"source": r.source, "precision": r.precision, "memory_mb": r.memory_mb, "ok": r.ok, "status": r.status,
                     "p50": r.latency("p50", m), "percentile": r.latency(p, m), "cost": r.cost_per_million_usd,
                     "capped": r.cpu_capped})
    return rows


def write_outputs(report: TuneReport, out: Path, chart: Any = None) -> dict[str, Path]:
    """``tune.json``, ``tune.md`` and ``tune.png`` in ``out`` (``chart``: the report's
    :func:`figure` if the caller already drew it)."""
    from local.report import charts

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "tune.json", "markdown": out / "tune.md", "png": out / "tune.png"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    paths["png"].write_bytes(charts.to_png(chart if chart is not None else figure(report)))
    return paths


def figure(report: TuneReport) -> Any:
    """The report's chart (a matplotlib Figure): latency and cost against memory size."""
    from local.report import charts

    rec = report.recommendation
    return charts.power_tuning(chart_rows(report), percentile=report.config["percentile"], budget_ms=report.config["budget_ms"],
                               recommended=rec.chosen if rec else None,
                               title=f"EMULATED power tuning — {', '.join(Path(m).name for m in report.models.values())}")


def summary_lines(report: TuneReport) -> list[str]:
    """What the CLI prints at the end: the label, one line per configuration, the recommendation."""
    p, metric = report.config["percentile"], report.config["metric"]
    lines = [report.emulation_note, ""]
    for r in report.results:
        if r.ok:
            lines.append(f"  {r.key:>16}: p50 {format_ms(r.latency('p50', metric))}, {p} {format_ms(r.latency(p, metric))}, "
                         f"cold {format_ms(r.cold_round_trip_ms)}, {r.threads} thread(s), ${r.cost_per_million_usd:.2f}/M"
                         + (f", {r.int8_kernel}" if r.int8_kernel else "") + f", canary {r.canary or '–'}"
                         + (" (CPU capped)" if r.cpu_capped else "") + (" ⚠" if r.warnings else ""))
        else:
            lines.append(f"  {r.key:>16}: {r.status.upper()} — {r.message}")
    for r in report.aws_results:
        lines.append(f"  AWS {r.key:>12}: " + (f"p50 {format_ms(r.latency('p50'))}, {p} {format_ms(r.latency(p))}, "
                                               f"${r.cost_per_million_usd:.2f}/M" if r.ok else f"{r.status.upper()} — {r.message}"))
    if report.recommendation:
        lines += ["", "Recommendation (emulated): " + report.recommendation.text.replace("**", "")]
    if report.aws_recommendation:
        lines += ["Recommendation (AWS): " + report.aws_recommendation.text.replace("**", "")]
    return lines
