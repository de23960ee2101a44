"""Clients: one interface (``classify(image) -> BackendResult``, ``close()``) for every way to reach a backend.

Failures raise the typed errors of :mod:`lambda_onnx.errors` (``BackendError`` and subclasses,
carrying the server's status and message). The GUI, the monitor, the benchmark and the tests see
only this interface.

- :class:`InProcessBackend` (:mod:`local.clients.inprocess`): the classifier in this process;
- :class:`HttpBackend` (:mod:`local.clients.http`): any URL speaking the contract (API Gateway, a
  Function URL, ``local serve``), optionally SigV4-signed for ``AWS_IAM`` Function URLs;
- :class:`LambdaInvokeBackend` (:mod:`local.clients.invoke`): boto3 ``invoke`` by function name or
  ARN (or the emulator, through ``endpoint_url``), over the one :class:`LambdaClient`;
- :class:`EmulatorBackend` (:mod:`local.clients.emulator`): the local Lambda emulator (one
  environment, a pool or an elastic pool), each request an API Gateway HTTP API 2.0 event;
- :mod:`local.clients.targets`: which of these each side of the comparison uses.
"""

from local.clients.base import Backend, BackendResult
from local.clients.emulator import EmulatorBackend
from local.clients.http import HttpBackend
from local.clients.inprocess import InProcessBackend
from local.clients.invoke import LambdaClient, LambdaInvokeBackend

__all__ = ["Backend", "BackendResult", "EmulatorBackend", "HttpBackend", "InProcessBackend", "LambdaClient",
           "LambdaInvokeBackend"]
