"""Candles from a CandleRepository (the DynamoDB candle table, the default provider)."""

from __future__ import annotations

from engine.core.candles import Candles
from engine.core.timeframes import iso
from engine.service.errors import MarketDataStale, MarketDataUnavailable
from engine.service.ports import CandleRepository


class RepositoryProvider:
    """MarketDataProvider over `CandleRepository.latest`.

    Asks for the newest `bars` candles closed by `now_ms`, so an evaluation never sees a
    forming bar or candles from its future, and an evaluation "as of" a past time (a replay
    against the table) finds its history. Any failure of the repository surfaces as
    MarketDataUnavailable.
    """

    def __init__(self, candle_repository: CandleRepository, *, concurrency: int = 8) -> None:
        self.candle_repository = candle_repository
        # DynamoDB serves concurrent queries: load_market fetches this many pairs at once
        self.concurrency = concurrency

    def fetch(self, asset: str, timeframe: str, bars: int, now_ms: int) -> Candles:
        if bars < 1:
            raise ValueError(f"bars must be at least 1, not {bars}")
        try:
            candles = self.candle_repository.latest(asset, timeframe, bars, closed_by_ms=now_ms)
        except (MarketDataUnavailable, MarketDataStale):
            raise
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise MarketDataUnavailable(
                f"market data for {asset} {timeframe} unavailable from the candle table: "
                f"{type(exc).__name__}: {message}"
            ) from exc
        closed = candles.closed_by(timeframe, now_ms)
        if len(closed) == 0:
            raise MarketDataUnavailable(
                f"the candle table has no {timeframe} candles for {asset} closed by "
                f"{iso(now_ms)}: import them with "
                f"`python -m engine candles import --asset {asset} --timeframe {timeframe} FILE`",
                details=[{"asset": asset, "timeframe": timeframe}],
            )
        return closed
