"""Wiring from configuration: which adapters the service runs on, chosen by environment.

Built once per Lambda container (module-level cache) so warm invocations reuse clients.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache

from engine.marketdata import parse_stale_policy
from engine.service import ExecutionService


def build_service(env: Mapping[str, str]) -> ExecutionService:
    from engine.marketdata import provider_from_config
    from engine.storage import (
        DynamoCandleRepository,
        DynamoStateRepository,
        DynamoStrategyRepository,
    )

    candles = DynamoCandleRepository()
    return ExecutionService(
        strategies=DynamoStrategyRepository(),
        states=DynamoStateRepository(),
        market_data=provider_from_config(env, candle_repository=candles),
        stale_policy=parse_stale_policy(env.get("STALE_DATA_POLICY", "reject")),
    )


@cache
def service() -> ExecutionService:
    return build_service(os.environ)
