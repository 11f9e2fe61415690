"""CcxtProvider against a fake exchange shaped like ccxt's (no network here).

The fake has ccxt's attribute and method names (`id`, `rateLimit`, `timeframes`,
`features`, `fetch_ohlcv(symbol, timeframe, since, limit)`), serves candles the way
binance does (bars opened at or after `since`, at most its own per-call cap, floats in
[ms, open, high, low, close, volume] rows) and raises the real ccxt exception classes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import ccxt
import pytest
from engine.adapters.marketdata import CcxtProvider
from engine.adapters.marketdata.ccxt_provider import DEFAULT_PAGE_LIMIT, _features_limit
from engine.core.timeframes import HOUR_MS, bucket_start, to_ms
from engine.service.errors import MarketDataUnavailable

NOW = to_ms(datetime(2024, 5, 1, 12, 34, 56))  # mid-bar
FORMING = bucket_start(NOW, "1h")  # 2024-05-01T12:00Z, still forming at NOW

# Four bars as binance answered GET /api/v3/klines?symbol=BTCUSDT&interval=1h (rounded),
# used as the start of the fake's series so the data keeps a realistic shape.
RECORDED_1H = [
    [1714521600000, 60636.01, 60889.0, 60192.0, 60392.22, 1571.13749],
    [1714525200000, 60392.22, 60428.0, 59500.0, 59672.07, 2385.46873],
    [1714528800000, 59672.07, 59921.99, 59185.28, 59399.99, 2189.05862],
    [1714532400000, 59399.98, 59579.4, 58836.0, 59146.01, 2017.89034],
]


def hourly_series(start: int, count: int, seed: int = 7) -> list[list[float]]:
    """`count` hourly bars from `start`: a random walk from the recorded open price."""
    rng = random.Random(seed)
    rows: list[list[float]] = []
    close = RECORDED_1H[0][1]
    for i in range(count):
        open_ = close
        close = round(open_ * (1 + rng.gauss(0, 0.004)), 2)
        high = round(max(open_, close) * (1 + abs(rng.gauss(0, 0.002))), 2)
        low = round(min(open_, close) * (1 - abs(rng.gauss(0, 0.002))), 2)
        rows.append(
            [float(start + i * HOUR_MS), open_, high, low, close, round(rng.uniform(800, 3000), 5)]
        )
    return rows


class FakeExchange:
    """Shaped like a ccxt exchange; `script` holds exceptions to raise on successive calls."""

    def __init__(
        self,
        rows: list[list[Any]],
        *,
        exchange_id: str = "binance",
        rate_limit: int = 50,
        max_limit: int = 1000,
        script: list[BaseException | None] | None = None,
        ignore_since: bool = False,
    ) -> None:
        self.id = exchange_id
        self.rateLimit = rate_limit
        self.timeframes = {tf: tf for tf in ("1m", "5m", "15m", "1h", "4h", "1d", "1w")}
        self.features = {
            "spot": {"fetchOHLCV": {"limit": max_limit}},
            "swap": {"linear": {"fetchOHLCV": {"limit": max_limit // 2}}, "inverse": None},
        }
        self.rows = rows
        self.max_limit = max_limit
        self.script: Iterator[BaseException | None] = iter(script or [])
        self.ignore_since = ignore_since
        self.calls: list[dict[str, Any]] = []

    def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[list[Any]]:
        self.calls.append(
            {"symbol": symbol, "timeframe": timeframe, "since": since, "limit": limit}
        )
        failure = next(self.script, None)
        if failure is not None:
            raise failure
        if symbol not in ("BTC/USDT", "BTC/USDT:USDT"):
            raise ccxt.BadSymbol(f"binance does not have market symbol {symbol}")
        cap = min(limit or 500, self.max_limit)
        if self.ignore_since or since is None:
            return [list(r) for r in self.rows[-cap:]]
        return [list(r) for r in self.rows if r[0] >= since][:cap]


class SleepLog:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def series_until(now: int, count: int) -> list[list[float]]:
    """`count` hourly bars ending with the one forming at `now`."""
    last = bucket_start(now, "1h")
    return hourly_series(last - (count - 1) * HOUR_MS, count)


def provider(exchange: FakeExchange, **kwargs: Any) -> tuple[CcxtProvider, SleepLog]:
    sleep = SleepLog()
    return CcxtProvider("binance", exchange=exchange, sleep=sleep, **kwargs), sleep


def test_single_call_when_bars_fit_one_page() -> None:
    exchange = FakeExchange(series_until(NOW, 3000))
    p, sleep = provider(exchange)

    candles = p.fetch("BTC/USDT", "1h", 200, NOW)

    assert exchange.calls == [
        {"symbol": "BTC/USDT", "timeframe": "1h", "since": FORMING - 200 * HOUR_MS, "limit": 201}
    ]
    # the forming bar was asked for (the exchange counts it) and is not answered
    assert len(candles) == 200
    assert int(candles.time[-1]) == FORMING - HOUR_MS
    assert candles.closed_count("1h", NOW) == 200
    assert sleep.calls == []


def test_paginates_forward_and_sleeps_rate_limit_between_pages() -> None:
    exchange = FakeExchange(series_until(NOW, 3000), rate_limit=50, max_limit=1000)
    p, sleep = provider(exchange)

    candles = p.fetch("BTC/USDT", "1h", 2500, NOW)

    start = FORMING - 2500 * HOUR_MS
    assert [(c["since"], c["limit"]) for c in exchange.calls] == [
        (start, 1000),
        (start + 1000 * HOUR_MS, 1000),
        (start + 2000 * HOUR_MS, 501),
    ]
    assert sleep.calls == [0.05, 0.05]  # the exchange's rateLimit (ms) between pages only
    assert len(candles) == 2500
    assert int(candles.time[0]) == start and int(candles.time[-1]) == FORMING - HOUR_MS
    assert set(map(int, candles.time[1:] - candles.time[:-1])) == {HOUR_MS}


def test_page_size_comes_from_exchange_features_per_market_type() -> None:
    exchange = FakeExchange(series_until(NOW, 3000), max_limit=1000)  # swap: 500
    p, _ = provider(exchange, symbol_map={"BTC/USDT": "BTC/USDT:USDT"})

    candles = p.fetch("BTC/USDT", "1h", 1200, NOW)

    assert [c["limit"] for c in exchange.calls] == [500, 500, 201]
    assert {c["symbol"] for c in exchange.calls} == {"BTC/USDT:USDT"}
    assert len(candles) == 1200


def test_real_ccxt_features_give_page_limits_offline() -> None:
    binance = ccxt.binance()
    assert _features_limit(binance, "BTC/USDT") == 1000
    assert _features_limit(binance, "BTC/USDT:USDT") == 500
    assert _features_limit(object(), "BTC/USDT") is None


def test_exchange_serving_fewer_rows_than_asked_keeps_paging() -> None:
    # the exchange silently caps pages at 300 though we believe it serves 1000
    exchange = FakeExchange(series_until(NOW, 3000), max_limit=300)
    p, sleep = provider(exchange, page_limit=1000)

    candles = p.fetch("BTC/USDT", "1h", 700, NOW)

    assert len(candles) == 700
    assert [c["limit"] for c in exchange.calls] == [701, 401, 101]
    assert len(sleep.calls) == 2


def test_symbol_map_translates_assets_and_unmapped_pass_through() -> None:
    exchange = FakeExchange(series_until(NOW, 50))
    p, _ = provider(exchange, symbol_map={"BTC/USDT": "BTC/USDT:USDT"})
    p.fetch("BTC/USDT", "1h", 10, NOW)
    assert exchange.calls[-1]["symbol"] == "BTC/USDT:USDT"

    with pytest.raises(MarketDataUnavailable) as info:
        p.fetch("ETH/USDT", "1h", 10, NOW)  # not mapped: asked as is, unknown to the fake
    assert exchange.calls[-1]["symbol"] == "ETH/USDT"
    assert "ETH/USDT 1h" in info.value.message


def test_retries_network_errors_with_exponential_backoff_then_succeeds() -> None:
    exchange = FakeExchange(
        series_until(NOW, 50),
        script=[
            ccxt.RequestTimeout("binance GET https://api.binance.com/api/v3/klines timed out"),
            ccxt.RateLimitExceeded('binance {"code":-1003,"msg":"Too many requests"}'),
            ccxt.NetworkError("Connection reset by peer"),
        ],
    )
    p, sleep = provider(exchange, max_retries=3, backoff_s=0.5)

    candles = p.fetch("BTC/USDT", "1h", 10, NOW)

    assert len(candles) == 10
    assert len(exchange.calls) == 4
    assert sleep.calls == [0.5, 1.0, 2.0]


def test_rate_limit_backoff_is_never_shorter_than_the_rate_limit() -> None:
    exchange = FakeExchange(
        series_until(NOW, 50), rate_limit=2000, script=[ccxt.RateLimitExceeded("429")]
    )
    p, sleep = provider(exchange, backoff_s=0.1)
    p.fetch("BTC/USDT", "1h", 10, NOW)
    assert sleep.calls == [2.0]


def test_retries_exhausted_raise_unavailable_naming_pair_and_cause() -> None:
    exchange = FakeExchange(
        series_until(NOW, 50),
        script=[ccxt.ExchangeNotAvailable("binance 503 Service Unavailable")] * 10,
    )
    p, sleep = provider(exchange, max_retries=3, backoff_s=0.5)

    with pytest.raises(MarketDataUnavailable) as info:
        p.fetch("BTC/USDT", "4h", 10, NOW)

    assert len(exchange.calls) == 4  # the first try and 3 retries
    assert sleep.calls == [0.5, 1.0, 2.0]
    message = info.value.message
    assert "BTC/USDT 4h" in message and "binance" in message
    assert "after 4 attempts" in message and "ExchangeNotAvailable" in message
    assert isinstance(info.value.__cause__, ccxt.ExchangeNotAvailable)
    assert info.value.status == 503


def test_zero_retries_fails_on_first_error() -> None:
    exchange = FakeExchange(series_until(NOW, 50), script=[ccxt.RequestTimeout("timeout")])
    p, sleep = provider(exchange, max_retries=0)
    with pytest.raises(MarketDataUnavailable, match="after 1 attempts"):
        p.fetch("BTC/USDT", "1h", 10, NOW)
    assert sleep.calls == []


def test_bad_symbol_fails_at_once_without_retry() -> None:
    exchange = FakeExchange(series_until(NOW, 50))
    p, sleep = provider(exchange)

    with pytest.raises(MarketDataUnavailable) as info:
        p.fetch("DOGE/XYZ", "1h", 10, NOW)

    assert len(exchange.calls) == 1
    assert sleep.calls == []
    assert "DOGE/XYZ 1h" in info.value.message and "BadSymbol" in info.value.message


def test_other_exchange_errors_are_not_retried() -> None:
    exchange = FakeExchange(
        series_until(NOW, 50), script=[ccxt.ExchangeError("binance Invalid interval")]
    )
    p, sleep = provider(exchange)
    with pytest.raises(MarketDataUnavailable, match="ExchangeError"):
        p.fetch("BTC/USDT", "1h", 10, NOW)
    assert len(exchange.calls) == 1 and sleep.calls == []


def test_retry_in_a_later_page_keeps_earlier_pages() -> None:
    exchange = FakeExchange(series_until(NOW, 3000), script=[None, ccxt.RequestTimeout("timeout")])
    p, sleep = provider(exchange)
    candles = p.fetch("BTC/USDT", "1h", 1500, NOW)
    assert len(candles) == 1500
    assert len(exchange.calls) == 3
    assert sleep.calls == [0.05, 0.5]  # rate limit between pages, then the retry backoff


def test_timeframe_the_exchange_does_not_offer_fails_without_calling() -> None:
    exchange = FakeExchange(series_until(NOW, 50))
    p, _ = provider(exchange)
    with pytest.raises(MarketDataUnavailable, match="offers no 2h candles"):
        p.fetch("BTC/USDT", "2h", 10, NOW)
    assert exchange.calls == []


def test_drops_rows_with_missing_values_dedupes_and_ignores_future_bars() -> None:
    rows: list[list[Any]] = [list(r) for r in series_until(NOW, 6)]
    rows[2][5] = None  # a bar without volume
    rows.insert(4, list(rows[3]))  # the same bar twice
    rows[4][4] = rows[4][3]  # ... the later copy wins (its close moved to its low)
    future = list(rows[-1])
    future[0] = float(FORMING + HOUR_MS)  # opened after NOW: never visible
    rows.append(future)
    exchange = FakeExchange(rows)
    p, _ = provider(exchange)

    candles = p.fetch("BTC/USDT", "1h", 5, NOW)

    times = [int(t) for t in candles.time]
    assert times == [FORMING - i * HOUR_MS for i in (5, 4, 2, 1)]  # the forming bar: not closed
    assert candles.close[2] == rows[4][3]
    assert FORMING + HOUR_MS not in times


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        (4, 1e9, "close 1000000000.0 is outside the bar's range"),
        (1, -5.0, "open must be a finite price above 0, not -5.0"),
        (5, -1.0, "volume must be finite and not negative, not -1.0"),
    ],
)
def test_a_bad_bar_from_the_exchange_is_refused_naming_it(
    column: int, value: float, problem: str
) -> None:
    rows: list[list[Any]] = [list(r) for r in series_until(NOW, 6)]
    rows[3][column] = value
    p, _ = provider(FakeExchange(rows))
    with pytest.raises(MarketDataUnavailable) as info:
        p.fetch("BTC/USDT", "1h", 5, NOW)
    assert "the exchange sent a bad bar" in info.value.message
    assert problem in info.value.message


def test_a_bar_off_the_timeframe_grid_is_refused_naming_its_time() -> None:
    rows: list[list[Any]] = [list(r) for r in series_until(NOW, 6)]
    rows[3][0] = float(rows[3][0] + 60_000)  # 12:01 is no 1h bar's open
    p, _ = provider(FakeExchange(rows))
    with pytest.raises(MarketDataUnavailable) as info:
        p.fetch("BTC/USDT", "1h", 5, NOW)
    assert "is not the open of a 1h bar" in info.value.message


def test_exchange_without_data_returns_empty_candles() -> None:
    exchange = FakeExchange([])
    p, _ = provider(exchange)
    assert len(p.fetch("BTC/USDT", "1h", 10, NOW)) == 0
    assert len(exchange.calls) == 1


def test_exchange_ignoring_since_terminates() -> None:
    exchange = FakeExchange(series_until(NOW, 3000), ignore_since=True)
    p, _ = provider(exchange, page_limit=100)
    candles = p.fetch("BTC/USDT", "1h", 250, NOW)
    assert len(exchange.calls) == 1  # the newest bar is already the forming one
    assert len(candles) == 99 and int(candles.time[-1]) == FORMING - HOUR_MS


def test_recorded_rows_come_back_as_candles() -> None:
    now = RECORDED_1H[-1][0] + HOUR_MS + 1  # every recorded bar closed
    exchange = FakeExchange(RECORDED_1H)
    p, _ = provider(exchange)
    candles = p.fetch("BTC/USDT", "1h", 4, int(now))
    assert [int(t) for t in candles.time] == [int(r[0]) for r in RECORDED_1H]
    assert list(candles.close) == [r[4] for r in RECORDED_1H]
    assert candles.closed_count("1h", int(now)) == 4


def test_builds_real_exchange_lazily_with_rate_limiting() -> None:
    p = CcxtProvider("binance")
    assert p._exchange is None  # nothing built (or imported) by the constructor
    exchange = p.exchange
    assert isinstance(exchange, ccxt.binance)
    assert exchange.enableRateLimit is True
    assert p.exchange is exchange  # built once
    assert p.page_limit("BTC/USDT") == 1000


def test_unknown_exchange_id_is_unavailable() -> None:
    p = CcxtProvider("no_such_exchange")
    with pytest.raises(MarketDataUnavailable, match="no_such_exchange"):
        p.fetch("BTC/USDT", "1h", 10, NOW)


def test_default_page_limit_without_features() -> None:
    exchange = FakeExchange([])
    exchange.features = {}
    p, _ = provider(exchange)
    assert p.page_limit("BTC/USDT") == DEFAULT_PAGE_LIMIT


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        CcxtProvider("binance", max_retries=-1)
    p, _ = provider(FakeExchange([]))
    with pytest.raises(ValueError):
        p.fetch("BTC/USDT", "1h", 0, NOW)
