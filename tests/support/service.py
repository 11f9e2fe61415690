"""Strategies, candles and a service over in-memory adapters, for the service-level tests."""

from __future__ import annotations

import numpy as np
from engine.core.candles import Candles
from engine.core.strategy import parse_strategy
from engine.service.execution import ExecutionService

from tests.support.fakes import MemoryMarket, MemoryStates, MemoryStrategies

H = 3_600_000
BARS = 300


def candles(seed: int, bars: int = BARS, spike_at: int | None = None) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
    open_ = np.r_[close[0], close[:-1]]
    volume = np.full(bars, 1.0)
    if spike_at is not None:
        volume[spike_at] = 10.0
    return Candles(
        time=np.arange(bars, dtype=np.int64) * H,
        open=open_,
        high=np.maximum(open_, close) * 1.001,
        low=np.minimum(open_, close) * 0.999,
        close=close,
        volume=volume,
    )


def strategy(sid: str, asset: str = "BTC/USDT", period: int = 14, **config: object) -> object:
    return parse_strategy(
        {
            "strategy_id": sid,
            "name": sid,
            "assets": [asset],
            "timeframe": "1h",
            "indicators": {
                "rsi": {"fn": "RSI", "params": {"timeperiod": period}},
                "sma": {"fn": "SMA", "params": {"timeperiod": 20}},
            },
            "entry": {"left": "volume", "op": ">", "right": 5},
            "execution_config": {"stop_loss": {"type": "percent", "value": 0.5}, **config},
        }
    )


NOW = BARS * H  # every bar closed


def make_service(strats, market_candles, failing=frozenset()):
    strategies = MemoryStrategies(strats)
    states = MemoryStates(strategies)
    market = MemoryMarket(market_candles, set(failing))
    svc = ExecutionService(strategies, states, market, stale_policy="reject", clock=lambda: NOW)
    return svc, states, market
