"""Wiring from configuration: which adapters the service runs on, chosen by environment.

Built once per Lambda container (module-level cache) so warm invocations reuse clients.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache

from engine.adapters.marketdata import parse_stale_policy
from engine.service.execution import ExecutionService


def build_service(env: Mapping[str, str]) -> ExecutionService:
    from engine.adapters.dynamodb import (
        DynamoCandleRepository,
        DynamoStateRepository,
        DynamoStrategyRepository,
    )
    from engine.adapters.marketdata import provider_from_config

    candles = DynamoCandleRepository()
    return ExecutionService(
        strategies=DynamoStrategyRepository(),
        states=DynamoStateRepository(
            history_ttl_days=_whole_number(env, "HISTORY_TTL_DAYS", default=0)
        ),
        market_data=provider_from_config(env, candle_repository=candles),
        stale_policy=parse_stale_policy(env.get("STALE_DATA_POLICY", "reject")),
        commit_workers=positive_int(env, "COMMIT_WORKERS", default=1),
    )


def positive_int(env: Mapping[str, str], name: str, *, default: int) -> int:
    """A whole-number setting of at least 1; a ValueError naming the variable otherwise."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


def _whole_number(env: Mapping[str, str], name: str, *, default: int) -> int:
    """A setting of 0 or more; a ValueError naming the variable otherwise."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number of 0 or more, not {raw!r}")
    return int(raw)


@cache
def service() -> ExecutionService:
    return build_service(os.environ)
