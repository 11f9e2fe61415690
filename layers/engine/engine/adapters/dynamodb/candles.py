"""Candles in DynamoDB, packed CANDLE_PERIOD_BARS bars per item.

One item per (asset, timeframe, period) under the partition `market_key(asset, timeframe)`,
its sort key the open time of the period (`period_start`). A fetch of the newest n bars reads
about n / CANDLE_PERIOD_BARS + 1 items in one Query, newest first, instead of n rows; a put
merges into the periods it touches (upsert by open time), each item written conditioned on
the revision it read, so two concurrent imports cannot lose each other's bars.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import numpy as np
from pynamodb.exceptions import DoesNotExist, PutError
from pynamodb.expressions.condition import Condition

from engine.adapters.dynamodb._batch import batch_delete, batch_get
from engine.adapters.dynamodb._retry import RetryPolicy, error_code
from engine.adapters.dynamodb.errors import StorageError
from engine.adapters.dynamodb.models import (
    CANDLE_PERIOD_BARS,
    CandleModel,
    legacy_market_key,
    market_key,
)
from engine.core.candles import CANDLE_FIELDS, Candles
from engine.core.timeframes import open_offset_ms, timeframe_ms

# Tries of one period's read-merge-write when another writer moves the item in between.
CONFLICT_ATTEMPTS: Final = 10
_TIME: Final = np.dtype("<i8")
_VALUE: Final = np.dtype("<f8")
BYTES_PER_BAR: Final = _TIME.itemsize + len(CANDLE_FIELDS) * _VALUE.itemsize  # 48


def period_ms(timeframe: str) -> int:
    return CANDLE_PERIOD_BARS * timeframe_ms(timeframe)


def period_start(time_ms: int, timeframe: str) -> int:
    """Open time of the period (the item) that holds the bar opening at `time_ms`."""
    step, offset = period_ms(timeframe), open_offset_ms(timeframe)
    return offset + (time_ms - offset) // step * step


def pack(candles: Candles) -> bytes:
    """The item's `data`: open times, then open, high, low, close, volume, little-endian."""
    parts = [np.ascontiguousarray(candles.time, dtype=_TIME).tobytes()]
    parts.extend(
        np.ascontiguousarray(candles.field(name), dtype=_VALUE).tobytes() for name in CANDLE_FIELDS
    )
    return b"".join(parts)


def unpack(data: bytes, bars: int) -> Candles:
    if len(data) != bars * BYTES_PER_BAR:
        raise StorageError(
            f"candle item holds {len(data)} bytes, expected {bars * BYTES_PER_BAR} for {bars} bars"
        )
    time = np.frombuffer(data, dtype=_TIME, count=bars).astype(np.int64)
    values = np.frombuffer(data, dtype=_VALUE, offset=bars * _TIME.itemsize).astype(np.float64)
    columns = values.reshape(len(CANDLE_FIELDS), bars)
    return Candles(time, *(np.ascontiguousarray(columns[i]) for i in range(len(CANDLE_FIELDS))))


def merge(old: Candles, new: Candles) -> Candles:
    """`old` with `new` upserted by open time (new values win), ordered by time."""
    if len(old) == 0:
        return new
    keep = ~np.isin(old.time, new.time)
    time = np.concatenate([old.time[keep], new.time])
    order = np.argsort(time, kind="stable")
    return Candles(
        time[order],
        *(
            np.concatenate([old.field(name)[keep], new.field(name)])[order]
            for name in CANDLE_FIELDS
        ),
    )


def concat(parts: Iterable[Candles]) -> Candles:
    """Consecutive pieces, oldest first, as one Candles."""
    pieces = [p for p in parts if len(p)]
    if not pieces:
        return Candles.empty()
    if len(pieces) == 1:
        return pieces[0]
    return Candles(
        np.concatenate([p.time for p in pieces]),
        *(np.concatenate([p.field(name) for p in pieces]) for name in CANDLE_FIELDS),
    )


def _item_candles(item: CandleModel) -> Candles:
    return unpack(bytes(item.data), int(item.bars))


