"""The replay's validation rendered: simulated against measured as Markdown, each request's latency as a
chart, and the files written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.ticker
import numpy as np

from local.measure.replay import Validation
from local.report.charts import to_png
from local.report.scenario import COLOURS, DEFAULT_OUT, NAMES, ms


def _sides(settings: dict[str, Any]) -> str:
    """What each side replayed was, in words."""
    s = settings
    parts = []
    if s.get("lambda", True):
        parts.append(f"Lambda = elastic emulator ({s.get('memory_mb')} MB, idle timeout {s.get('idle_timeout_s'):g} s, "
                     f"at most {s.get('max_concurrency')} environments)")
    fleet = s.get("fleet")
    if s.get("server") == "fleet" and fleet:
        shape = (f"autoscaled 1..{fleet['instances']} at {fleet['target']:.0%} CPU, evaluation every "
                 f"{fleet['evaluation_s']:g} s, scale-in cooldown {fleet['cooldown_s']:g} s" if fleet["autoscale"]
                 else f"{fleet['instances']} instances")
        parts.append(f"server = `local fleet` ({shape}; {s.get('lanes_per_instance')} lane(s) and queue "
                     f"{s.get('server_queue')} per instance, behind HAProxy)")
    else:
        parts.append(f"server = `local serve` ({s.get('server_workers')} worker(s), queue {s.get('server_queue')})")
    return ", ".join(parts)


def validation_markdown(validation: Validation) -> str:
    """The validation table (Markdown)."""
    s = validation.settings
    lines = [f"Replay of {validation.scenario}: {s.get('requests', '?')} requests over {s.get('duration_s', 0):.0f} s, sent "
             f"open loop; {_sides(s)}. Simulated {s.get('seeds')} times with figures measured just before.",
             "", "| side | figure | simulated | measured | goal | met |", "|---|---|---:|---:|---|:---:|"]
    for c in validation.checks:
        sim = "n/a" if c.simulated is None else f"{c.simulated:.1f}" if c.metric.endswith("_ms") else f"{c.simulated:g}"
        if c.simulated_range and c.simulated_range[0] != c.simulated_range[1]:
            sim += f" ({c.simulated_range[0]:g}–{c.simulated_range[1]:g})"
        real = "n/a" if c.measured is None else f"{c.measured:.1f}" if c.metric.endswith("_ms") else f"{c.measured:g}"
        met = "✓" if c.ok else "✗ (within the simulated range)" if c.within_range else "✗"
        lines.append(f"| {c.side} | {c.metric} | {sim} | {real} | {c.goal} | {met} |")
    late = validation.lateness_ms
    other = s.get("other_cpus") or {}
    if other:
        lines += ["", "Other processes on this machine used " + " and ".join(
            f"{cpus:.2f} CPUs during the {side} replay" for side, cpus in other.items() if cpus is not None) + "."]
    lines += ["", "Requests went out " + "; ".join(f"{k}: p50 {v['p50']:.1f} ms, p99 {v['p99']:.1f} ms late" for k, v in late.items())
              + " against their schedule."]
    lines += [f"- {note}" for note in validation.notes]
    return "\n".join(lines)


def validation_chart(validation: Validation) -> Any:
    """Each replayed request's latency over time (cold starts ringed, refusals crossed), with the
    measured and the simulated p50 and p99 as lines: Lambda above, the server below."""
    import matplotlib.pyplot as plt

    sides = [side for side in ("lambda", "server") if side in validation.runs]
    figure, panels = plt.subplots(len(sides), 1, figsize=(10, 3.25 * len(sides)), sharex=True, squeeze=False)
    panels = panels[:, 0]
    for axes, side in zip(panels, sides):
        run = validation.runs.get(side)
        if run is None:
            continue
        ok = [s for s in run.samples if s.outcome.status == 200]
        axes.scatter([s.scheduled_s for s in ok], [s.outcome.latency_ms for s in ok], s=8, color=COLOURS[side],
                     label=f"{NAMES[side]}: measured, per request")
        cold = [s for s in ok if s.outcome.cold_start]
        if cold:
            axes.scatter([s.scheduled_s for s in cold], [s.outcome.latency_ms for s in cold], s=70, facecolors="none",
                         edgecolors="red", label="cold start")
        refused = [s for s in run.samples if s.outcome.status != 200]
        if refused:
            axes.scatter([s.scheduled_s for s in refused], [1.0] * len(refused), marker="x", color="black",
                         label=f"refused ({len(refused)})")
        measured, simulated = validation.measured[side], validation.simulated[side]
        for value, style, label in ((measured.p50_ms, "-", "measured p50"), (measured.p99_ms, "-", "measured p99"),
                                    (simulated.p50_ms, "--", "simulated p50"), (simulated.p99_ms, "--", "simulated p99")):
            if value:
                axes.axhline(value, ls=style, lw=1, color="grey" if "50" in label else "black", label=f"{label} {ms(value)}")
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes.set_ylabel("latency (ms)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, ncol=3)
    panels[-1].set_xlabel("seconds since the replay started (scheduled time)")
    figure.suptitle(f"Replay against simulation: {validation.scenario}", fontsize=9)
    figure.tight_layout()
    return figure


def instances_chart(validation: Validation) -> Any:
    """An autoscaled fleet's instances over the replay: measured (the fleet's own record) against
    each simulated seed, over the arrivals per second."""
    import matplotlib.pyplot as plt

    series, end = validation.instances, float(validation.settings.get("duration_s") or 0.0)
    figure, axes = plt.subplots(figsize=(10, 4))
    rate = figure.axes[0].twinx()
    run = validation.runs.get("server")
    if run is not None and run.samples:
        edges = np.arange(0.0, end + 2.0, 1.0)
        counts, _ = np.histogram([s.scheduled_s for s in run.samples], bins=edges)
        rate.bar(edges[:-1], counts, width=1.0, align="edge", color="grey", alpha=0.25, label="arrivals per second")
    rate.set_ylabel("arrivals per second")

    def draw(steps: list[list[float]], **style: Any) -> None:
        times = [t for t, _ in steps] + [end]
        counts = [n for _, n in steps] + [steps[-1][1]]
        axes.step(times, counts, where="post", **style)

    for i, steps in enumerate(series.get("simulated", [])):
        draw(steps, color=COLOURS["server"], alpha=0.35, lw=1, label="simulated (one line per seed)" if i == 0 else None)
    if series.get("measured"):
        draw(series["measured"], color="black", lw=2.2, label="measured (local fleet)")
    top = max([n for steps in series.get("simulated", []) + [series.get("measured", [])] for _, n in steps] or [1])
    axes.set_ylim(0, top + 0.5)
    axes.set_zorder(rate.get_zorder() + 1)
    axes.patch.set_visible(False)
    axes.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_ylabel("instances (launched, not yet stopped)")
    axes.set_xlabel("seconds since the replay started")
    axes.grid(alpha=0.3)
    handles = axes.get_legend_handles_labels()
    more = rate.get_legend_handles_labels()
    axes.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper left")
    boot = series.get("boot_s")
    figure.suptitle(f"Autoscaled fleet, simulated against measured: {validation.scenario}"
                    + (f" (boot {boot:.1f} s, as measured)" if boot else ""), fontsize=9)
    figure.tight_layout()
    return figure


def write_validation(validation: Validation, out: Path = DEFAULT_OUT) -> dict[str, Path]:
    """``replay.json``, ``.md`` and ``.png`` in ``out`` (``replay-fleet.*`` for a fleet,
    ``replay-fleet-autoscaled.*`` and its ``-instances.png`` for an autoscaled one)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = validation.stem
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md", "png": out / f"{stem}.png"}
    if validation.instances.get("measured"):
        paths["instances_png"] = out / f"{stem}-instances.png"
        paths["instances_png"].write_bytes(to_png(instances_chart(validation)))
    data = validation.to_dict()
    data["samples"] = {side: [{"scheduled_s": round(s.scheduled_s, 4), "sent_s": round(s.sent_s, 4),
                               "latency_ms": round(s.outcome.latency_ms, 2), "status": s.outcome.status,
                               "cold_start": s.outcome.cold_start, "environment": s.outcome.environment}
                              for s in run.samples] for side, run in validation.runs.items()}
    paths["json"].write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    paths["markdown"].write_text(validation_markdown(validation) + "\n", encoding="utf-8")
    paths["png"].write_bytes(to_png(validation_chart(validation)))
    return paths
