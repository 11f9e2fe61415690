"""How much history an indicator needs for its value to be the whole-history value (DESIGN §8).

The rule lives in `engine.core.indicators.history_bars`; these tests hold it to its promise
for every TA-Lib function the engine accepts: computed on a window of that many bars, the
value at the window's last bar equals the value computed over a much longer history.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import talib
from engine.core import indicators
from engine.core.candles import Candles
from engine.core.strategy import parse_strategy

from tests.support.core import T0, H, strategy_doc

NOT_FROM_CANDLES = {"MAVP"}
ACCEPTED = sorted(set(talib.get_functions()) - NOT_FROM_CANDLES - indicators.HISTORY_ANCHORED)
# A second parameter set for functions whose period sets how long they take to converge.
OTHER_PARAMS: list[tuple[str, dict[str, Any]]] = [
    ("RSI", {"timeperiod": 30}),
    ("EMA", {"timeperiod": 100}),
    ("ATR", {"timeperiod": 7}),
    ("MACD", {"fastperiod": 24, "slowperiod": 52, "signalperiod": 18}),
    ("KAMA", {"timeperiod": 10}),
    ("MA", {"timeperiod": 20, "matype": 1}),
    ("BBANDS", {"timeperiod": 10, "matype": 8}),
    ("STOCH", {"slowk_matype": 1, "slowd_matype": 6}),
    ("SAR", {"acceleration": 0.01, "maximum": 0.1}),
]
RELATIVE = 1e-9


def history(n: int, seed: int) -> Candles:
    """A random walk in log price with realistic bars (open and close within [low, high])."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.003, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.004, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.004, n)))
    return Candles(
        T0 + np.arange(n, dtype=np.int64) * H, open_, high, low, close, rng.uniform(1, 100, n)
    )


def assert_window_equals_whole_history(fn: str, params: dict[str, Any]) -> None:
    need = indicators.history_bars(fn, params)
    whole = history(need + 3000, seed=len(fn))
    full = indicators.compute(fn, params, whole)
    for end in (len(whole), len(whole) - 1, len(whole) - 777):
        window = Candles(
            *(
                getattr(whole, f)[end - need : end]
                for f in ("time", "open", "high", "low", "close", "volume")
            )
        )
        part = indicators.compute(fn, params, window)
        for out, values in full.items():
            expected, got = values[end - 1], part[out][-1]
            assert np.isnan(expected) == np.isnan(got), (fn, out, end)
            if not np.isnan(expected):  # ASIN and ACOS of prices are NaN throughout
                scale = float(np.nanmedian(np.abs(values[-2000:]))) or 1.0
                tolerance = RELATIVE * max(abs(expected), scale)
                assert abs(got - expected) <= tolerance, (fn, params, out, end, got, expected)


@pytest.mark.parametrize("fn", ACCEPTED)
def test_a_window_of_history_bars_gives_the_whole_history_value(fn: str) -> None:
    assert_window_equals_whole_history(fn, {})


@pytest.mark.parametrize(("fn", "params"), OTHER_PARAMS)
def test_the_rule_follows_the_parameters(fn: str, params: dict[str, Any]) -> None:
    assert_window_equals_whole_history(fn, params)


def test_the_old_three_lookbacks_were_not_enough_for_rsi() -> None:
    # The regression: 47 bars for RSI 14 left its value several points off the charted one.
    whole = history(5000, seed=9)
    full = indicators.compute("RSI", {"timeperiod": 14}, whole)["real"]
    short = indicators.compute("RSI", {"timeperiod": 14}, whole.tail(47))["real"]
    assert abs(short[-1] - full[-1]) > 1e-3
    assert indicators.history_bars("RSI", {"timeperiod": 14}) == 15 + 32 * 15


def test_recursive_functions_are_found_from_talibs_flags_and_the_named_ones() -> None:
    flagged = {"RSI", "EMA", "ATR", "KAMA", "T3", "HT_TRENDLINE"}
    unflagged = {"MACD", "DEMA", "TEMA", "TRIX", "STOCHRSI"}
    with_matype = {"BBANDS", "MA", "STOCH"}
    for fn in flagged | unflagged | with_matype:
        assert indicators.is_recursive(fn), fn
    for fn in ("SMA", "WMA", "MIN", "MAX", "CDLENGULFING", "BOP", "MEDPRICE"):
        assert not indicators.is_recursive(fn), fn
        assert indicators.history_bars(fn, {}) == indicators.lookback(fn, {}) + 1


def test_the_design_example_needs_macds_history() -> None:
    # RSI 14, ATR 14: 15 + 32·15 = 495; SMA 200: 200; MACD 12/26/9: lookback 33, so
    # 34 + 32·34 = 1122; crosses_above looks one bar back: 1123.
    doc = strategy_doc(
        indicators={
            "rsi": {"fn": "RSI", "params": {"timeperiod": 14}},
            "sma": {"fn": "SMA", "params": {"timeperiod": 200}},
            "atr": {"fn": "ATR", "params": {"timeperiod": 14}},
            "macd": {
                "fn": "MACD",
                "params": {"fastperiod": 12, "slowperiod": 26, "signalperiod": 9},
            },
        },
        entry={"left": "rsi", "op": "crosses_above", "right": 30},
    )
    assert parse_strategy(doc).warmup_bars == 1123


def test_an_informative_indicator_needs_its_bars_in_primary_bars() -> None:
    # SMA 20 on 1d from 1h: 20 daily bars, plus the partial first and the forming last
    # day, 22 · 24 = 528 hourly bars; plus the one bar crosses look back: 529.
    doc = strategy_doc(
        indicators={"d": {"fn": "SMA", "params": {"timeperiod": 20}, "timeframe": "1d"}},
        entry={"left": "close", "op": "crosses_above", "right": "d"},
    )
    assert parse_strategy(doc).warmup_bars == 529
