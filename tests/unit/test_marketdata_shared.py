"""load_market: one fetch per unique (asset, timeframe), failures isolated per pair."""

from __future__ import annotations

import pytest
from engine.adapters.marketdata import SharedMarketData, load_market
from engine.core.candles import Candles
from engine.core.timeframes import HOUR_MS
from engine.service.errors import MarketDataStale, MarketDataUnavailable

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
NOW = T0 + 12 * HOUR_MS + 5 * 60_000  # 12:05, the 12:00 bar is forming


def hourly(last_open: int, count: int) -> Candles:
    return Candles.from_rows(
        (last_open - i * HOUR_MS, 100.0, 101.0, 99.0, 100.0, 1.0) for i in reversed(range(count))
    )


class FakeProvider:
    """Answers fresh hourly candles, except the pairs told to fail or to be stale."""

    def __init__(
        self,
        *,
        fail: dict[tuple[str, str], BaseException] | None = None,
        stale: set[tuple[str, str]] | None = None,
    ) -> None:
        self.fail = fail or {}
        self.stale = stale or set()
        self.calls: list[tuple[str, str, int, int]] = []

    def fetch(self, asset: str, timeframe: str, bars: int, now_ms: int) -> Candles:
        self.calls.append((asset, timeframe, bars, now_ms))
        pair = (asset, timeframe)
        if pair in self.fail:
            raise self.fail[pair]
        last = T0 + (6 if pair in self.stale else 12) * HOUR_MS
        return hourly(last, bars + 1)


def test_each_unique_pair_fetched_once() -> None:
    provider = FakeProvider()
    pairs = [("BTC/USDT", "1h"), ("ETH/USDT", "1h"), ("BTC/USDT", "1h"), ("ETH/USDT", "1h")]
    bars = {("BTC/USDT", "1h"): 200, ("ETH/USDT", "1h"): 50}

    loaded = load_market(pairs, provider, bars, NOW, "reject")

    assert provider.calls == [("BTC/USDT", "1h", 200, NOW), ("ETH/USDT", "1h", 50, NOW)]
    assert loaded.fetches == loaded.fetch_count == 2
    assert set(loaded.candles) == {("BTC/USDT", "1h"), ("ETH/USDT", "1h")}
    assert len(loaded.candles[("BTC/USDT", "1h")]) == 201
    assert loaded.failures == {} and loaded.warnings == {}


def test_unpacks_as_a_tuple_and_takes_one_bar_count_for_all() -> None:
    candles, failures, warnings, fetch_count = load_market(
        [("BTC/USDT", "1h")], FakeProvider(), 30, NOW, "reject"
    )
    assert len(candles[("BTC/USDT", "1h")]) == 31
    assert failures == {} and warnings == {} and fetch_count == 1


def test_one_failing_pair_never_stops_the_others() -> None:
    down = MarketDataUnavailable("market data for ETH/USDT 1h unavailable: timeout")
    provider = FakeProvider(
        fail={("ETH/USDT", "1h"): down, ("SOL/USDT", "1h"): RuntimeError("boom")},
        stale={("XRP/USDT", "1h")},
    )
    pairs = [(a, "1h") for a in ("ETH/USDT", "BTC/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT")]

    loaded = load_market(pairs, provider, 20, NOW, "reject")

    assert loaded.fetches == 5 and len(provider.calls) == 5
    assert set(loaded.candles) == {("BTC/USDT", "1h"), ("ADA/USDT", "1h")}
    assert set(loaded.failures) == {("ETH/USDT", "1h"), ("SOL/USDT", "1h"), ("XRP/USDT", "1h")}
    assert loaded.failures[("ETH/USDT", "1h")] is down
    unexpected = loaded.failures[("SOL/USDT", "1h")]
    assert isinstance(unexpected, MarketDataUnavailable)
    assert "SOL/USDT 1h" in unexpected.message and "RuntimeError: boom" in unexpected.message
    assert isinstance(unexpected.__cause__, RuntimeError)
    stale = loaded.failures[("XRP/USDT", "1h")]
    assert isinstance(stale, MarketDataStale) and "XRP/USDT 1h" in stale.message
    assert all(f.status == 503 for f in loaded.failures.values())


def test_warn_policy_keeps_stale_candles_with_a_warning() -> None:
    provider = FakeProvider(stale={("XRP/USDT", "1h")})
    loaded = load_market([("XRP/USDT", "1h"), ("BTC/USDT", "1h")], provider, 20, NOW, "warn")
    assert set(loaded.candles) == {("XRP/USDT", "1h"), ("BTC/USDT", "1h")}
    assert loaded.failures == {}
    assert list(loaded.warnings) == [("XRP/USDT", "1h")]
    [message] = loaded.warnings[("XRP/USDT", "1h")]
    assert "XRP/USDT 1h" in message and "stale" in message


def test_empty_answer_is_a_failure_of_that_pair_only() -> None:
    class Empty(FakeProvider):
        def fetch(self, asset: str, timeframe: str, bars: int, now_ms: int) -> Candles:
            if asset == "EMPTY":
                self.calls.append((asset, timeframe, bars, now_ms))
                return Candles.empty()
            return super().fetch(asset, timeframe, bars, now_ms)

    loaded = load_market([("EMPTY", "1h"), ("BTC/USDT", "1h")], Empty(), 10, NOW, "warn")
    assert isinstance(loaded.failures[("EMPTY", "1h")], MarketDataUnavailable)
    assert ("BTC/USDT", "1h") in loaded.candles


def test_get_returns_candles_or_raises_the_pairs_failure() -> None:
    down = MarketDataUnavailable("down")
    loaded = load_market(
        [("BTC/USDT", "1h"), ("ETH/USDT", "1h")],
        FakeProvider(fail={("ETH/USDT", "1h"): down}),
        10,
        NOW,
        "reject",
    )
    assert isinstance(loaded, SharedMarketData)
    assert len(loaded.get("BTC/USDT", "1h")) == 11
    with pytest.raises(MarketDataUnavailable) as info:
        loaded.get("ETH/USDT", "1h")
    assert info.value is down
    with pytest.raises(MarketDataUnavailable, match="not requested"):
        loaded.get("SOL/USDT", "1h")


def test_invalid_policy_fails_before_any_fetch() -> None:
    provider = FakeProvider()
    with pytest.raises(ValueError, match="STALE_DATA_POLICY"):
        load_market([("BTC/USDT", "1h")], provider, 10, NOW, "sometimes")
    assert provider.calls == []


def test_no_pairs_no_fetches() -> None:
    assert load_market([], FakeProvider(), 10, NOW, "reject") == ({}, {}, {}, 0)
