"""Importing ``lambda_onnx.handler`` as Lambda's init does, once per call, without leaving it in ``sys.modules``."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def fresh_handler() -> ModuleType:
    """``lambda_onnx.handler`` imported anew from the current environment (its init runs: model, canary),
    then taken out of ``sys.modules`` again, so other tests import their own; a module already there is put back."""
    previous = sys.modules.pop("lambda_onnx.handler", None)
    try:
        return importlib.import_module("lambda_onnx.handler")
    finally:
        sys.modules.pop("lambda_onnx.handler", None)
        if previous is not None:
            sys.modules["lambda_onnx.handler"] = previous
