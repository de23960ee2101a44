"""torch module -> one self-contained ``.onnx`` file, checked by ``onnx.checker``."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from lambda_onnx.errors import ModelTooLargeError

# Opset 20 is what torch's dynamo exporter emits by default for this torch version; ONNX Runtime
# has supported it since 1.17. Stated here so that the file does not change with a torch upgrade.
OPSET = 20
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"


def export_onnx(module: torch.nn.Module, path: Path, crop_size: int, *, opset: int = OPSET, example_batch: int = 2) -> None:
    """Export with the dynamo exporter, weights inside the file, a dynamic batch axis.

    torch's dynamo exporter writes weights to a separate ``.onnx.data`` file by default;
    ``external_data=False`` keeps them inside (a single protobuf, hence the 2 GiB limit).
    """
    path = Path(path)
    example = torch.randn(example_batch, 3, crop_size, crop_size)
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # torch.export's deprecation chatter, not ours to fix
        program = torch.onnx.export(
            module.eval(),
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    # Only the legacy (dynamo=False) exporter returns None; torch's signature covers both.
    assert program is not None, "torch.onnx.export(dynamo=True) returned no ONNXProgram"
    program.save(str(path), external_data=False)
    stray = path.with_name(path.name + ".data")
    if stray.exists():  # a self-contained file is the contract: never ship a split one
        stray.unlink()
        raise ModelTooLargeError(f"{path.name} needed external data; one self-contained file holds at most 2 GiB")
    onnx.checker.check_model(str(path), full_check=True)


def describe(path: Path) -> tuple[list, list]:
    """(input names and shapes, output names and shapes) as the ONNX graph declares them."""
    model = onnx.load(str(path), load_external_data=False)

    def dims(value: onnx.ValueInfoProto) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return ([(i.name, dims(i)) for i in model.graph.input], [(o.name, dims(o)) for o in model.graph.output])
