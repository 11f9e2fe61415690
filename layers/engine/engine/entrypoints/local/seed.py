"""The demo seed: one strategy and recent candles, so a fresh `make dev` answers at once."""

from __future__ import annotations

import numpy as np

from engine.core.candles import Candles
from engine.core.strategy import Strategy, parse_strategy
from engine.core.timeframes import bucket_start, timeframe_ms

DEMO_ASSET = "BTC/USDT"
DEMO_TIMEFRAME = "1h"

DEMO_STRATEGY = {
    "strategy_id": "demo-rsi-btc",
    "name": "Demo: RSI mean reversion on BTC/USDT",
    "status": "active",
    "assets": [DEMO_ASSET],
    "timeframe": DEMO_TIMEFRAME,
    "indicators": {
        "rsi": {"fn": "RSI", "params": {"timeperiod": 14}},
        "sma": {"fn": "SMA", "params": {"timeperiod": 50}},
        "atr": {"fn": "ATR", "params": {"timeperiod": 14}},
    },
    "entry": {
        "all": [{"left": "rsi", "op": "<", "right": 45}, {"left": "close", "op": ">", "right": 0}]
    },
    "exit": {"any": [{"left": "rsi", "op": "crosses_above", "right": 70}]},
    "execution_config": {
        "position_sizing": {"type": "fixed_notional", "value": 1000},
        "max_open_positions": 1,
        "stop_loss": {"type": "atr", "indicator": "atr", "multiplier": 2},
        "take_profit": {"type": "risk_reward", "ratio": 2.0},
        "time_based_exits": {"max_hold_bars": 48},
        "fee_rate": 0.001,
        "cooldown_config": {
            "1h": {
                "short_loss_limit": 2,
                "short_window_bars": 12,
                "long_loss_limit": 4,
                "long_window_bars": 48,
            }
        },
    },
}


def demo_strategy() -> Strategy:
    return parse_strategy(DEMO_STRATEGY)


def demo_candles(now_ms: int, bars: int = 600, seed: int = 7) -> Candles:
    """A deterministic random walk whose newest bar is the last one closed by `now_ms`."""
    step = timeframe_ms(DEMO_TIMEFRAME)
    last_open = bucket_start(now_ms, DEMO_TIMEFRAME) - step
    times = last_open - step * np.arange(bars - 1, -1, -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    close = 60_000 * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 0.002, bars)) * close
    return Candles(
        time=times,
        open=open_,
        high=np.maximum(open_, close) + spread,
        low=np.minimum(open_, close) - spread,
        close=close,
        volume=rng.uniform(10, 100, bars),
    )
