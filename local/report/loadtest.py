"""The load test's report rendered: Markdown (the machine, the medians over rounds, the goals, the
ceilings), a PNG chart of goodput against the ceiling, and the files written."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from local.measure.core.machine import describe_machine
from local.measure.core.stats import percent
from local.measure.loadtest import GOAL_CEILING, LOCAL, LoadtestReport, goals, median_of, summary


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(report: LoadtestReport) -> str:
    """The report as Markdown: the machine, one table of medians over the rounds, the goals, the ceilings."""
    m, s = report.machine, report.settings
    lines = [
        "# Load test: `local serve` at capacity and at overload" + (", with its peers" if s["peers"] else ""),
        "",
        f"{m['when']}, **{describe_machine(m)}**; load average {m['load_average_before']} before; "
        f"{', '.join(f'{k} {v}' for k, v in m['versions'].items())}.",
        f"Load: {report.generator}, closed loop, {s['connections']} and {s['overload_connections']} connections for "
        f"{s['seconds']:g} s each after {s['warmup_s']:g} s of warm-up, a {s['image_bytes'] / 1e3:.0f} kB JPEG (1 MP) as the "
        f"raw body; {s['rounds']} round(s), the servers alternating within each. Every server gets the same split of "
        f"the CPUs: {s['lanes']} lane(s) (processes or replicas for the peers) x {s['threads_per_lane']} inference "
        f"thread(s); servers: {', '.join(s['versions'].values())}.",
        "The ceiling is the CPUs over the CPU time of one request in process at one thread, measured before and after "
        "each model's runs in every round (the ratios use the mean of the two); every ratio is taken within a round, "
        "then the median over rounds is shown.",
        "",
        "| model | server | connections | answers/s | goodput/s | x ceiling | overload / capacity | p50 ms | p99 ms "
        "| answers by status | server CPU | others' CPU | local serve x (goodput, p99) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in summary(report):
        statuses = ", ".join(f"{n} x {k}" for k, n in r["statuses"].items()) or "none"
        if r["socket_errors"]:
            statuses += "; socket errors " + ", ".join(f"{n} {k}" for k, n in r["socket_errors"].items())
        versus = f"{_x(r.get('local_goodput_x'))}, {_x(r.get('local_p99_x'))}" if r["target"] != LOCAL else ""
        lines.append(f"| {r['model']} | {r['target']} | {r['connections']} | {r['requests_per_s']:.1f} | "
                     f"{r['goodput_rps']:.1f} | **{_x(r['ratio'])}** | {_x(r.get('of_capacity')) if r['phase'] == 'overload' else ''} | "
                     f"{_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | {statuses} | {percent(r['server_cpu'])} | "
                     f"{percent(r['others_cpu'])} | {versus} |")
    lines += ["", "Goals (issue 14):", ""]
    for g in goals(report):
        extra = f", p99 x {_x(g['p99_x'])}" if g.get("p99_x") is not None else ""
        lines.append(f"- {'met' if g['met'] else '**not met**'}: {g['model']}, {g['goal']}: {_x(g['value'])}{extra}")
    lines += ["", "| round | model | CPU ms per request (in process, 1 thread): before / after the servers | mean | "
              "ceiling answers/s |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {c['round']} | {c['model']} | {c['before_ms']:.1f} / {c['after_ms']:.1f} | "
              f"{c['cpu_ms']:.1f} | {c['rps']:.1f} |" for c in report.ceilings]
    if report.batches:
        sizes = list(report.batches[0]["cpu_ms_per_image"])
        lines += ["", "Batching: inference CPU per image at one thread, x batch 1 within the round (median over rounds):",
                  "", "| model | " + " | ".join(f"batch {size}" for size in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        for model in dict.fromkeys(b["model"] for b in report.batches):
            mine = [b["cpu_ms_per_image"] for b in report.batches if b["model"] == model]
            cells = [f"{median_of([b[size] for b in mine]):.1f} ms (x{median_of([b[size] / b[sizes[0]] for b in mine]):.2f})"
                     for size in sizes]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    mismatched = [r for r in report.runs if not r.top1_matches]
    lines += ["", f"Top-1 answers: {len(report.runs) - len(mismatched)} of {len(report.runs)} server runs gave the "
              "in-process top-1." + "".join(f" {r.target} ({r.model}, round {r.round}) said {r.top1!r}." for r in mismatched)]
    starts: dict[str, list[float]] = {}
    for run in report.runs:
        starts.setdefault(run.target, []).append(run.start_s)
    lines.append("Start to first answer: " + "; ".join(f"{t} {statistics.median(v):.1f} s" for t, v in starts.items()) + ".")
    lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def chart(report: LoadtestReport) -> Any:
    """Goodput as a multiple of the ceiling per model, one colour per server, hatched at overload
    (medians over rounds), with the goal drawn in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary(report)
    models = list(dict.fromkeys(r["model"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    series = list(dict.fromkeys((r["target"], r["phase"], r["connections"]) for r in rows))
    colours = {t: plt.get_cmap("tab10")(i) for i, t in enumerate(targets)}
    figure, axes = plt.subplots(figsize=(max(7.0, 2.8 * len(models) + 2.5), 4.4))
    width = 0.8 / max(1, len(series))
    for i, (target, phase, connections) in enumerate(series):
        values = [next((r["ratio"] or 0 for r in rows if (r["model"], r["target"], r["phase"]) == (m, target, phase)), 0)
                  for m in models]
        bars = axes.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(models))], values, width,
                        color=colours[target], edgecolor="white", hatch="///" if phase == "overload" else None,
                        label=f"{target}, {connections} connections")
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    axes.axhline(GOAL_CEILING, color="grey", linestyle="--", linewidth=1)
    axes.text(-0.45, GOAL_CEILING, f"goal {GOAL_CEILING:.2f}", va="bottom", ha="left", fontsize=7, color="grey")
    axes.set_ylim(0, max(1.05, max((r["ratio"] or 0) for r in rows) + 0.1) if rows else 1.05)
    axes.set_xticks(range(len(models)), models, fontsize=8)
    axes.set_ylabel("goodput / in-process ceiling")
    axes.set_title(f"{report.machine['cpu']}, {report.machine['available_cpus']:g} CPUs\ngoodput against the in-process ceiling "
                   f"(median of {report.settings['rounds']} round(s))", fontsize=9)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return figure


def write_outputs(report: LoadtestReport, out_dir: str | Path) -> dict[str, Path]:
    """``loadtest.md``, ``loadtest.json`` and ``loadtest.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "loadtest.md", "json": out / "loadtest.json", "chart": out / "loadtest.png"}
    paths["markdown"].write_text(markdown(report))
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2))
    figure = chart(report)
    figure.savefig(paths["chart"], dpi=120)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return paths
