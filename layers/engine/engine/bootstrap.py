"""Wiring from configuration: which adapters the service runs on, chosen by environment.

Built once per Lambda container (module-level cache) so warm invocations reuse clients.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import cast

from engine.service import ExecutionService, StalePolicy


def stale_policy(env: Mapping[str, str]) -> StalePolicy:
    value = env.get("STALE_DATA_POLICY", "reject")
    if value not in ("reject", "warn"):
        raise ValueError(f"STALE_DATA_POLICY must be reject or warn, not {value!r}")
    return cast(StalePolicy, value)


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
        stale_policy=stale_policy(env),
    )


@cache
def service() -> ExecutionService:
    return build_service(os.environ)
