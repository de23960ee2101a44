"""``python -m local bench`` as a library (rendered by :mod:`local.report.bench`): PyTorch, ONNX Runtime and
OpenVINO side by side, one machine, one run.

What it measures (issue 5): batch-1 latency (median, p90) and batch-8 throughput of every runtime ×
precision against PyTorch eager fp32; the thread count the core picks against the alternatives;
cold start (fresh process to first prediction) and peak RSS of a PyTorch handler built as the
PyTorch-on-Lambda project this one answers built it (ARCHITECTURE.md;
:mod:`local.measure.bench.torch_handler`) and of the real ONNX handler
(:mod:`lambda_onnx.handler`) with the fp32 and the INT8 model; preprocessing time of a 12 MP and a
0.3 MP JPEG; the compute floor (the model's FLOPs over this machine's measured fp32 GEMM rate, INT8
at a quarter of it for VNNI); the runtime payload (installed runtime packages + code + model);
the emulator's warm round trip against in-process; and the top-1 agreement of every runtime ×
precision with fp32 on real photos (a real-weights model: speed does not depend on the weights,
agreement does).

The result is a :class:`BenchReport`; :func:`write_outputs` turns it into Markdown, JSON and PNG.
Libraries do not print: progress goes to the ``on_step`` callback.
"""

from local.measure.bench.config import BATCH, DEFAULT_OUT, BenchConfig, BenchReport, Latency
from local.measure.bench.payload import installed_size
from local.measure.bench.run import run_bench

__all__ = ["BATCH", "DEFAULT_OUT", "BenchConfig", "BenchReport", "Latency", "installed_size", "run_bench"]
