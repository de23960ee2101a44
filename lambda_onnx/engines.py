"""Inference engines: the same ``.onnx`` run by ONNX Runtime (everywhere) or OpenVINO (server side).

An engine takes a preprocessed NCHW float32 batch and returns the logits; nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from lambda_onnx.cpu import cpu_info, int8_kernel_name, use_precise_int8
from lambda_onnx.errors import ModelLoadError
from lambda_onnx.resources import intra_op_spinning

RUNTIMES = ("onnxruntime", "openvino")
# OpenVINO's INFERENCE_PRECISION_HINT values offered; "auto" leaves the choice to OpenVINO.
OPENVINO_HINTS = ("f32", "bf16", "f16", "auto")
DEFAULT_OPENVINO_HINT = "f32"


class Engine(Protocol):
    runtime: str
    threads: int
    int8_kernel: str | None  # the INT8 kernel a quantised model runs with; None for fp32 models
    computes_in: str  # "fp32", "int8", "bf16" or "f16": what the engine really computes in

    def run(self, batch: np.ndarray) -> np.ndarray: ...


class OnnxRuntimeEngine:
    """ONNX Runtime on the CPU provider, all graph optimisations, a fixed intra-op thread count.

    A quantised model runs with the exact INT8 kernel for this CPU: ``int8_kernel="auto"`` turns on
    ONNX Runtime's U8U8 kernel (session option ``session.x64quantprecision``) on x86-64 CPUs without
    VNNI, where the default U8S8 kernel saturates (see :mod:`lambda_onnx.cpu`); ``"precise"`` and
    ``"fast"`` force one or the other. ``int8_kernel`` then names the kernel used.
    https://github.com/microsoft/onnxruntime/blob/main/include/onnxruntime/core/session/onnxruntime_session_options_config_keys.h
    """

    runtime = "onnxruntime"

    def __init__(self, model_path: Path, input_name: str, output_name: str, threads: int, *,
                 quantised: bool = False, int8_kernel: str = "auto", spinning: bool | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not (intra_op_spinning() if spinning is None else spinning):  # see intra_op_spinning's docstring
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.int8_kernel: str | None = None
        self.computes_in = "int8" if quantised else "fp32"
        if quantised:
            precise = use_precise_int8(int8_kernel)
            if precise:
                options.add_session_config_entry("session.x64quantprecision", "1")
            self.int8_kernel = int8_kernel_name(precise)
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise ModelLoadError(f"ONNX Runtime cannot load {model_path}: {exc}") from None
        _check_names(model_path, [i.name for i in self.session.get_inputs()],
                     [o.name for o in self.session.get_outputs()], input_name, output_name)
        self.input_name, self.output_name, self.threads = input_name, output_name, threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


class OpenVinoEngine:
    """OpenVINO reading the same ``.onnx`` (fp32 or QDQ INT8) on the CPU device.

    ``precision_hint`` is OpenVINO's ``INFERENCE_PRECISION_HINT``: ``"f32"`` (the default here),
    ``"bf16"``, ``"f16"``, or ``"auto"`` to let OpenVINO choose. OpenVINO's own choice on a CPU with
    AVX512-BF16 or AMX is bf16, which moves logits by up to ~0.3 and flipped the top-1 of a near-tie
    real photo (chelsea: tiger cat 0.379 against Egyptian cat 0.375 with EfficientNet-Lite0).
    Parity is the product, so bf16 is opt-in; the benchmark and the parity report measure both.
    https://docs.openvino.ai/2025/openvino-workflow/running-inference/optimize-inference/precision-control.html
    """

    runtime = "openvino"

    def __init__(self, model_path: Path, input_name: str, output_name: str, threads: int,
                 precision_hint: str | None = None, *, quantised: bool = False) -> None:
        hint = precision_hint or DEFAULT_OPENVINO_HINT
        if hint not in OPENVINO_HINTS:
            raise ValueError(f"OpenVINO precision hint must be one of {OPENVINO_HINTS}, got {hint!r}")
        try:
            import openvino as ov
        except ImportError:
            raise ModelLoadError("the openvino runtime is not installed (pip install openvino)") from None
        core = ov.Core()
        config: dict[str, object] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if hint != "auto":
            config["INFERENCE_PRECISION_HINT"] = hint
        try:
            model = core.read_model(str(model_path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ModelLoadError(f"OpenVINO cannot load {model_path}: {exc}") from None
        _check_names(model_path, [i.get_any_name() for i in self.compiled.inputs],
                     [o.get_any_name() for o in self.compiled.outputs], input_name, output_name)
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(output_name)
        self.hint = hint
        # What OpenVINO really computes in ("f32", "bf16", ...), after resolving "auto".
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.computes_in = ("int8" if quantised else "fp32") if self.precision == "f32" else self.precision
        # OpenVINO has no precise INT8 kernel to turn on: without VNNI its U8S8 kernels saturate as
        # ONNX Runtime's do (measured here: top-1 kept on 6 of 8 photos), and the canary refuses it.
        info = cpu_info()
        self.int8_kernel = None if not quantised else (
            ("u8s8 vnni" if info.vnni else "u8s8 saturating (no VNNI)") if info.x86 else f"{info.machine} int8")
        self.input_name, self.output_name, self.threads = input_name, output_name, threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        # infer() copies the outputs by default (share_outputs=False): safe to keep past the next call.
        return self.request.infer({self.input_name: batch})[self.output]


def _check_names(path: Path, inputs: list[str], outputs: list[str], input_name: str, output_name: str) -> None:
    if input_name not in inputs or output_name not in outputs:
        raise ModelLoadError(
            f"{path} has inputs {inputs} and outputs {outputs}, but its sidecar names "
            f"input {input_name!r} and output {output_name!r}"
        )


def make_engine(runtime: str, model_path: Path, input_name: str, output_name: str, threads: int,
                precision_hint: str | None = None, *, quantised: bool = False, int8_kernel: str = "auto",
                spinning: bool | None = None) -> Engine:
    """The engine for ``runtime``; ``precision_hint`` applies to OpenVINO only (see :class:`OpenVinoEngine`),
    ``int8_kernel`` and ``spinning`` (None: :func:`~lambda_onnx.resources.intra_op_spinning`'s rule) to
    ONNX Runtime only (see :class:`OnnxRuntimeEngine`)."""
    if runtime == "onnxruntime":
        if precision_hint not in (None, "f32"):
            raise ValueError(f"a precision hint ({precision_hint!r}) applies to openvino only; "
                             "onnxruntime computes in the model's precision")
        return OnnxRuntimeEngine(model_path, input_name, output_name, threads, quantised=quantised, int8_kernel=int8_kernel,
                                 spinning=spinning)
    if runtime == "openvino":
        return OpenVinoEngine(model_path, input_name, output_name, threads, precision_hint, quantised=quantised)
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
