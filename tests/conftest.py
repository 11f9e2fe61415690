"""Fixtures every test directory shares: moto's DynamoDB with the engine's tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from engine.adapters import dynamodb
from engine.adapters.dynamodb import (
    DynamoRepositories,
    RetryPolicy,
    dynamo_repositories,
)
from moto import mock_aws

from tests.support.aws import models_restored, use_fake_aws

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's DynamoDB with the models' tables, whatever the models were configured with."""
    use_fake_aws(monkeypatch)
    with models_restored(), mock_aws():
        dynamodb.bind(host=None, region=REGION)
        dynamodb.create_tables(wait=True)
        yield


def _no_sleep(_: float) -> None:
    pass


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def repos(aws: None, sleeps: list[float]) -> DynamoRepositories:
    """Repositories with their own snapshots, retrying without really sleeping."""
    return dynamo_repositories(retry=RetryPolicy(attempts=4, sleep=sleeps.append))
