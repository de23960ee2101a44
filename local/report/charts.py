"""Every chart the product draws (matplotlib, headless): used by the GUI, the HTML report and the CLI."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from local.measure.bench.config import BenchReport  # noqa: E402
from local.measure.core.machine import describe_machine  # noqa: E402
from local.measure.monitor import Sample  # noqa: E402

STEPS = (("overhead_ms", "network / invoke"), ("json_parse_ms", "JSON parse"), ("decode_ms", "decode"),
         ("preprocess_ms", "preprocess"), ("inference_ms", "inference"), ("postprocess_ms", "postprocess"))
COLOURS = ("#9e9e9e", "#bcaaa4", "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1")


def to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def to_data_uri(figure: Figure) -> str:
    return "data:image/png;base64," + base64.b64encode(to_png(figure)).decode()


def _step_ms(parts: Mapping[str, object], key: str) -> float:
    """One step's milliseconds from an answer's metrics (which hold counts and flags too); 0 when absent or null."""
    value = parts.get(key)
    return float(value) if isinstance(value, (int, float)) else 0.0


def timing_breakdown(rows: Sequence[tuple[str, Mapping[str, object]]]) -> Figure:
    """One horizontal stacked bar per backend: where the client's round trip went."""
    figure, axes = plt.subplots(figsize=(8, 1.2 + 0.7 * len(rows)))
    for y, (_name, parts) in enumerate(rows):
        left = 0.0
        for (key, label), colour in zip(STEPS, COLOURS):
            width = _step_ms(parts, key)
            axes.barh(y, width, left=left, color=colour, label=label if y == 0 else None, edgecolor="white")
            if width >= 3:
                axes.text(left + width / 2, y, f"{width:.0f}", ha="center", va="center", fontsize=8, color="white")
            left += width
        axes.text(left, y, f"  {left:.0f} ms", va="center", fontsize=9)
    axes.set_yticks(range(len(rows)), [name for name, _ in rows])
    axes.invert_yaxis()
    axes.set_xlabel("milliseconds (client round trip)")
    axes.legend(ncol=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(rows) < 3 else -0.2), frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    axes.set_xlim(0, max((sum(_step_ms(p, k) for k, _ in STEPS) for _, p in rows), default=1) * 1.18)
    return figure


def _round_trips(samples: Sequence[Sample]) -> tuple[list[float], list[float]]:
    """(seconds since the start, round trip ms) of the samples that have a round trip."""
    points = [(s.t_s, s.round_trip_ms) for s in samples if s.round_trip_ms is not None]
    return [t for t, _ in points], [ms for _, ms in points]


def latency_over_time(samples: Sequence[Sample], backends: Sequence[str]) -> Figure:
    """Round trip per request over the run; cold starts ringed, errors as crosses on the axis."""
    figure, axes = plt.subplots(figsize=(9, 3.6))
    for index, name in enumerate(backends):
        mine = [s for s in samples if s.backend == name]
        ok = [s for s in mine if s.ok and s.round_trip_ms is not None]
        colour = f"C{index}"
        axes.plot(*_round_trips(ok), ".-", color=colour, label=name, lw=1, ms=4)
        cold = [s for s in ok if s.cold_start]
        if cold:
            axes.scatter(*_round_trips(cold), s=90, facecolors="none", edgecolors="red",
                         linewidths=1.5, label="cold start" if index == 0 else None, zorder=3)
        errors = [s for s in mine if not s.ok]
        if errors:
            axes.scatter([s.t_s for s in errors], [0] * len(errors), marker="x", color=colour, s=40,
                         label=f"{name}: errors", zorder=3)
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("round trip (ms)")
    axes.set_yscale("log")  # a cold start is 10-100x a warm request; both stay readable
    axes.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return figure


def latency_histogram(samples: Sequence[Sample], backends: Sequence[str]) -> Figure:
    figure, axes = plt.subplots(figsize=(9, 3.2))
    for index, name in enumerate(backends):
        times = [s.round_trip_ms for s in samples if s.backend == name and s.ok and s.round_trip_ms is not None]
        if times:
            axes.hist(times, bins=30, alpha=0.6, color=f"C{index}", label=name)
    axes.set_xlabel("round trip (ms)")
    axes.set_ylabel("requests")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    return figure


def cost_curve(rows: Sequence[dict[str, float]], crossover: float | None) -> Figure:
    """Monthly cost of serverless and servers against monthly requests (log-log)."""
    figure, axes = plt.subplots(figsize=(8, 3.8))
    volumes = [r["requests_per_month"] for r in rows]
    axes.plot(volumes, [r["serverless_usd"] for r in rows], label="serverless (Lambda)", color="C1")
    axes.plot(volumes, [r["server_usd"] for r in rows], label="server(s)", color="C0", drawstyle="steps-post")
    if crossover:
        axes.axvline(crossover, color="grey", ls="--", lw=1)
        axes.text(crossover, max(r["server_usd"] for r in rows), f" crossover\n {crossover:,.0f}/month", fontsize=8, va="top")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("requests per month")
    axes.set_ylabel("USD per month")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    return figure


