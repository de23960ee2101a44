"""The compute floor: the model's FLOPs over this machine's measured GEMM rates."""

from __future__ import annotations

from typing import Any

import numpy as np

from lambda_onnx.cpu import cpu_info, int8_kernel_choice, int8_kernel_name, use_precise_int8
from lambda_onnx.sidecar import Sidecar
from local.measure.bench.config import INT8_FLOOR_DIVISOR, RESNET50_GFLOP, BenchConfig, Step, noop
from local.measure.bench.inference import torch_module
from local.measure.bench.timing import sample_times


def model_gflop(meta: Sidecar) -> tuple[float, str]:
    """FLOPs of one image through ``meta``'s architecture, counted by torch (2 per multiply-add)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        module = torch_module(meta)
        size = meta.preprocessing.crop_size
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            module(torch.zeros(1, 3, size, size))
        return counter.get_total_flops() / 1e9, "torch.utils.flop_counter (2 FLOP per multiply-add)"
    except ImportError:
        if meta.arch == "resnet50":
            return RESNET50_GFLOP, "the issue's 8.2 GFLOP per ResNet-50 image"
        raise


def gemm_gflops(threads: int, size: int = 4096, repeats: int = 4) -> dict[str, float]:
    """This machine's fp32 matrix-multiply rate with ``threads`` threads: NumPy's BLAS and ORT's MLAS."""
    rates = {}
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    flop = 2.0 * size**3
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=threads):
            rates["numpy"] = flop / min(sample_times(lambda: a @ b, repeats, 1)) / 1e6
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                                  [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "ab"],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rates["onnxruntime"] = flop / min(sample_times(lambda: session.run(None, {"a": a, "b": b}), repeats, 1)) / 1e6
    except ImportError:
        pass
    return rates


def int8_gemm_gops(threads: int, precise: bool, size: int = 2048, repeats: int = 4) -> float:
    """This machine's INT8 matrix-multiply rate (GOP/s) through ONNX Runtime's QLinearMatMul, uint8
    activations x int8 constant weights as the QDQ models hold them, with the precise U8U8 kernel
    (``session.x64quantprecision``) or the default one: the rate of the kernel a runner really uses."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    constants = [numpy_helper.from_array(rng.integers(-127, 127, (size, size), dtype=np.int8), "b")] + [
        numpy_helper.from_array(np.array(value, dtype=dtype), name)
        for name, value, dtype in (("a_scale", 0.02, np.float32), ("a_zero", 128, np.uint8), ("b_scale", 0.01, np.float32),
                                   ("b_zero", 0, np.int8), ("y_scale", 0.5, np.float32), ("y_zero", 128, np.uint8))]
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zero", "b", "b_scale", "b_zero", "y_scale", "y_zero"], ["y"])
    graph = helper.make_graph([node], "qgemm", [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [size, size])], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if precise:
        options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 255, (size, size), dtype=np.uint8)
    return 2.0 * size**3 / min(sample_times(lambda: session.run(None, {"a": a}), repeats, 1)) / 1e6  # samples are in ms


def compute_floor(meta: Sidecar, threads: int, config: BenchConfig, on_step: Step = noop) -> dict[str, Any]:
    """The model's FLOPs over this machine's measured GEMM rates: the fastest an inference could be.

    INT8: with VNNI a quarter of the fp32 floor (VNNI does four int8 multiply-adds where an fp32 FMA
    does one, per lane); without VNNI (or on arm64) that ratio does not hold, so the floor is the
    FLOPs over the measured INT8 GEMM rate of the kernel ONNX Runtime really uses here.
    """
    on_step(f"measuring the fp32 GEMM rate with {threads} thread(s) and counting {meta.arch}'s FLOPs")
    gflop, source = model_gflop(meta)
    # 4096: big enough that two threads reach their steady rate (at 2048 they did not, here).
    rates = gemm_gflops(threads, size=512 if config.quick else 4096, repeats=2 if config.quick else 4)
    best = max(rates.values())
    fp32_ms = gflop / best * 1e3
    floor = {"arch": meta.arch, "gflop_per_image": gflop, "gflop_source": source, "gemm_gflops": rates,
             "gemm_best_gflops": best, "threads": threads, "fp32_floor_ms": fp32_ms}
    info = cpu_info()
    if info.vnni:
        floor.update(int8_floor_ms=fp32_ms / INT8_FLOOR_DIVISOR, int8_floor_rule=f"fp32 floor / {INT8_FLOOR_DIVISOR} (VNNI)")
        return floor
    precise = use_precise_int8(int8_kernel_choice())
    kernel = int8_kernel_name(precise)
    on_step(f"measuring the INT8 GEMM rate of the {kernel} kernel (no VNNI here: the quarter rule does not hold)")
    size, repeats = (512, 2) if config.quick else (2048, 4)
    gops = {int8_kernel_name(p): int8_gemm_gops(threads, p, size, repeats) for p in dict.fromkeys((precise, not precise))}
    floor.update(int8_gemm_gops=gops, int8_floor_ms=gflop / gops[kernel] * 1e3,
                 int8_floor_rule=f"FLOPs / the measured INT8 GEMM rate of ONNX Runtime's {kernel} kernel "
                                 f"({gops[kernel]:.0f} GOP/s, QLinearMatMul {size}²; no VNNI on this CPU)")
    return floor


