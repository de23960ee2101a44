"""Any URL speaking the contract: API Gateway, a Lambda Function URL (SigV4 for AWS_IAM), ``local serve``."""

from __future__ import annotations

import time

from lambda_onnx.errors import BackendError, BackendTimeoutError, BackendUnavailableError
from local.clients.base import CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, BackendResult
from local.wire import SENDS, Send, json_request, raise_for_body, sniff_content_type


class HttpBackend:
    """``POST`` the contract to a URL: API Gateway, a Lambda Function URL or ``local serve``.

    ``send="json"`` posts ``{"image": "<base64>"}``; ``"binary"`` posts the raw bytes with their
    image content type. ``sigv4_region`` signs each request with the default AWS credentials
    (service ``lambda``), as an ``AWS_IAM`` Function URL requires. Only connection attempts are
    retried: a request that may have reached the function is never sent twice.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S, connect_timeout: float = CONNECT_TIMEOUT_S,
                 sigv4_region: str | None = None, sigv4_service: str = "lambda", send: Send = "json",
                 connect_retries: int = 1, kind: str = "serverless", name: str | None = None) -> None:
        import httpx

        if send not in SENDS:
            raise ValueError(f"send must be one of {SENDS}, got {send!r}")
        self.url, self.send, self.kind = url, send, kind
        self.name = name or f"http {url}"
        self.sigv4_region, self.sigv4_service = sigv4_region, sigv4_service
        self._credentials = None
        if sigv4_region:
            import botocore.session

            self._credentials = botocore.session.get_session().get_credentials()
            if self._credentials is None:
                raise BackendError(f"{self.name}: no AWS credentials found to sign requests with (SigV4 for region "
                                   f"{sigv4_region}); configure them as for the AWS CLI", code="no_credentials")
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=connect_timeout),
                                    transport=httpx.HTTPTransport(retries=connect_retries), follow_redirects=False)

    def _signed(self, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="POST", url=self.url, data=body, headers=headers)
        SigV4Auth(self._credentials, self.sigv4_service, self.sigv4_region).add_auth(request)
        return dict(request.headers.items())

    def classify(self, image: bytes) -> BackendResult:
        import httpx

        if self.send == "json":
            body, headers = json_request(image), {"content-type": "application/json"}
        else:
            body, headers = image, {"content-type": sniff_content_type(image)}
        if self._credentials is not None:
            headers = self._signed(body, headers)
        start = time.perf_counter()
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.ConnectError as exc:
            raise BackendUnavailableError(f"{self.name}: cannot connect ({exc})") from None
        except httpx.TimeoutException as exc:
            raise BackendTimeoutError(f"{self.name}: no answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"{self.name}: the connection failed ({type(exc).__name__}: {exc})") from None
        elapsed = (time.perf_counter() - start) * 1e3
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            parsed = {"message": response.text[:300].strip() or response.reason_phrase}
            if response.status_code == 200:
                raise BackendError(f"{self.name}: HTTP 200 but the body is not a JSON object: {parsed['message']}",
                                   status=200, code="bad_response")
        answer = raise_for_body(response.status_code, parsed, self.name)
        return BackendResult(self.name, self.kind, response.status_code, answer, elapsed, len(body), len(response.content),
                             extra={"http_version": response.http_version})

    def close(self) -> None:
        self._client.close()