class DynamoCandleRepository:
    """engine.service.ports.CandleRepository on the candles table."""

    def __init__(self, *, retry: RetryPolicy | None = None) -> None:
        self.retry = retry or RetryPolicy()

    def put(self, asset: str, timeframe: str, candles: Candles) -> int:
        """Upsert by open time into the period items the candles fall in; returns how many
        candles were written. One BatchGetItem per 100 periods reads what is stored, then
        one conditioned PutItem per period writes the merge."""
        market = market_key(asset, timeframe)
        for name in CANDLE_FIELDS:
            bad = np.flatnonzero(~np.isfinite(candles.field(name)))
            if len(bad):
                raise ValueError(
                    f"{market}: candle at {int(candles.time[bad[0]])} has non-finite {name}"
                )
        if len(candles) == 0:
            return 0
        step, offset = period_ms(timeframe), open_offset_ms(timeframe)
        starts = offset + (candles.time - offset) // step * step
        firsts = np.flatnonzero(np.r_[True, starts[1:] != starts[:-1]])
        bounds = [*firsts.tolist(), len(candles)]
        keys = [(market, int(starts[i])) for i in firsts]
        stored = {int(item.open_time): item for item in batch_get(CandleModel, keys, self.retry)}
        for (_, start), lo, hi in zip(keys, bounds[:-1], bounds[1:], strict=True):
            chunk = Candles(
                candles.time[lo:hi], *(candles.field(name)[lo:hi] for name in CANDLE_FIELDS)
            )
            self._merge_into(market, start, chunk, stored.get(start))
        return len(candles)

    def _merge_into(
        self, market: str, start: int, chunk: Candles, current: CandleModel | None
    ) -> None:
        for _ in range(CONFLICT_ATTEMPTS):
            merged = chunk if current is None else merge(_item_candles(current), chunk)
            item = CandleModel(
                market,
                start,
                bars=len(merged),
                data=pack(merged),
                revision=0 if current is None else int(current.revision) + 1,
            )
            condition = (
                CandleModel.market.does_not_exist()
                if current is None
                else CandleModel.revision == int(current.revision)
            )

            def save(item: CandleModel = item, condition: Condition = condition) -> bool:
                try:
                    item.save(condition=condition)
                except PutError as exc:
                    if error_code(exc) == "ConditionalCheckFailedException":
                        return False
                    raise
                return True

            if self.retry.call("PutItem", save):
                return

            def reread() -> CandleModel | None:
                try:
                    return CandleModel.get(market, start, consistent_read=True)
                except DoesNotExist:
                    return None

            current = self.retry.call("GetItem", reread)
        raise StorageError(
            f"candles {market} at {start}: still written by others after "
            f"{CONFLICT_ATTEMPTS} attempts"
        )

    def latest(
        self, asset: str, timeframe: str, limit: int, *, closed_by_ms: int | None = None
    ) -> Candles:
        """The newest `limit` candles, oldest first; with `closed_by_ms`, the newest that had
        closed by then: a key condition on the period, so later periods are never read, and
        the bars of the cut period after it are dropped. One descending Query whose page is
        as many items as `limit` bars can span, stopping as soon as it has enough."""
        if limit <= 0:
            return Candles.empty()
        market = market_key(asset, timeframe)
        cutoff = None if closed_by_ms is None else closed_by_ms - timeframe_ms(timeframe)
        condition = (
            None if cutoff is None else CandleModel.open_time <= period_start(cutoff, timeframe)
        )
        page = -(-limit // CANDLE_PERIOD_BARS) + 1

        def query() -> list[Candles]:
            parts: list[Candles] = []
            have = 0
            for item in CandleModel.query(
                market, range_key_condition=condition, scan_index_forward=False, page_size=page
            ):
                part = _item_candles(item)
                if cutoff is not None:
                    part = part.head(int(np.searchsorted(part.time, cutoff, side="right")))
                parts.append(part)
                have += len(part)
                if have >= limit:
                    break
            return parts

        return concat(reversed(self.retry.call("Query", query))).tail(limit)

    def range(self, asset: str, timeframe: str, start_ms: int, end_ms: int) -> Candles:
        """Candles whose open time is within [start_ms, end_ms], both ends included."""
        if end_ms < start_ms:
            return Candles.empty()
        market = market_key(asset, timeframe)
        first = period_start(start_ms, timeframe)

        def query() -> list[Candles]:
            return [
                _item_candles(item)
                for item in CandleModel.query(
                    market, range_key_condition=CandleModel.open_time.between(first, end_ms)
                )
            ]

        candles = concat(self.retry.call("Query", query))
        lo = int(np.searchsorted(candles.time, start_ms, side="left"))
        hi = int(np.searchsorted(candles.time, end_ms, side="right"))
        return candles.head(hi).tail(hi - lo)

    def migrate_rows(self, *, delete: bool = False) -> dict[str, int]:
        """Rewrite the one-item-per-bar rows stored before candles were packed into packed
        items (upserted: safe to run again, and beside live imports), and with `delete`
        delete the rows once their market is written. Returns rows found per old market.

        A Scan of the table: the rows are told from packed items by having no `data`.
        """
        connection = CandleModel._get_connection()
        rows: dict[str, list[tuple[float, ...]]] = {}
        start_key: dict[str, Any] | None = None
        while True:

            def scan(start: dict[str, Any] | None = start_key) -> dict[str, Any]:
                return connection.scan(
                    exclusive_start_key=start,  # type: ignore[arg-type]  # typed as str
                    consistent_read=True,
                )

            page = self.retry.call("Scan", scan)
            for raw in page.get("Items", []):
                if "data" in raw:
                    continue
                rows.setdefault(raw["market"]["S"], []).append(
                    (
                        int(raw["open_time"]["N"]),
                        *(float(raw[name]["N"]) for name in CANDLE_FIELDS),
                    )
                )
            start_key = page.get("LastEvaluatedKey")
            if not start_key:
                break
        for market in sorted(rows):
            asset, _, timeframe = market.rpartition("#")
            if legacy_market_key(asset, timeframe) != market:
                raise StorageError(f"candle row under {market!r} is not asset#timeframe")
            self.put(asset, timeframe, Candles.from_rows(rows[market]))
            if delete:
                batch_delete(
                    CandleModel, [(market, int(row[0])) for row in rows[market]], self.retry
                )
        return {market: len(found) for market, found in sorted(rows.items())}
