"""The runtime payload: installed runtime packages + the core's code + the model, per runtime and precision."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Sequence
from pathlib import Path

from lambda_onnx.sidecar import Sidecar, sidecar_path
from local.measure.bench.config import PayloadRow

ROOT = Path(__file__).resolve().parents[3]
LAMBDA_REQUIREMENTS = ROOT / "lambda_onnx" / "requirements.txt"


def _requirement_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0])
    return names


def installed_size(names: Sequence[str]) -> tuple[int, dict[str, int]]:
    """Bytes the distributions ``names`` and their dependencies occupy in this environment.

    Read from each distribution's RECORD (what pip installed), following ``Requires-Dist`` with
    its markers evaluated here: no download, so it works offline; the Lambda image installs the
    same wheels for its own Python, so expect a few per cent of difference.
    """
    from packaging.requirements import Requirement

    seen: dict[str, int] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            seen[key] = 0
            continue
        total = 0
        for file in dist.files or []:
            try:
                total += Path(file.locate()).stat().st_size
            except OSError:
                continue
        seen[key] = total
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return sum(seen.values()), dict(sorted(seen.items(), key=lambda kv: -kv[1]))


def measure_payload(fp32: Path, int8: Path) -> list[PayloadRow]:
    """Runtime packages + the core's code + model (and sidecar), for each precision and runtime."""
    code = sum(p.stat().st_size for p in (ROOT / "lambda_onnx").glob("*.py")) + LAMBDA_REQUIREMENTS.stat().st_size
    requirements = _requirement_names(LAMBDA_REQUIREMENTS)
    ort_bytes, ort_packages = installed_size(requirements)
    with_openvino = ["openvino" if name == "onnxruntime" else name for name in requirements]
    ov_bytes, ov_packages = installed_size(with_openvino)
    rows: list[PayloadRow] = []
    for runtime, packages_bytes, packages in (("onnxruntime", ort_bytes, ort_packages), ("openvino", ov_bytes, ov_packages)):
        for path in (fp32, int8):
            model = Path(path).stat().st_size + sidecar_path(path).stat().st_size
            rows.append({"runtime": runtime, "precision": Sidecar.load(sidecar_path(path)).precision,
                         "packages_mb": packages_bytes / 1e6, "code_mb": code / 1e6, "model_mb": model / 1e6,
                         "total_mb": (packages_bytes + code + model) / 1e6,
                         "largest_packages_mb": {k: round(v / 1e6, 1) for k, v in list(packages.items())[:6]}})
    return rows