def power_tuning(rows: Sequence[dict], *, percentile: str, budget_ms: float | None,
                 recommended: tuple[str, int] | None, title: str) -> Figure:
    """Latency (p50 and ``percentile``) and cost per million requests against Lambda memory size.

    ``rows``: one dict per configuration with ``source`` ("emulated"/"aws"), ``precision``,
    ``memory_mb``, ``ok``, ``status``, ``p50``, ``percentile``, ``cost`` and ``capped``. Failed
    sizes (out of memory, timeouts) are marked on the axis; sizes where this machine could not give
    Lambda's CPU share are shaded; the recommended configuration is starred.
    """
    figure, (latency_axes, cost_axes) = plt.subplots(1, 2, figsize=(12, 4.4))
    series = sorted({(r["source"], r["precision"]) for r in rows})
    for index, (source, precision) in enumerate(series):
        mine = sorted((r for r in rows if (r["source"], r["precision"]) == (source, precision)), key=lambda r: r["memory_mb"])
        ok = [r for r in mine if r["ok"] and r["p50"] is not None]
        colour = f"C{index}"
        name = f"{precision} ({'AWS' if source == 'aws' else 'emulated'})"
        style = "--" if source == "aws" else "-"
        xs = [r["memory_mb"] for r in ok]
        latency_axes.plot(xs, [r["p50"] for r in ok], style, marker="o", color=colour, label=f"{name} p50")
        if percentile != "p50":
            latency_axes.plot(xs, [r["percentile"] for r in ok], style, marker="^", color=colour, alpha=0.55,
                              label=f"{name} {percentile}")
        cost_axes.plot(xs, [r["cost"] for r in ok], style, marker="o", color=colour, label=name)
        for r in mine:
            if not r["ok"]:
                for axes in (latency_axes, cost_axes):
                    axes.plot(r["memory_mb"], 0, marker="x", color=colour, ms=10, mew=2, clip_on=False, zorder=4)
                    axes.annotate(r["status"].upper(), (r["memory_mb"], 0), textcoords="offset points", xytext=(0, 8),
                                  ha="center", fontsize=7, color=colour)
    sizes = sorted({r["memory_mb"] for r in rows})
    capped = sorted({r["memory_mb"] for r in rows if r.get("capped")})
    if capped:  # shaded from halfway between the last full-share size and the first capped one
        below = [s for s in sizes if s < capped[0]]
        left = (below[-1] + capped[0]) / 2 if below else capped[0] - 100
        for axes in (latency_axes, cost_axes):
            axes.axvspan(left, sizes[-1] + 100, color="grey", alpha=0.1, lw=0)
        cost_axes.text(sizes[-1] + 100, 0.02, "CPU capped on this machine ", transform=cost_axes.get_xaxis_transform(),
                       fontsize=7, va="bottom", ha="right", color="dimgrey")
    if budget_ms is not None:
        latency_axes.axhline(budget_ms, color="red", ls=":", lw=1)
        latency_axes.text(latency_axes.get_xlim()[0], budget_ms, f" budget {budget_ms:g} ms ({percentile})", fontsize=8,
                          va="bottom", color="red")
    if recommended is not None:
        chosen = next((r for r in rows if r["source"] == "emulated" and (r["precision"], r["memory_mb"]) == recommended), None)
        if chosen is not None:
            latency_axes.plot(chosen["memory_mb"], chosen["percentile"], marker="*", ms=18, color="gold", mec="black",
                              zorder=5, ls="none", label="recommended")
            cost_axes.plot(chosen["memory_mb"], chosen["cost"], marker="*", ms=18, color="gold", mec="black", zorder=5,
                           ls="none", label="recommended")
    for axes, label in ((latency_axes, "warm latency (ms)"), (cost_axes, "USD per million requests")):
        axes.set_xlabel("Lambda memory (MB)")
        axes.set_ylabel(label)
        axes.set_xticks(sizes, [str(s) for s in sizes], rotation=45 if len(sizes) > 6 else 0, fontsize=8)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    latency_axes.set_title("latency (lower is faster)", fontsize=9)
    cost_axes.set_title("cost per million requests (lower is cheaper)", fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def benchmark(report: BenchReport) -> Figure:
    """The benchmark: batch-1 latency per runtime × precision (with the compute floors), cold start, peak RSS."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.5), gridspec_kw={"width_ratios": [3, 1.3, 1.3]})
    names = [r.name for r in report.inference]
    medians = [r.median_ms for r in report.inference]
    errors = [max(0.0, r.p90_ms - r.median_ms) for r in report.inference]
    colours = ["#7f7f7f" if r.runtime == "pytorch" else ("#1f77b4" if r.runtime == "onnxruntime" else "#ff7f0e")
               for r in report.inference]
    ax = axes[0]
    ax.barh(names, medians, xerr=[[0] * len(errors), errors], color=colours)
    for y, (value, error) in enumerate(zip(medians, errors)):
        ax.text(value + error, y, f"  {value:.1f}", va="center", fontsize=8)
    if report.floor:
        ax.axvline(report.floor["fp32_floor_ms"], color="black", linestyle="--", linewidth=1, label="fp32 compute floor")
        ax.axvline(report.floor["int8_floor_ms"], color="green", linestyle=":", linewidth=1, label="INT8 compute floor")
        ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("batch-1 latency, ms (median; whisker to p90)")
    ax.set_title(f"{report.models['fp32']['label'].split(' (')[0]} inference")
    cold = report.cold_start
    axes[1].bar([c["handler"].replace(" handler", "\n") for c in cold], [c["median_ms"] / 1e3 for c in cold], color="#2ca02c")
    axes[1].set_ylabel("s")
    axes[1].set_title("cold start to first prediction")
    axes[2].bar([c["handler"].replace(" handler", "\n") for c in cold], [c["peak_rss_mb"] for c in cold], color="#9467bd")
    axes[2].set_ylabel("MB")
    axes[2].set_title("handler peak RSS")
    for axis in axes[1:]:
        axis.tick_params(axis="x", labelsize=8)
    fig.suptitle(describe_machine(report.machine), fontsize=9)
    fig.tight_layout()
    return fig
