"""What every moto-backed test needs: fake credentials, and the storage models' binding
restored afterwards (table names and hosts are read at import, and tests rebind them)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from engine.adapters import dynamodb
from engine.adapters.dynamodb import models as storage_models
from engine.entrypoints.local.moto import dynamodb_requests_atomic

REGION = "us-east-1"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


# Anything that could point a client at a real account or endpoint, or at a real queue.
UNSET_ENV = ("DYNAMODB_ENDPOINT", "AWS_PROFILE", "FANOUT_QUEUE_URL")


def use_fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region; no endpoint or profile that could reach a real account."""
    for key in UNSET_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)


@contextmanager
def fake_aws_env() -> Iterator[None]:
    """use_fake_aws outside pytest's fixtures (bench/soak.py runs the trials without pytest)."""
    saved = {name: os.environ.get(name) for name in (*FAKE_AWS_ENV, *UNSET_ENV)}
    try:
        for name in UNSET_ENV:
            os.environ.pop(name, None)
        os.environ.update(FAKE_AWS_ENV)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
            dynamodb.reset_connections()


def scan_tables(client: Any) -> dict[str, list[dict[str, Any]]]:
    """Every item of every table, raw, in a stable order, through a plain boto3 client
    (independent of PynamoDB and of any fault a test injects into its clients)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for model in storage_models.ALL_MODELS:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": model.Meta.table_name, "ConsistentRead": True}
        while True:
            page = client.scan(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        out[model.Meta.table_name] = sorted(
            items, key=lambda i: json.dumps(i, sort_keys=True, default=repr)
        )
    return out


# One mechanism for the tests' in-process moto and the local stack's moto server.
moto_requests_atomic = dynamodb_requests_atomic
