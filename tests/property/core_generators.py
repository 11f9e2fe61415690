"""Hypothesis generators for the engine-core property tests.

Strategies come in a few indicator/condition shapes with random stops, targets, sizing,
fees, max-open, max-hold and cooldowns (tiers or legacy keys), on a drawn primary timeframe
(informative indicators on a drawn coarser one). Markets are random walks on that
timeframe's clock, optionally with closures (gaps in time), one series per asset, generated
from a drawn seed so that examples stay cheap and reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from engine.core.candles import Candles
from engine.core.evaluate import compile_strategy, evaluate
from engine.core.market import MarketData
from engine.core.state import EvaluationResult, ExecutionState
from engine.core.strategy import Strategy, parse_strategy
from engine.core.timeframes import TIMEFRAME_MS
from hypothesis import strategies as st

from tests.support.core import T0

ASSETS = ("AAA/USD", "BBB/USD")
TIMEFRAMES = tuple(TIMEFRAME_MS)  # T0 is a Monday 00:00: aligned for each, 1w included


def coarser(timeframe: str) -> list[str]:
    """Informative timeframes for a primary one: the coarser ones (1w has only itself)."""
    found = [tf for tf in TIMEFRAMES if TIMEFRAME_MS[tf] > TIMEFRAME_MS[timeframe]]
    return found or [timeframe]


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    # a coarse grid: shrinks well and keeps documents readable in failure reports
    return st.integers(int(lo * 1000), int(hi * 1000)).map(lambda v: v / 1000)


@st.composite
def signal_shapes(
    draw: st.DrawFn, timeframe: str = "1h"
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """(indicators, entry, exit or None) of one of a few shapes."""
    shape = draw(st.sampled_from(["volume", "sma_cross", "rsi", "macd", "informative", "combo"]))
    with_exit = draw(st.booleans())
    if shape == "volume":
        entry = {"left": "volume", "op": ">", "right": draw(_floats(5, 9.5))}
        exit_ = {"left": "volume", "op": "<", "right": draw(_floats(0.1, 2))}
        return {}, entry, exit_ if with_exit else None
    if shape == "sma_cross":
        fast = draw(st.integers(2, 5))
        slow = draw(st.integers(fast + 1, 12))
        indicators = {
            "fast": {"fn": "SMA", "params": {"timeperiod": fast}},
            "slow": {"fn": "EMA", "params": {"timeperiod": slow}},
        }
        entry = {"left": "fast", "op": "crosses_above", "right": "slow"}
        exit_ = {"left": "fast", "op": "crosses_below", "right": "slow"}
        return indicators, entry, exit_ if with_exit else None
    if shape == "rsi":
        period = draw(st.integers(3, 14))
        indicators = {"rsi": {"fn": "RSI", "params": {"timeperiod": period}}}
        entry = {"left": "rsi", "op": "<", "right": draw(st.integers(30, 55))}
        exit_ = {"left": "rsi", "op": ">=", "right": draw(st.integers(55, 75))}
        return indicators, entry, exit_ if with_exit else None
    if shape == "macd":
        fast = draw(st.integers(2, 5))
        slow = draw(st.integers(fast + 1, 12))
        indicators = {
            "macd": {
                "fn": "MACD",
                "params": {
                    "fastperiod": fast,
                    "slowperiod": slow,
                    "signalperiod": draw(st.integers(2, 5)),
                },
            }
        }
        entry = {"left": "macd.macd", "op": "crosses_above", "right": "macd.macdsignal"}
        exit_ = {"left": "macd.macdhist", "op": "<", "right": 0}
        return indicators, entry, exit_ if with_exit else None
    if shape == "informative":
        indicators = {
            "trend": {
                "fn": "SMA",
                "params": {"timeperiod": draw(st.integers(2, 4))},
                "timeframe": draw(st.sampled_from(coarser(timeframe)[:4])),
            }
        }
        entry = {
            "all": [
                {"left": "close", "op": ">", "right": "trend"},
                {"left": "volume", "op": ">", "right": draw(_floats(3, 8))},
            ]
        }
        shift = draw(st.integers(1, 4))
        exit_ = {"left": "close", "op": "<", "right": {"ref": "close", "shift": shift}}
        return indicators, entry, exit_ if with_exit else None
    shift = draw(st.integers(1, 3))
    entry = {
        "any": [
            {"left": "volume", "op": ">", "right": draw(_floats(7, 9.9))},
            {
                "all": [
                    {"left": "close", "op": ">", "right": {"ref": "close", "shift": shift}},
                    {"not": {"left": "high", "op": "<", "right": {"ref": "high", "shift": 1}}},
                    {"left": "volume", "op": ">", "right": 4},
                ]
            },
        ]
    }
    exit_ = {"left": "close", "op": "crosses_below", "right": {"ref": "open", "shift": 1}}
    return {}, entry, exit_ if with_exit else None


@st.composite
def cooldowns(draw: st.DrawFn, timeframe: str = "1h") -> dict[str, Any]:
    kind = draw(st.sampled_from(["none", "tiers", "legacy"]))
    if kind == "none":
        return {}
    if kind == "tiers":
        tiers = {
            "short_loss_limit": draw(st.integers(0, 3)),
            "short_window_bars": draw(st.integers(0, 10)),
            "long_loss_limit": draw(st.integers(0, 5)),
            "long_window_bars": draw(st.integers(0, 40)),
        }
        return {"cooldown_config": {timeframe: tiers}}
    ranges = {
        "cooldown_bars": (1, 10),
        "daily_momentum_limit": (1, 3),
        "weekly_momentum_limit": (1, 5),
    }
    keys = draw(st.lists(st.sampled_from(sorted(ranges)), min_size=1, max_size=3, unique=True))
    return {key: draw(st.integers(*ranges[key])) for key in sorted(keys)}


@st.composite
def strategy_docs(draw: st.DrawFn, timeframe: str | None = None) -> dict[str, Any]:
    if timeframe is None:
        timeframe = draw(st.sampled_from(TIMEFRAMES))
    indicators, entry, exit_ = draw(signal_shapes(timeframe))
    config: dict[str, Any] = {}
    stop_kind = draw(st.sampled_from([None, "percent", "atr"]))
    target_kind = draw(
        st.sampled_from([None, "percent", "atr"] + (["risk_reward"] if stop_kind else []))
    )
    if "atr" in (stop_kind, target_kind):
        indicators["atr"] = {"fn": "ATR", "params": {"timeperiod": draw(st.integers(2, 10))}}
    if stop_kind == "percent":
        config["stop_loss"] = {"type": "percent", "value": draw(_floats(0.003, 0.05))}
    elif stop_kind == "atr":
        config["stop_loss"] = {
            "type": "atr",
            "indicator": "atr",
            "multiplier": draw(_floats(0.5, 3)),
        }
    if target_kind == "percent":
        config["take_profit"] = {"type": "percent", "value": draw(_floats(0.003, 0.08))}
    elif target_kind == "atr":
        config["take_profit"] = {
            "type": "atr",
            "indicator": "atr",
            "multiplier": draw(_floats(0.5, 4)),
        }
    elif target_kind == "risk_reward":
        config["take_profit"] = {"type": "risk_reward", "ratio": draw(_floats(0.5, 3))}
    config["max_open_positions"] = draw(st.integers(1, 3))
    max_hold = draw(st.none() | st.integers(1, 12))
    if max_hold is not None:
        config["time_based_exits"] = {"max_hold_bars": max_hold}
    config["fee_rate"] = draw(st.sampled_from([0.0, 0.001, 0.004]))
    config["position_sizing"] = draw(
        st.sampled_from(
            [
                {"type": "fixed_quantity", "value": 1},
                {"type": "fixed_quantity", "value": 2.5},
                {"type": "fixed_notional", "value": 1000},
            ]
        )
    )
    config.update(draw(cooldowns(timeframe)))
    assets = list(ASSETS[: draw(st.integers(1, 2))])
    doc: dict[str, Any] = {
        "strategy_id": "prop-" + draw(st.sampled_from(["a", "b", "c"])),
        "name": "property",
        "assets": assets,
        "timeframe": timeframe,
        "indicators": indicators,
        "entry": entry,
        "execution_config": config,
    }
    if exit_ is not None:
        doc["exit"] = exit_
    return doc


def random_walk(rng: np.random.Generator, times: np.ndarray) -> Candles:
    n = len(times)
    vol = rng.uniform(0.004, 0.03)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    prev = np.r_[close[0], close[:-1]]
    open_ = prev * np.exp(rng.normal(0, vol / 2, n))  # gaps between bars
    high = np.maximum(open_, close) * (1 + rng.uniform(0, vol, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, vol, n))
    volume = rng.uniform(0, 10, n)
    return Candles(times.astype(np.int64), open_, high, low, close, volume)


@dataclass(frozen=True)
class Market:
    candles: dict[str, Candles]
    timeframe: str = "1h"

    @property
    def times(self) -> np.ndarray:
        return next(iter(self.candles.values())).time

    def now_after(self, index: int) -> int:
        return int(self.times[index]) + TIMEFRAME_MS[self.timeframe]

    def data(self) -> MarketData:
        return MarketData({(asset, self.timeframe): c for asset, c in self.candles.items()})

    def data_up_to(self, now_ms: int) -> MarketData:
        """Only the bars closed by now_ms: what a provider could have returned then."""
        tf = self.timeframe
        return MarketData(
            {(asset, tf): c.head(c.closed_count(tf, now_ms)) for asset, c in self.candles.items()}
        )


@st.composite
def markets(
    draw: st.DrawFn, timeframe: str = "1h", min_bars: int = 30, max_bars: int = 200
) -> Market:
    n = draw(st.integers(min_bars, max_bars))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    steps = np.ones(n, dtype=np.int64)
    if draw(st.booleans()):  # the market closes now and then: gaps of 2..60 bars
        closed = rng.random(n) < 0.08
        steps[closed] = rng.integers(2, 60, closed.sum())
    steps[0] = 0
    times = T0 + np.cumsum(steps) * TIMEFRAME_MS[timeframe]
    return Market({asset: random_walk(rng, times) for asset in ASSETS}, timeframe)


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], Market]:
    """A strategy document and a market on its primary timeframe."""
    doc = draw(strategy_docs(), label="doc")
    return doc, draw(markets(doc["timeframe"]), label="market")


@st.composite
def schedules(draw: st.DrawFn, n: int) -> list[int]:
    """Increasing bar indices to evaluate at, to the last bar; skipped bars are missed
    evaluations (catch-up), from none to most of them."""
    start = draw(st.integers(0, n // 4))
    miss = draw(st.sampled_from([0.0, 0.0, 0.3, 0.7]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    evaluated = rng.random(n) >= miss
    out = [i for i in range(start, n) if evaluated[i]]
    return out if out and out[-1] == n - 1 else [*out, n - 1]


def build(doc: dict[str, Any]) -> Strategy:
    return parse_strategy(doc)


def chain(
    strategy: Strategy,
    schedule: Sequence[int],
    market: Market,
    data_at: Callable[[int], MarketData],
    on_step: Callable[[int, EvaluationResult, ExecutionState], None] | None = None,
) -> list[EvaluationResult]:
    """Evaluate at each scheduled bar, carrying the state; data_at(now) gives the market."""
    compiled = compile_strategy(strategy)
    state = ExecutionState(strategy_id=strategy.strategy_id)
    results = []
    for index in schedule:
        now = market.now_after(index)
        result = evaluate(compiled, state, data_at(now), now)
        if on_step is not None:
            on_step(now, result, state)
        results.append(result)
        state = result.state
    return results


def snapshot(result: EvaluationResult) -> dict[str, Any]:
    """Everything an evaluation decided: the response, the new state and the writes."""
    return {
        "result": result.model_dump(mode="json"),
        "state": result.state.model_dump(mode="json"),
        "changes": result.changes.model_dump(mode="json"),
    }
