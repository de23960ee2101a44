"""Test-only helpers (never imported by the product): events, processes, AWS credentials, the hostile
corpus, the image task-root builder, the browser."""
