"""Where the two approaches run: build the server and serverless backends from a few options.

Shared by the GUI and ``python -m local monitor`` so both reach the same places the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from local.backends import Backend, InProcessBackend

DEFAULT_EMULATOR_MEMORY_MB = 3008  # the reference project's Lambda setting


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
    emulator_memory_mb: int = DEFAULT_EMULATOR_MEMORY_MB
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
        from local.backends import HttpBackend

        return HttpBackend(targets.server_url.rstrip("/") + "/classify" if not targets.server_url.rstrip("/").endswith("/classify")
                           else targets.server_url, timeout=targets.timeout_s, name=targets.server_label, kind="server")
    return InProcessBackend(targets.model, name=targets.server_label)


def serverless_backend(targets: Targets, pool: int = 1) -> Backend:
    """The serverless side; on the emulator, ``pool`` environments answer concurrent requests.

    For the emulator the model is checked against its sidecar first (ModelLoadError with a reason)."""
    if targets.lambda_function:
        from local.backends import LambdaInvokeBackend

        return LambdaInvokeBackend(targets.lambda_function, region=targets.region, timeout=targets.timeout_s)
    if targets.lambda_url:
        from local.backends import HttpBackend

        return HttpBackend(targets.lambda_url, timeout=targets.timeout_s, sigv4_region=targets.region if targets.sigv4 else None,
                           name=targets.serverless_label, kind="serverless")
    from lambda_onnx.sidecar import load_verified
    from local.backends import EmulatorBackend
    from local.emulator import EmulatorPool

    # The function would load it lazily and answer every request 500: say what is wrong now.
    load_verified(targets.model)
    emulators = EmulatorPool(targets.model, size=pool, memory_mb=targets.emulator_memory_mb)
    emulators.start()
    return EmulatorBackend(emulators, name=targets.serverless_label)


def add_target_args(parser) -> None:
    """The options that say where the two sides run (shared by ``python -m gui`` and ``local monitor``)."""
    from local.commands import DEFAULT_MODEL

    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported .onnx (default: %(default)s)")
    serverless = parser.add_argument_group("serverless side (default: the local Lambda emulator)")
    serverless.add_argument("--lambda-url", help="API Gateway or Function URL of a deployed function (…/classify)")
    serverless.add_argument("--sigv4", action="store_true", help="sign --lambda-url requests (IAM-protected Function URL)")
    serverless.add_argument("--lambda-function", help="function name or ARN, invoked through boto3")
    serverless.add_argument("--region", help="AWS region for --lambda-function, --sigv4 and the AWS view")
    serverless.add_argument("--emulator-memory", type=int, default=DEFAULT_EMULATOR_MEMORY_MB,
                            help="memory size the emulator gives the function (default: %(default)s MB)")
    parser.add_argument("--server-url", help="a `python -m local serve` URL instead of the in-process runner")


def targets_from_args(args) -> Targets:
    return Targets(model=args.model, server_url=args.server_url, lambda_url=args.lambda_url,
                   lambda_function=args.lambda_function, region=args.region, sigv4=args.sigv4,
                   emulator_memory_mb=args.emulator_memory)
