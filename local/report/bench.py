"""The benchmark as Markdown, JSON, a PNG chart, and the lines the CLI prints."""

from __future__ import annotations

import json
from pathlib import Path

from local.measure.bench.config import BATCH, BenchReport
from local.measure.core.machine import describe_machine
from local.report import charts


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(report: BenchReport) -> str:
    """The report as Markdown tables (what the README shows)."""
    m = report.machine
    lines = [f"# Benchmark ({report.created})", "",
             f"Machine: {describe_machine(m)}. PyTorch: {m.get('torch_build')}. "
             f"Threads: {report.config['threads']} (resources.default_threads()). 1-minute load average before the run: "
             f"{m.get('load_average_before')} (other work on the machine inflates every number).",
             f"Models: {report.models['fp32']['label']} ({report.models['fp32']['bytes'] / 1e6:.1f} MB) and "
             f"{report.models['int8']['label']} ({report.models['int8']['bytes'] / 1e6:.1f} MB).", "",
             "## Inference", "",
             f"| runtime × precision | batch-1 median ms | p90 ms | batch-{BATCH} images/s | × PyTorch eager | share of compute floor "
             "| INT8 kernel | canary | parity holds here |",
             "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in report.inference:
        parity = "reference" if r.runtime == "pytorch" else ("yes" if r.eligible else f"**no**: {r.why_not}")
        lines.append(f"| {r.name} | {r.median_ms:.1f} | {r.p90_ms:.1f} | {_fmt(r.batch_images_per_s)} | "
                     f"{_fmt(r.vs_pytorch, 2)} | {_fmt(r.floor_fraction and r.floor_fraction * 100, 0)} % | "
                     f"{r.int8_kernel or '–'} | {r.canary or '–'} | {parity} |")
    f = report.floor
    lines += ["", f"Compute floor: {f['gflop_per_image']:.2f} GFLOP per image ({f['gflop_source']}) over the measured fp32 GEMM "
              f"rate {f['gemm_best_gflops']:.0f} GFLOP/s ({', '.join(f'{k} {v:.0f}' for k, v in f['gemm_gflops'].items())}; "
              f"{f['threads']} threads) = **{f['fp32_floor_ms']:.1f} ms** fp32, **{f['int8_floor_ms']:.1f} ms** INT8 "
              f"({f['int8_floor_rule']}).", "", f"Fastest runtime × precision here: **{report.fastest}**.", "",
              "## Threads (ONNX Runtime, batch 1)", "", "| precision | threads | median ms | p90 ms |", "|---|---:|---:|---:|"]
    for thread_row in report.threads:
        chosen = " (chosen)" if thread_row["chosen"] else ""
        lines.append(f"| {thread_row['precision']} | {thread_row['threads']}{chosen} | {thread_row['median_ms']:.1f} | "
                     f"{thread_row['p90_ms']:.1f} |")
    lines += ["", "## Cold start (fresh process → first prediction) and memory", "",
              "| handler | build | median ms | import ms (canary ms) | first invoke ms | peak RSS MB |", "|---|---|---:|---:|---:|---:|"]
    for cold in report.cold_start:
        canary = f" ({cold['canary_ms']:.0f}, {cold['canary']})" if cold.get("canary_ms") is not None else ""
        lines.append(f"| {cold['handler']} (`{cold['module']}`) | {cold['build']} | {cold['median_ms']:.0f} | "
                     f"{cold['import_ms']:.0f}{canary} | {cold['first_invoke_ms']:.0f} | {cold['peak_rss_mb']:.0f} |")
    lines += ["", "## Preprocessing (decode + resize + crop + normalise)", "",
              "| image | size | path | median ms | p90 ms |", "|---|---|---|---:|---:|"]
    for pre in report.preprocess:
        path = "fast" if pre["fast_path"] else ("reference (too small for the fast path)" if pre["fast_allowed"] else "reference")
        lines.append(f"| {pre['image']} | {pre['width']}×{pre['height']}, {pre['bytes'] / 1e6:.2f} MB | {path} | "
                     f"{pre['median_ms']:.1f} | {pre['p90_ms']:.1f} |")
    lines += ["", "## Runtime payload (installed runtime packages + `lambda_onnx/` + model)", "",
              "| runtime | precision | packages MB | code MB | model MB | total MB |", "|---|---|---:|---:|---:|---:|"]
    for payload in report.payload:
        lines.append(f"| {payload['runtime']} | {payload['precision']} | {payload['packages_mb']:.0f} | {payload['code_mb']:.2f} | "
                     f"{payload['model_mb']:.1f} | {payload['total_mb']:.0f} |")
    e = report.emulator
    lines += ["", "## Emulator vs in-process (same image)", ""]
    if e.get("measured"):
        lines += ["| path | round trip median ms | inside the handler ms |", "|---|---:|---:|",
                  f"| emulator, warm ({e['threads']} thread(s), {e['memory_mb']} MB) | {e['warm_round_trip_median_ms']:.1f} | "
                  f"{e['warm_handler_median_ms']:.1f} |",
                  f"| in-process, same threads | {e['in_process_median_ms']:.1f} | {e['in_process_handler_median_ms']:.1f} |",
                  "", f"Emulator cold start end to end (start → first prediction): {e['cold_start_end_to_end_ms']:.0f} ms "
                  f"(first round trip {e['first_round_trip_ms']:.0f} ms, handler init {_fmt(e['init_ms'], 0)} ms)."]
    else:
        lines += [f"Not measured: {e.get('reason')}."]
    a = report.accuracy
    lines += ["", "## Top-1 agreement with ONNX Runtime fp32 on real photos", ""]
    if a.get("measured"):
        lines += [f"{a['model']}, {len(a['photos'])} photos never used for calibration.", "",
                  "| runtime × precision | top-1 same as fp32 | correct | differs on |", "|---|---:|---:|---|"]
        for row in a["variants"]:
            lines.append(f"| {row['name']} | {row['top1_same_as_fp32']}/{row['photos']} | {row['correct']}/{row['photos']} | "
                         f"{', '.join(row['differs_on']) or '–'} |")
    else:
        lines += [f"Not measured: {a.get('reason')}."]
    lines += ["", "## Targets", "", "| target | value | limit | met |", "|---|---:|---:|---|"]
    for t in report.targets:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "**not met**")
        value = "–" if t["value"] is None else (f"{t['value']:.2f}" if t["unit"] == "×" else f"{t['value']:.0f} {t['unit']}")
        limit = f"{t['limit']:.2f}" if t["unit"] == "×" else f"{t['limit']} {t['unit']}"
        lines.append(f"| {t['target']} | {value} | {limit} | {met} |")
    return "\n".join(lines) + "\n"


def write_outputs(report: BenchReport, out: Path) -> dict[str, Path]:
    """``bench.md``, ``bench.json`` and ``bench.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "bench.md", "json": out / "bench.json", "png": out / "bench.png"}
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["png"].write_bytes(charts.to_png(charts.benchmark(report)))
    return paths


def ratios_text(report: BenchReport) -> list[str]:
    """What the CLI prints at the end: ratios against PyTorch eager, targets, the fastest variant."""
    lines = [f"machine: {describe_machine(report.machine)}; PyTorch {report.machine.get('torch_build')}"]
    for r in report.inference:
        lines.append(f"  {r.name:<42} {r.median_ms:7.1f} ms  ({_fmt(r.vs_pytorch, 2)} × PyTorch eager)")
    lines.append("targets:")
    for t in report.targets:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT MET")
        value = "–" if t["value"] is None else (f"{t['value']:.2f}" if t["unit"] == "×" else f"{t['value']:.0f} {t['unit']}")
        limit = f"≤ {t['limit']:.2f}" if t["unit"] == "×" else f"≤ {t['limit']} {t['unit']}"
        lines.append(f"  [{met:^7}] {t['target']}: {value} ({limit})")
    lines.append(f"fastest here: {report.fastest}")
    return lines

