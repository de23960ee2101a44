"""Where the two approaches run: build the server and serverless backends from a few options.

Shared by the GUI and ``python -m local monitor`` so both reach the same places the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from local.clients.base import Backend
from local.clients.inprocess import InProcessBackend
from local.defaults import DEFAULT_MEMORY_MB


@dataclass(frozen=True)
class Targets:
    """Server: in-process (default) or a ``local serve`` URL. Serverless: the local emulator
    (default), a Lambda URL (API Gateway or Function URL, optionally SigV4-signed), or a
    function name invoked through boto3."""

    model: Path
    server_url: str | None = None
    lambda_url: str | None = None
    lambda_function: str | None = None
    region: str | None = None
    sigv4: bool = False
    emulator_memory_mb: int = DEFAULT_MEMORY_MB
    timeout_s: float = 60.0

    @property
    def serverless_is_aws(self) -> bool:
        return bool(self.lambda_url or self.lambda_function)

    @property
    def serverless_label(self) -> str:
        if self.lambda_function:
            return f"AWS Lambda {self.lambda_function} ({self.region or 'default region'}, boto3 invoke)"
        if self.lambda_url:
            return f"AWS Lambda at {self.lambda_url}" + (" (SigV4)" if self.sigv4 else "")
        return f"Lambda emulator (AWS RIE, {self.emulator_memory_mb} MB)"

    @property
    def server_label(self) -> str:
        return f"local serve at {self.server_url}" if self.server_url else "in-process ONNX Runtime"


def server_backend(targets: Targets) -> Backend:
    if targets.server_url:
        from local.clients.http import HttpBackend

        return HttpBackend(targets.server_url.rstrip("/") + "/classify" if not targets.server_url.rstrip("/").endswith("/classify")
                           else targets.server_url, timeout=targets.timeout_s, name=targets.server_label, kind="server")
    return InProcessBackend(targets.model, name=targets.server_label)


def serverless_backend(targets: Targets, pool: int = 1) -> Backend:
    """The serverless side; on the emulator, ``pool`` environments answer concurrent requests.

    For the emulator the model is checked against its sidecar first (ModelLoadError with a reason)."""
    if targets.lambda_function:
        from local.clients.invoke import LambdaInvokeBackend

        return LambdaInvokeBackend(targets.lambda_function, region=targets.region, timeout=targets.timeout_s)
    if targets.lambda_url:
        from local.clients.http import HttpBackend

        return HttpBackend(targets.lambda_url, timeout=targets.timeout_s, sigv4_region=targets.region if targets.sigv4 else None,
                           name=targets.serverless_label, kind="serverless")
    from lambda_onnx.sidecar import load_verified
    from local.clients.emulator import EmulatorBackend
    from local.lambda_env.pool import EmulatorPool

    # The function would load it lazily and answer every request 500: say what is wrong now.
    load_verified(targets.model)
    emulators = EmulatorPool(targets.model, size=pool, memory_mb=targets.emulator_memory_mb)
    emulators.start()
    return EmulatorBackend(emulators, name=targets.serverless_label)
