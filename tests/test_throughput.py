"""Server throughput: the library function the GUI's Cost tab calls, and ``python -m local throughput``."""

from __future__ import annotations

import json

import pytest

from lambda_onnx.errors import BackendError
from lambda_onnx.photos import by_name
from local.clients.inprocess import InProcessBackend
from local.measure.throughput import measure_throughput
from tests.helpers.process import run_module


def test_counts_answers_per_second(lite0_classifier):
    backend = InProcessBackend(lite0_classifier, name="server")
    result = measure_throughput(backend, by_name("coffee").read(), requests=6, clients=2)
    assert (result.backend, result.requests, result.answered, result.clients) == ("server", 6, 6, 2)
    assert result.elapsed_s > 0 and result.requests_per_s == pytest.approx(6 / result.elapsed_s, rel=0.01)
    with pytest.raises(BackendError, match="answered none of 2 requests: invalid_image"):
        measure_throughput(backend, b"not an image", requests=2)
    with pytest.raises(ValueError, match="at least 1"):
        measure_throughput(backend, b"", clients=0)


@pytest.mark.slow
def test_cli_prints_the_same_figure_as_json(lite0):
    out = run_module("local", "throughput", "--model", str(lite0), "--requests", "4", "--clients", "2", "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["requests"], result["answered"], result["clients"]) == (4, 4, 2) and result["requests_per_s"] > 0
    missing = run_module("local", "throughput", "--model", "missing.onnx", timeout=60)
    assert missing.returncode == 1 and missing.stderr.startswith("error: model not found")
