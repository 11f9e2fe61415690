"""What every moto-backed test needs: fake credentials, and the storage models' binding
restored afterwards (table names and hosts are read at import, and tests rebind them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from engine.storage import models as storage_models

REGION = "us-east-1"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


def use_fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region; no endpoint or profile that could reach a real account."""
    monkeypatch.delenv("DYNAMODB_ENDPOINT", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)


@contextmanager
def models_restored(
    *, reset_connections: bool = True
) -> Iterator[list[tuple[object, str | None, str]]]:
    """Yield the models' (model, host, region) as they were, and put them back afterwards."""
    saved = [(m, m.Meta.host, m.Meta.region) for m in storage_models.ALL_MODELS]
    try:
        yield saved  # type: ignore[misc]
    finally:
        for model, host, region in saved:
            model.Meta.host = host
            model.Meta.region = region
        if reset_connections:
            storage_models.reset_connections()
