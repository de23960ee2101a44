"""Typed errors shared by every entry point.

Each error carries the HTTP status the edges (Lambda handler, ``local serve``,
GUI, CLI) translate it to, so a bad input gets the same answer everywhere.
"""

from __future__ import annotations


class ClassifierError(Exception):
    """Base class: an error with an HTTP status and a stable machine-readable code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, "status": self.status}


# --- bad requests (4xx): the caller can fix them -------------------------------------------


class BadRequestError(ClassifierError):
    """Malformed request: bad JSON, missing field, bad base64."""

    status = 400
    code = "bad_request"


class InvalidImageError(BadRequestError):
    """Empty, truncated or undecodable image bytes."""

    code = "invalid_image"


class MethodNotAllowedError(ClassifierError):
    """Only POST classifies."""

    status = 405
    code = "method_not_allowed"


class PayloadTooLargeError(ClassifierError):
    """More bytes or more pixels than the stated limits."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(ClassifierError):
    """A content type that is not allowed, or a recognised but unsupported format (SVG, PDF)."""

    status = 415
    code = "unsupported_media_type"


class OverloadedError(ClassifierError):
    """The server is at capacity; retry later."""

    status = 503
    code = "overloaded"


# --- faults of the deployment, not of the request -------------------------------------------


class ModelLoadError(ClassifierError):
    """The model or its sidecar is missing, corrupt or inconsistent (detected at start-up)."""

    code = "model_load_error"


class WeightsUnavailableError(ClassifierError):
    """Pretrained weights could not be obtained (e.g. no network)."""

    code = "weights_unavailable"


class ModelTooLargeError(ClassifierError):
    """The model does not fit in one self-contained ONNX file (protobuf's 2 GB limit)."""

    code = "model_too_large"


class ParityError(ClassifierError):
    """The exported model disagrees with PyTorch beyond the stated tolerances."""

    code = "parity_failed"

    def __init__(self, failures: list[str]) -> None:
        super().__init__("parity check failed:\n  " + "\n  ".join(failures))
        self.failures = failures


# --- client side: reaching a backend ----------------------------------------------------------


class BackendError(ClassifierError):
    """A backend could not be reached or answered with an error.

    ``status`` is the HTTP status the backend answered with, or 0 when no answer came back
    (connection refused, timeout, crashed emulator).
    """

    code = "backend_error"

    def __init__(self, message: str, status: int = 0, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        if code:
            self.code = code


class BackendUnavailableError(BackendError):
    """Connection refused, DNS failure, process not running."""

    code = "backend_unavailable"


class BackendTimeoutError(BackendError):
    """No answer within the timeout."""

    code = "backend_timeout"


class ThrottledError(BackendError):
    """429 / TooManyRequestsException: the service is throttling; retry with backoff."""

    code = "throttled"
