"""Freshness of the newest closed bar: stale when it closed more than two timeframes ago."""

from __future__ import annotations

import pytest
from engine.adapters.marketdata import check_freshness, parse_stale_policy
from engine.core.candles import Candles
from engine.core.timeframes import HOUR_MS, TIMEFRAME_MS, bucket_start
from engine.service.errors import MarketDataStale, MarketDataUnavailable

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z


def candles_at(*times: int) -> Candles:
    return Candles.from_rows([(t, 100.0, 101.0, 99.0, 100.5, 10.0) for t in times])


def hourly(last_open: int, count: int = 5) -> Candles:
    return candles_at(*(last_open - i * HOUR_MS for i in reversed(range(count))))


def test_fresh_in_normal_operation() -> None:
    # now 12:34: the 11:00 bar closed at 12:00, the 12:00 bar is forming
    now = T0 + 12 * HOUR_MS + 34 * 60_000
    candles = hourly(T0 + 12 * HOUR_MS)
    assert check_freshness(candles, "1h", now, "reject", asset="BTC/USDT") == []


def test_exactly_two_bars_old_passes() -> None:
    # the newest bar opened 09:00 and closed 10:00; at 12:00 it is exactly 2 bars old
    candles = hourly(T0 + 9 * HOUR_MS)
    now = T0 + 12 * HOUR_MS
    assert check_freshness(candles, "1h", now, "reject", asset="BTC/USDT") == []
    assert check_freshness(candles, "1h", now, "warn", asset="BTC/USDT") == []


def test_one_millisecond_more_is_stale_and_rejected() -> None:
    candles = hourly(T0 + 9 * HOUR_MS)
    now = T0 + 12 * HOUR_MS + 1
    with pytest.raises(MarketDataStale) as info:
        check_freshness(candles, "1h", now, "reject", asset="BTC/USDT")
    error = info.value
    assert error.status == 503 and error.code == "market_data_stale"
    assert "BTC/USDT 1h" in error.message
    assert "2024-05-01T09:00:00Z" in error.message  # the last bar's open time
    assert "2 bars" in error.message  # whole bars since it closed
    assert error.details == [
        {
            "asset": "BTC/USDT",
            "timeframe": "1h",
            "last_bar": "2024-05-01T09:00:00Z",
            "age_bars": "2",
        }
    ]


def test_warn_policy_returns_the_same_facts() -> None:
    candles = hourly(T0 + 9 * HOUR_MS)
    now = T0 + 13 * HOUR_MS + 30 * 60_000
    warnings = check_freshness(candles, "1h", now, "warn", asset="ETH/USDT")
    assert len(warnings) == 1
    message = warnings[0]
    assert "ETH/USDT 1h" in message and "stale" in message
    assert "2024-05-01T09:00:00Z" in message and "3 bars" in message


@pytest.mark.parametrize("timeframe", list(TIMEFRAME_MS))
def test_boundary_for_every_timeframe(timeframe: str) -> None:
    step = TIMEFRAME_MS[timeframe]
    last_open = bucket_start(T0 + 50 * TIMEFRAME_MS["1w"], timeframe)
    candles = candles_at(last_open - step, last_open)
    close = last_open + step
    assert check_freshness(candles, timeframe, close, "reject") == []  # just closed
    assert check_freshness(candles, timeframe, close + 2 * step, "reject") == []
    with pytest.raises(MarketDataStale):
        check_freshness(candles, timeframe, close + 2 * step + 1, "reject")
    assert len(check_freshness(candles, timeframe, close + 2 * step + 1, "warn")) == 1


def test_forming_bars_are_ignored() -> None:
    # 09:00 closed; the 12:00 bar is still forming at 12:30 and does not make the data fresh
    candles = candles_at(T0 + 8 * HOUR_MS, T0 + 9 * HOUR_MS, T0 + 12 * HOUR_MS)
    now = T0 + 12 * HOUR_MS + 30 * 60_000
    with pytest.raises(MarketDataStale, match="2024-05-01T09:00:00Z"):
        check_freshness(candles, "1h", now, "reject", asset="BTC/USDT")
    # once it closes, it is the newest closed bar and the data is fresh again
    assert check_freshness(candles, "1h", T0 + 13 * HOUR_MS, "reject") == []


def test_bar_closing_exactly_at_now_counts_as_closed() -> None:
    candles = candles_at(T0 + 11 * HOUR_MS)
    assert check_freshness(candles, "1h", T0 + 12 * HOUR_MS, "reject") == []
    with pytest.raises(MarketDataUnavailable):
        check_freshness(candles, "1h", T0 + 12 * HOUR_MS - 1, "reject")


def test_no_closed_bar_is_unavailable() -> None:
    with pytest.raises(MarketDataUnavailable) as info:
        check_freshness(Candles.empty(), "1h", T0, "warn", asset="BTC/USDT")
    assert "BTC/USDT" in info.value.message and "1h" in info.value.message
    only_forming = candles_at(T0)
    with pytest.raises(MarketDataUnavailable, match="no closed 1h bar for BTC/USDT"):
        check_freshness(only_forming, "1h", T0 + 10, "warn", asset="BTC/USDT")


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="reject, warn"):
        check_freshness(hourly(T0), "1h", T0 + HOUR_MS, "ignore")
    assert parse_stale_policy(" WARN ") == "warn"
    assert parse_stale_policy("reject") == "reject"
