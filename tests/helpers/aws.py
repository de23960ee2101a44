"""AWS credentials for tests: boto3 signs every request, so it gets keys that exist nowhere."""

from __future__ import annotations

import pytest


def use_fake_aws(env: pytest.MonkeyPatch, region: str = "us-east-1") -> None:
    """boto3 signs every request: give it credentials that exist nowhere, a region, and no profile
    or session token of the machine's own."""
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDTESTSONLY", "AWS_SECRET_ACCESS_KEY": "tests-only-secret",
                        "AWS_DEFAULT_REGION": region}.items():
        env.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.delenv(name, raising=False)
