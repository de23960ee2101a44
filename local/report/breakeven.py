"""The break-even chart, table and JSON: every option's monthly cost and p99 against the request rate, with the
rates where the cheapest one changes marked and written out (:mod:`local.measure.scenario.breakeven`)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
from matplotlib.figure import Figure

from local.measure.scenario.breakeven import BreakevenResult, Sweep, money, ms_text, rate_text
from local.report.charts import to_png

NAMES = {"png": "breakeven.png", "markdown": "breakeven.md", "json": "breakeven.json"}
COLOURS = {"x86-image": "C1", "arm64-image": "C2", "zip-snapstart": "C4", "provisioned": "C3", "ec2": "C0", "fargate": "C9"}
STYLES = ("-", "--", ":")


def figure(result: BreakevenResult) -> Figure:
    """Two panels against the request rate (log): monthly cost (log) and p99 (log); one curve per option, steady
    solid, bursty dashed; the crossovers of the first sweep marked."""
    fig, (money_axes, p99_axes) = plt.subplots(2, 1, figsize=(9, 8.5), sharex=True)
    for s, sweep in enumerate(result.sweeps):
        style = STYLES[s % len(STYLES)]
        for n, (key, points) in enumerate(sweep.points.items()):
            colour = COLOURS.get(key, f"C{n % 10}")
            rates = [p.rate_rps for p in points]
            money_axes.plot(rates, [p.cost_per_month_usd for p in points], style, color=colour, lw=1.6,
                            label=sweep.names[key] if s == 0 else None)
            if key == "fargate" and "ec2" in sweep.points:
                continue  # the same fleet, the same simulated latencies: one p99 curve for both platforms
            p99_axes.plot(rates, [p.p99_ms or float("nan") for p in points], style, color=colour, lw=1.6,
                          marker="." if s == 0 else None)
        for crossover in sweep.crossovers:
            for axes in (money_axes, p99_axes):
                axes.axvline(crossover.rate_rps, color="0.5", ls=style, lw=0.8)
            money_axes.annotate(rate_text(crossover.rate_rps), (crossover.rate_rps, 1.0), xycoords=("data", "axes fraction"),
                                xytext=(3, -12 - 11 * s), textcoords="offset points", fontsize=8, color="0.3")
    money_axes.set(xscale="log", yscale="log", ylabel="USD per month")
    money_axes.set_title("Which option at which rate: monthly cost (simulated; crossovers marked)", fontsize=11)
    p99_axes.set(xscale="log", yscale="log", ylabel="p99 latency (ms)", xlabel="mean request rate (requests per second)")
    p99_axes.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    p99_axes.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: ms_text(value)))
    p99_axes.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    money_axes.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
        lambda value, _: f"${value:,.0f}" if value >= 1 else f"${value:g}"))
    for axes in (money_axes, p99_axes):
        axes.grid(True, which="both", alpha=0.25)
        axes.spines[["top", "right"]].set_visible(False)
    money_axes.legend(fontsize=8, ncol=2, frameon=False)
    kinds = ", ".join(f"{name}: {s.traffic}" for name, s in zip(("solid", "dashed", "dotted"), result.sweeps))
    p99_axes.text(0.01, 0.98, kinds + " (the fleet's p99 is the same on EC2 and Fargate)", transform=p99_axes.transAxes,
                  fontsize=8, va="top", color="0.3")
    fig.tight_layout()
    return fig


def table(sweep: Sweep) -> list[str]:
    """Markdown rows: per rate, each option's month and p99, the cheapest in bold."""
    keys = list(sweep.points)
    lines = ["| rate | " + " | ".join(sweep.names[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for i, rate in enumerate(sweep.rates):
        cells = []
        for key in keys:
            point = sweep.points[key][i]
            cell = f"{money(point.cost_per_month_usd)}, p99 {ms_text(point.p99_ms)}"
            if point.instances:
                cell += f" ({point.instances})"
            if point.refused_pct:
                cell += f", {point.refused_pct:g} % refused"
            cells.append(f"**{cell}**" if key == sweep.cheapest[i] else cell)
        lines.append(f"| {rate_text(rate)} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: BreakevenResult) -> str:
    lines = ["### Break-even: which option at which rate", ""]
    for sweep in result.sweeps:
        lines += [f"**{sweep.traffic}:** {sweep.words}."]
        if sweep.crossovers:
            lines += ["", "Crossovers: " + "; ".join(
                f"{rate_text(c.rate_rps)} ({sweep.names[c.below]} to {sweep.names[c.above]}, between the simulated "
                f"{rate_text(c.between[0])} and {rate_text(c.between[1])})" for c in sweep.crossovers)]
        lines.append("")
    if result.asked_rate is not None:
        lines += [f"- {line}" for line in result.lines_at(result.asked_rate)] + [""]
    for sweep in result.sweeps:
        lines += [f"#### Per month and p99, {sweep.traffic} (cheapest in bold; the fleet's size in brackets)", ""]
        lines += table(sweep) + [""]
    fleet = result.fleet
    lines += ["Options:"] + [f"- **{o['name']}**: {o['architecture']}, {o['package']}"
                             + (", SnapStart" if o["snapstart"] else "")
                             + (", provisioned concurrency sized per rate" if o["provisioned"] is None else
                                f", {o['provisioned']} provisioned" if o["provisioned"] else "") for o in result.options]
    lines += [f"- **the fleet**: {fleet['instance_type']}, on {' and '.join(fleet['platforms'])}, target "
              f"{fleet['target_utilisation']:.0%} busy, " + ("behind an Application Load Balancer" if fleet["load_balancer"]
                                                              else "no load balancer") + f", SMT gain {fleet['smt_gain']:g}"]
    lines += ["", "Assumptions:"] + [f"- {text}" for text in result.assumptions]
    sources = result.calibration.get("sources", {})
    if sources:
        lines += ["", f"Figures ({result.calibration.get('model', '')}, {result.calibration.get('memory_mb')} MB):"]
        lines += [f"- {key}: {text}" for key, text in sources.items()]
    lines += ["", f"Simulated in {result.wall_s:.0f} s."]
    return "\n".join(lines)


def write_outputs(result: BreakevenResult, out: Path) -> dict[str, Path]:
    """``breakeven.png``, ``breakeven.md`` and ``breakeven.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in NAMES.items()}
    paths["png"].write_bytes(to_png(figure(result)))
    paths["markdown"].write_text(markdown(result) + "\n", encoding="utf-8")
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths
