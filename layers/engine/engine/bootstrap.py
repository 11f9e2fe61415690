"""Wiring: the one place that picks adapters and hands the service its settings.

A Lambda builds its service once per container (`service()`, cached) so warm invocations reuse
clients; the CLI and the local stack call `build_service` with the settings they were given.
"""

from __future__ import annotations

from functools import cache

from engine.service.execution import ExecutionService
from engine.settings import Settings, settings


def build_service(config: Settings) -> ExecutionService:
    """The service on DynamoDB and the configured market data, repositories wired together."""
    from engine.adapters.dynamodb import configure, dynamo_repositories
    from engine.adapters.marketdata import provider_from_settings

    configure(config)
    repos = dynamo_repositories(history_ttl_days=config.history_ttl_days)
    return ExecutionService(
        strategies=repos.strategies,
        states=repos.states,
        market_data=provider_from_settings(config.market_data, candle_repository=repos.candles),
        stale_policy=config.stale_policy,
        commit_workers=config.commit_workers,
    )


@cache
def service() -> ExecutionService:
    """The container's service, built from the process's settings on first use."""
    return build_service(settings())
