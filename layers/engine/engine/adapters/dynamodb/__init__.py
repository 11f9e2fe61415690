"""DynamoDB storage through PynamoDB: the models (one definition of the tables) and the
repositories that implement engine.service.ports. Items are written only through the repositories."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.adapters.dynamodb._retry import RetryPolicy
from engine.adapters.dynamodb.admin import create_tables, delete_tables, table_definitions
from engine.adapters.dynamodb.candles import DynamoCandleRepository
from engine.adapters.dynamodb.connection import bind, configure, reset_connections
from engine.adapters.dynamodb.errors import (
    StorageError,
    StoredStrategyInvalid,
    TableMissing,
    TransactionTooLarge,
)
from engine.adapters.dynamodb.models import ALL_MODELS
from engine.adapters.dynamodb.snapshots import StrategySnapshots
from engine.adapters.dynamodb.state import DynamoStateRepository
from engine.adapters.dynamodb.strategies import DynamoStrategyRepository

__all__ = [
    "ALL_MODELS",
    "DynamoCandleRepository",
    "DynamoRepositories",
    "DynamoStateRepository",
    "DynamoStrategyRepository",
    "RetryPolicy",
    "StorageError",
    "StoredStrategyInvalid",
    "StrategySnapshots",
    "TableMissing",
    "TransactionTooLarge",
    "bind",
    "configure",
    "create_tables",
    "delete_tables",
    "dynamo_repositories",
    "reset_connections",
    "table_definitions",
]


@dataclass
class DynamoRepositories:
    strategies: DynamoStrategyRepository
    states: DynamoStateRepository
    candles: DynamoCandleRepository
    snapshots: StrategySnapshots = field(repr=False)


def dynamo_repositories(
    *,
    retry: RetryPolicy | None = None,
    bulk_threshold: int | None = None,
    history_ttl_days: int = 0,
) -> DynamoRepositories:
    """The three repositories, wired together: the strategy and state ones share their
    snapshots, so that get_many followed by load reads each strategy item once."""
    snapshots = StrategySnapshots()
    retry = retry or RetryPolicy()
    states = DynamoStateRepository(
        snapshots=snapshots, retry=retry, history_ttl_days=history_ttl_days
    )
    if bulk_threshold is not None:
        states.bulk_threshold = bulk_threshold
    return DynamoRepositories(
        strategies=DynamoStrategyRepository(snapshots=snapshots, retry=retry),
        states=states,
        candles=DynamoCandleRepository(retry=retry),
        snapshots=snapshots,
    )
