"""TA-Lib indicators through MarketData.frame, and informative-timeframe alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib
from engine.core import indicators
from engine.core.candles import Candles, align_to
from engine.core.market import MarketData
from engine.core.strategy import parse_strategy

from tests.support.core import T0, Driver, H, candles, entries, make_strategy, strategy_doc

N = 300
# domain-limited math transforms: undefined for prices outside [-1, 1]
UNIT_DOMAIN = {"ACOS", "ASIN"}
# functions whose inputs are not all candle fields (MAVP needs a series of periods)
NOT_FROM_CANDLES = {"MAVP"}


def random_walk(n: int, seed: int) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 1, n))
    open_ = close + rng.normal(0, 0.3, n)
    high = np.maximum(open_, close) + rng.uniform(0.05, 1.0, n)
    low = np.minimum(open_, close) - rng.uniform(0.05, 1.0, n)
    volume = rng.uniform(1, 100, n)
    return Candles(
        time=T0 + np.arange(n, dtype=np.int64) * H,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
    )


ALL_FUNCTIONS = sorted(set(talib.get_functions()) - NOT_FROM_CANDLES - indicators.HISTORY_ANCHORED)


def test_every_talib_function_computes_through_the_frame():
    assert len(ALL_FUNCTIONS) > 150
    strategy = make_strategy(
        indicators={f"i_{fn.lower()}": {"fn": fn} for fn in ALL_FUNCTIONS},
    )
    c = random_walk(N, seed=3)
    market = MarketData({("BTC/USDT", "1h"): c})
    frame = market.frame(strategy, "BTC/USDT")
    for fn in ALL_FUNCTIONS:
        name = f"i_{fn.lower()}"
        outputs = indicators.function_info(fn).outputs
        assert outputs == tuple(talib.abstract.Function(fn).output_names)
        if len(outputs) == 1:
            assert name in frame, fn
            assert frame[name] is frame[f"{name}.{outputs[0]}"]
        else:
            assert name not in frame, f"{fn}: a multi-output indicator has no bare name"
        for out in outputs:
            values = frame[f"{name}.{out}"]
            assert values.shape == (N,), fn
            assert values.dtype == np.float64, fn
            if fn not in UNIT_DOMAIN:
                start = indicators.lookback(fn, {})
                assert np.all(np.isfinite(values[start:])), f"{fn}.{out} undefined after warm-up"
                assert np.all(np.isnan(values[:start])), f"{fn}.{out} defined during warm-up"
    # every indicator was computed exactly once
    assert market.cache.computations == len(ALL_FUNCTIONS)
    # a second strategy with the same definitions reuses them
    market.frame(strategy, "BTC/USDT")
    assert market.cache.computations == len(ALL_FUNCTIONS)


def test_strategies_share_a_frame_by_their_definitions_not_by_their_objects():
    c = random_walk(N, seed=4)
    market = MarketData({("BTC/USDT", "1h"): c})
    rsi = {"rsi": {"fn": "RSI", "params": {"timeperiod": 9}}}
    one = make_strategy(indicators=rsi)
    equal = make_strategy(indicators=rsi)  # equal definitions, other objects
    other = make_strategy(indicators={"rsi": {"fn": "RSI", "params": {"timeperiod": 10}}})
    assert one.indicators is not equal.indicators
    frame = market.frame(one, "BTC/USDT")
    assert market.frame(one, "BTC/USDT") is frame
    assert market.frame(equal, "BTC/USDT") is frame
    different = market.frame(other, "BTC/USDT")
    assert different is not frame and not np.array_equal(
        different["rsi"], frame["rsi"], equal_nan=True
    )
    assert market.frame(one, "BTC/USDT") is frame  # after the other, still its own
    assert market.cache.computations == 2


def test_frame_values_equal_talib_called_directly():
    c = random_walk(N, seed=5)
    strategy = make_strategy(
        indicators={
            "rsi": {"fn": "RSI", "params": {"timeperiod": 9}},
            "macd": {
                "fn": "MACD",
                "params": {"fastperiod": 5, "slowperiod": 13, "signalperiod": 4},
            },
            "bb": {"fn": "BBANDS", "params": {"timeperiod": 20, "nbdevup": 1.5, "matype": 1}},
            "stoch": {"fn": "STOCH"},
            "atr": {"fn": "ATR", "params": {"timeperiod": 7}},
            "adosc": {"fn": "ADOSC"},
            "engulf": {"fn": "CDLENGULFING"},
        }
    )
    frame = MarketData({("BTC/USDT", "1h"): c}).frame(strategy, "BTC/USDT")
    o, h, lo, cl, v = c.open, c.high, c.low, c.close, c.volume
    np.testing.assert_array_equal(frame["rsi"], talib.RSI(cl, timeperiod=9))
    macd, signal, hist = talib.MACD(cl, fastperiod=5, slowperiod=13, signalperiod=4)
    np.testing.assert_array_equal(frame["macd.macd"], macd)
    np.testing.assert_array_equal(frame["macd.macdsignal"], signal)
    np.testing.assert_array_equal(frame["macd.macdhist"], hist)
    upper, middle, lower = talib.BBANDS(cl, timeperiod=20, nbdevup=1.5, matype=1)
    np.testing.assert_array_equal(frame["bb.upperband"], upper)
    np.testing.assert_array_equal(frame["bb.middleband"], middle)
    np.testing.assert_array_equal(frame["bb.lowerband"], lower)
    slowk, slowd = talib.STOCH(h, lo, cl)
    np.testing.assert_array_equal(frame["stoch.slowk"], slowk)
    np.testing.assert_array_equal(frame["stoch.slowd"], slowd)
    np.testing.assert_array_equal(frame["atr"], talib.ATR(h, lo, cl, timeperiod=7))
    np.testing.assert_array_equal(frame["adosc"], talib.ADOSC(h, lo, cl, v))
    # TA-Lib writes 0 for a pattern during its warm-up; the engine says "not defined" there
    engulf = talib.CDLENGULFING(o, h, lo, cl).astype(np.float64)
    engulf[: talib.abstract.Function("CDLENGULFING").lookback] = np.nan
    np.testing.assert_array_equal(frame["engulf"], engulf)
    for field in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(frame[field], getattr(c, field))


def test_every_function_feeds_talib_the_inputs_its_abstract_api_names():
    # The engine calls TA-Lib's function API with positional inputs; the abstract API maps
    # inputs by name. Same values for every function = the positional order is TA-Lib's.
    c = random_walk(N, seed=11)
    by_name = {f: getattr(c, f) for f in ("open", "high", "low", "close", "volume")}
    for fn in ALL_FUNCTIONS:
        ours = indicators.compute(fn, {}, c)
        theirs = talib.abstract.Function(fn)(by_name)
        theirs = theirs if isinstance(theirs, list) else [theirs]
        warmup = indicators.lookback(fn, {})
        for out, expected in zip(indicators.function_info(fn).outputs, theirs, strict=True):
            expected = np.asarray(expected, dtype=np.float64)
            expected[:warmup] = np.nan
            np.testing.assert_array_equal(ours[out], expected, err_msg=f"{fn}.{out}")


def test_integer_output_is_undefined_during_warm_up():
    # during the pattern's warm-up "engulf >= 0" is false and warns (TA-Lib itself says 0);
    # after it the value is defined (0 or +-100) and the comparison is decided by it
    strategy = make_strategy(
        indicators={"engulf": {"fn": "CDLENGULFING"}},
        entry={"left": "engulf", "op": ">=", "right": 0},
    )
    lookback = talib.abstract.Function("CDLENGULFING").lookback
    assert lookback >= 1
    c = random_walk(lookback + 2, seed=2)
    driver = Driver(strategy, c)
    early = driver.at(lookback - 1)
    assert entries(early) == []
    assert "undefined_value" in [w.code for w in early.warnings]
    later = driver.at(lookback + 1)
    assert "undefined_value" not in [w.code for w in later.warnings]
    value = talib.CDLENGULFING(c.open, c.high, c.low, c.close)[lookback + 1]
    assert (len(entries(later)) == 1) == (value >= 0)


def test_float_parameters_of_integer_type_are_accepted_when_whole():
    strategy = make_strategy(indicators={"sma": {"fn": "SMA", "params": {"timeperiod": 5.0}}})
    c = random_walk(30, seed=1)
    frame = MarketData({("BTC/USDT", "1h"): c}).frame(strategy, "BTC/USDT")
    np.testing.assert_array_equal(frame["sma"], talib.SMA(c.close, timeperiod=5))


# --- informative timeframe --------------------------------------------------------------


def hourly_closes(n: int, start: int = T0) -> Candles:
    """1h candles whose close at index i is 10 * (i + 1); high = close + 1, low = close - 1."""
    return candles(
        [
            (10.0 * (i + 1), 10.0 * (i + 1) + 1, 10.0 * (i + 1) - 1, 10.0 * (i + 1), 1.0)
            for i in range(n)
        ],
        start=start,
    )


def test_4h_sma_on_1h_candles_is_visible_when_its_bar_closes():
    # 4h bars close at 1h indices 3, 7, 11, ...; their closes are 40, 80, 120, 160, 200, 240.
    # SMA(2) of those: nan, 60, 100, 140, 180, 220. The 4h bar opened 04:00 closes at 08:00,
    # which is when the 1h bar opened at 07:00 closes: visible from index 7, not at 6.
    strategy = make_strategy(
        indicators={"sma4h": {"fn": "SMA", "params": {"timeperiod": 2}, "timeframe": "4h"}}
    )
    c = hourly_closes(24)
    frame = MarketData({("BTC/USDT", "1h"): c}).frame(strategy, "BTC/USDT")
    expected = [math.nan] * 7 + [60.0] * 4 + [100.0] * 4 + [140.0] * 4 + [180.0] * 4 + [220.0]
    np.testing.assert_array_equal(frame["sma4h"], np.array(expected))


def test_informative_value_drives_entry_only_once_visible():
    strategy = make_strategy(
        indicators={"sma4h": {"fn": "SMA", "params": {"timeperiod": 2}, "timeframe": "4h"}},
        entry={"left": "sma4h", "op": ">", "right": 50},
    )
    driver = Driver(strategy, hourly_closes(12))
    at6 = driver.at(6)
    assert entries(at6) == []
    assert "undefined_value" in [w.code for w in at6.warnings]
    at7 = driver.at(7)
    assert [(o.created_at, o.price) for o in entries(at7)] == [
        (at7.bar, 80.0)  # close of the 07:00 bar
    ]


def test_informative_partial_first_bucket_is_dropped_and_high_low_aggregate():
    # 1h candles start at 02:00: the first 4h bucket [00:00, 04:00) holds only 02:00 and
    # 03:00, a partial bar no whole history would have: it is dropped. MEDPRICE =
    # (max high + min low) / 2 per 4h bar; the 04:00 bar closes at 08:00 (index 5).
    strategy = make_strategy(indicators={"mp": {"fn": "MEDPRICE", "timeframe": "4h"}})
    c = hourly_closes(10, start=T0 + 2 * H)  # closes 10..100, index i at 02:00 + i h
    frame = MarketData({("BTC/USDT", "1h"): c}).frame(strategy, "BTC/USDT")
    second = ((60 + 1) + (30 - 1)) / 2  # indices 2..5 (04:00..07:00)
    third = ((100 + 1) + (70 - 1)) / 2  # indices 6..9 (08:00..11:00)
    expected = [math.nan] * 5 + [second] * 4 + [third]
    np.testing.assert_array_equal(frame["mp"], np.array(expected))


def test_a_first_bucket_starting_at_its_open_is_kept():
    strategy = make_strategy(indicators={"mp": {"fn": "MEDPRICE", "timeframe": "4h"}})
    c = hourly_closes(8)  # from 00:00: the first 4h bucket is whole
    frame = MarketData({("BTC/USDT", "1h"): c}).frame(strategy, "BTC/USDT")
    first = ((40 + 1) + (10 - 1)) / 2
    second = ((80 + 1) + (50 - 1)) / 2
    np.testing.assert_array_equal(frame["mp"], np.array([math.nan] * 3 + [first] * 4 + [second]))


def test_informative_candles_of_another_strategy_never_change_the_values():
    # One rule (DESIGN §8): informative bars are resampled from the strategy's own primary
    # candles. 4h candles in the same market (another strategy's primary) are not used.
    strategy = make_strategy(
        indicators={"c4": {"fn": "SMA", "params": {"timeperiod": 1}, "timeframe": "4h"}}
    )
    hourly = hourly_closes(12)
    four_hourly = candles([(0, 0, 0, 7.0, 0), (0, 0, 0, 8.0, 0), (0, 0, 0, 9.0, 0)], step=4 * H)
    alone = MarketData({("BTC/USDT", "1h"): hourly}).frame(strategy, "BTC/USDT")
    market = MarketData({("BTC/USDT", "1h"): hourly, ("BTC/USDT", "4h"): four_hourly})
    frame = market.frame(strategy, "BTC/USDT")
    expected = [math.nan] * 3 + [40.0] * 4 + [80.0] * 4 + [120.0]
    np.testing.assert_array_equal(frame["c4"], np.array(expected))
    np.testing.assert_array_equal(alone["c4"], np.array(expected))


def test_strategies_on_other_primary_timeframes_do_not_share_informative_values():
    # A 1h and a 4h strategy both ask for a 1d SMA: each resamples its own candles, so the
    # cache must not hand one the other's (a 4h window covers other days than a 1h one).
    doc = {"indicators": {"d": {"fn": "SMA", "params": {"timeperiod": 1}, "timeframe": "1d"}}}
    hourly = hourly_closes(48)
    four_hourly = candles([(0, 0, 0, 500.0 + i, 0) for i in range(12)], step=4 * H)
    market = MarketData({("BTC/USDT", "1h"): hourly, ("BTC/USDT", "4h"): four_hourly})
    h_frame = market.frame(make_strategy(**doc), "BTC/USDT")
    f_frame = market.frame(make_strategy(timeframe="4h", **doc), "BTC/USDT")
    assert h_frame["d"][-1] == 480.0  # the last bar closes day 1: its close, bar 47
    assert f_frame["d"][-1] == 511.0  # day 1 in the 4h candles closes with bar 11
    assert market.cache.computations == 2


def test_daily_informative_on_hourly_with_gaps():
    # 1h bars only during 09:00-16:59 on three days. Day 0 starts after its open (09:00 is
    # not 00:00), so it may be partial and is dropped; a daily bar closes at midnight, so
    # day 2's bars see day 1's value, and days 0 and 1 see nothing.
    times = [T0 + d * 24 * H + h * H for d in (0, 1, 2) for h in range(9, 17)]
    bars = [(1.0, 2.0, 0.5, float(i), 1.0) for i in range(len(times))]
    c = candles(bars, times=times)
    strategy = make_strategy(
        indicators={"dc": {"fn": "SMA", "params": {"timeperiod": 1}, "timeframe": "1d"}}
    )
    frame = MarketData({("BTC/USDT", "1h"): c}).frame(strategy, "BTC/USDT")
    expected = [math.nan] * 16 + [15.0] * 8  # day 1's close is its 16:00 bar's, 15
    np.testing.assert_array_equal(frame["dc"], np.array(expected))


def test_functions_anchored_to_the_first_bar_are_refused():
    for fn in sorted(indicators.HISTORY_ANCHORED):
        doc = strategy_doc(indicators={"x": {"fn": fn}})
        with pytest.raises(ValueError, match=rf"indicators\.x\.fn: {fn} depends on the first bar"):
            parse_strategy(doc)


def test_align_to_exact_boundaries():
    # an informative bar is visible at the primary bar whose close equals its close
    informative = np.array([0, 4 * H], dtype=np.int64)
    primary = np.arange(8, dtype=np.int64) * H
    out = align_to(np.array([1.0, 2.0]), informative, "4h", primary, "1h")
    np.testing.assert_array_equal(out, [math.nan, math.nan, math.nan, 1, 1, 1, 1, 2])


def test_finer_informative_timeframe_is_rejected():
    doc = strategy_doc(timeframe="4h", indicators={"x": {"fn": "SMA", "timeframe": "1h"}})
    with pytest.raises(ValueError, match=r"indicators\.x\.timeframe"):
        parse_strategy(doc)
