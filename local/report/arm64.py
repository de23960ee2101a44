"""The arm64 check's report: one ✓/✗ line per check, the emulator's and CPUs' facts, as text, Markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from local.measure.arm64 import Arm64Result
from local.measure.core.machine import describe_machine

NOT_A_TIMING = ("a correctness check, not a timing: emulated arm64 code runs tens of times slower than a real "
                "Graviton, so no figure here says anything about arm64's speed")


def facts_lines(result: Arm64Result) -> list[str]:
    """Who emulated what: this machine, qemu, the guest's Python and wheels, each emulated CPU as the core read it."""
    guest = result.guest
    versions = ", ".join(f"{k} {v}" for k, v in guest.get("versions", {}).items())
    lines = [f"host: {describe_machine(result.host)}",
             f"emulator: qemu-aarch64 {result.qemu['version']} (user mode, {result.qemu['path']})",
             f"guest: Debian {guest['debian']} arm64, Python {guest.get('python', '?')} (Lambda's is 3.12: the same "
             f"releases' cp{str(guest.get('python', '')).replace('.', '')[:3]} aarch64 wheels, installed from "
             f"lambda_onnx/requirements.lock with hashes required), {versions}"]
    for cpu in result.cpus:
        arm = [f for f in cpu["features"] if f in ("asimddp", "i8mm", "bf16", "sve", "sve2", "sme")]
        lines.append(f"qemu -cpu {cpu['cpu']} ({cpu['stands_for']}): the core reads {cpu['facts']['describe']}; "
                     f"/proc/cpuinfo Features include {' '.join(arm) or 'none of asimddp/i8mm/bf16/sve'}")
        lines += [f"  onnxruntime on stderr: {line}" for line in dict.fromkeys(cpu.get("onnxruntime_stderr", []))]
    return lines


def check_lines(result: Arm64Result) -> list[str]:
    return [f"{'✓' if c.passed else '✗'} {c.name}: {c.detail}" for c in result.checks]


def markdown(result: Arm64Result) -> str:
    lines = [f"# arm64 check, {result.date}: {'passed' if result.passed else 'FAILED'}", "", f"_{NOT_A_TIMING}._", ""]
    lines += [f"- {line}" for line in facts_lines(result)]
    lines += ["", "| | check | detail |", "|---|---|---|"]
    lines += [f"| {'✓' if c.passed else '✗'} | {c.name} | {c.detail} |" for c in result.checks]
    lines += ["", "How long each stage took here (emulated, on a shared machine: not a speed): "
              + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()), ""]
    return "\n".join(lines)


def write_outputs(result: Arm64Result, out: Path) -> dict[str, Path]:
    """``arm64.md`` and ``arm64.json`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "arm64.md", "json": out / "arm64.json"}
    paths["markdown"].write_text(markdown(result), encoding="utf-8")
    paths["json"].write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths
