"""Size limits, stated once, enforced before any pixel is allocated."""

# Lambda's synchronous invoke payload limit (request and response), 6 MiB. It applies on every
# path, API Gateway included: https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024

# Room for the event envelope around the body (headers, request context of an HTTP API event).
EVENT_ENVELOPE_BYTES = 16 * 1024

# The largest image that still fits in one invoke once base64 has added its third.
MAX_IMAGE_BYTES = (LAMBDA_PAYLOAD_BYTES - EVENT_ENVELOPE_BYTES) * 3 // 4

# A request body (JSON with base64, or raw bytes) larger than this cannot have come through Lambda.
MAX_REQUEST_BYTES = LAMBDA_PAYLOAD_BYTES

# Decoded pixels: 50 MP covers a 48 MP phone sensor; a bomb declaring more is refused before decoding.
MAX_PIXELS = 50_000_000
