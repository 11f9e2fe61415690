"""Candles in DynamoDB, one item per bar under the partition f"{asset}#{timeframe}"."""

from __future__ import annotations

import math
from collections.abc import Iterable

from engine.core.candles import CANDLE_FIELDS, Candles
from engine.core.timeframes import timeframe_ms
from engine.storage._batch import batch_put
from engine.storage._retry import RetryPolicy
from engine.storage.models import CandleModel, market_key


class DynamoCandleRepository:
    """engine.ports.CandleRepository on the candles table."""

    def __init__(self, *, retry: RetryPolicy | None = None) -> None:
        self.retry = retry or RetryPolicy()

    def put(self, asset: str, timeframe: str, candles: Candles) -> int:
        """Upsert by open time with BatchWriteItem (25 per request); returns how many."""
        market = market_key(asset, timeframe)
        items: list[CandleModel] = []
        for i in range(len(candles)):
            values = {name: float(candles.field(name)[i]) for name in CANDLE_FIELDS}
            bad = [name for name, value in values.items() if not math.isfinite(value)]
            if bad:
                raise ValueError(
                    f"{market}: candle at {int(candles.time[i])} has non-finite {', '.join(bad)}"
                )
            items.append(
                CandleModel(
                    market,
                    int(candles.time[i]),
                    open=values["open"],
                    high=values["high"],
                    low=values["low"],
                    close=values["close"],
                    volume=values["volume"],
                )
            )
        return batch_put(CandleModel, items, self.retry)

    def latest(
        self, asset: str, timeframe: str, limit: int, *, closed_by_ms: int | None = None
    ) -> Candles:
        """The newest `limit` candles, oldest first; with `closed_by_ms`, the newest that had
        closed by then: a key condition, so later candles are never read (one descending
        Query, paginated)."""
        if limit <= 0:
            return Candles.empty()
        market = market_key(asset, timeframe)
        condition = (
            None
            if closed_by_ms is None
            else CandleModel.open_time <= closed_by_ms - timeframe_ms(timeframe)
        )

        def query() -> list[CandleModel]:
            return list(
                CandleModel.query(
                    market, range_key_condition=condition, scan_index_forward=False, limit=limit
                )
            )

        return _candles(reversed(self.retry.call("Query", query)))

    def range(self, asset: str, timeframe: str, start_ms: int, end_ms: int) -> Candles:
        """Candles whose open time is within [start_ms, end_ms], both ends included."""
        if end_ms < start_ms:
            return Candles.empty()
        market = market_key(asset, timeframe)

        def query() -> list[CandleModel]:
            return list(
                CandleModel.query(
                    market, range_key_condition=CandleModel.open_time.between(start_ms, end_ms)
                )
            )

        return _candles(self.retry.call("Query", query))


def _candles(items: Iterable[CandleModel]) -> Candles:
    rows = [(int(c.open_time), c.open, c.high, c.low, c.close, c.volume) for c in items]
    return Candles.from_rows(rows) if rows else Candles.empty()
