"""Candles as columnar numpy arrays: cheap to slice, share and feed to TA-Lib."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.core.timeframes import bucket_start, open_offset_ms, timeframe_ms, to_datetime

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CANDLE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, eq=False, slots=True)
class Candles:
    """Bars of one (asset, timeframe), ordered by open time (UTC epoch milliseconds).

    Bars need not be contiguous in time: a market that closes simply has no bars then.
    """

    time: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __post_init__(self) -> None:
        n = len(self.time)
        for name in CANDLE_FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"candle column {name!r} has {len(getattr(self, name))} rows, time has {n}"
                )
        if n > 1 and not bool(np.all(np.diff(self.time) > 0)):
            raise ValueError("candle times must be strictly increasing")

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[float]]) -> Candles:
        """Rows of (open time ms, open, high, low, close, volume), in any order, last one wins."""
        by_time: dict[int, Sequence[float]] = {}
        for row in rows:
            by_time[int(row[0])] = row
        ordered = [by_time[t] for t in sorted(by_time)]
        data = np.array(ordered, dtype=np.float64).reshape(len(ordered), 6)
        return cls(
            time=np.array([t for t in sorted(by_time)], dtype=np.int64),
            open=np.ascontiguousarray(data[:, 1]),
            high=np.ascontiguousarray(data[:, 2]),
            low=np.ascontiguousarray(data[:, 3]),
            close=np.ascontiguousarray(data[:, 4]),
            volume=np.ascontiguousarray(data[:, 5]),
        )

    @classmethod
    def empty(cls) -> Candles:
        f = np.empty(0, dtype=np.float64)
        return cls(np.empty(0, dtype=np.int64), f, f, f, f, f)

    def __len__(self) -> int:
        return len(self.time)

    def field(self, name: str) -> FloatArray:
        if name not in CANDLE_FIELDS:
            raise KeyError(name)
        arr: FloatArray = getattr(self, name)
        return arr

    def head(self, n: int) -> Candles:
        """The first `n` bars (used to prove that later bars change no decision)."""
        return Candles(*(getattr(self, name)[:n] for name in ("time", *CANDLE_FIELDS)))

    def tail(self, n: int) -> Candles:
        """The last `n` bars."""
        start = max(0, len(self) - n)
        return Candles(*(getattr(self, name)[start:] for name in ("time", *CANDLE_FIELDS)))

    def closed_count(self, timeframe: str, now_ms: int) -> int:
        """How many leading bars have closed by `now_ms` (a bar closes one timeframe after it opens)."""
        cutoff = now_ms - timeframe_ms(timeframe)
        return int(self.time.searchsorted(cutoff, side="right"))

    def closed_by(self, timeframe: str, now_ms: int) -> Candles:
        """The leading bars that have closed by `now_ms`: what a provider may answer."""
        closed = self.closed_count(timeframe, now_ms)
        return self if closed == len(self) else self.head(closed)

    def resample(
        self, source_timeframe: str, timeframe: str, *, whole_first: bool = False
    ) -> Candles:
        """Aggregate into a coarser timeframe (open first, high max, low min, close last, volume sum).

        The last bucket may still be forming; `align_to` only exposes buckets once closed.
        With `whole_first`, the first bucket is dropped unless the candles start at its open:
        a window that begins mid-bucket would otherwise make a bar of part of it.
        """
        if timeframe_ms(timeframe) < timeframe_ms(source_timeframe):
            raise ValueError(f"cannot resample {source_timeframe} candles into finer {timeframe}")
        if len(self) == 0:
            return Candles.empty()
        step = timeframe_ms(timeframe)
        first = bucket_start(int(self.time[0]), timeframe)
        offset = first % step
        buckets = ((self.time - offset) // step) * step + offset
        starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        if whole_first and int(self.time[0]) != int(buckets[0]):
            starts = starts[1:]
            if len(starts) == 0:
                return Candles.empty()
        ends = np.r_[starts[1:], len(self)] - 1
        return Candles(
            time=buckets[starts].astype(np.int64),
            open=self.open[starts],
            high=np.maximum.reduceat(self.high, starts),
            low=np.minimum.reduceat(self.low, starts),
            close=self.close[ends],
            volume=np.add.reduceat(self.volume, starts),
        )


class CandleProblem(ValueError):
    """A bar that breaks DESIGN §8's rules; `index` is its position in the rows as given."""

    def __init__(self, index: int, message: str, *, other: int | None = None) -> None:
        self.index = index
        self.message = message
        self.other = other  # the earlier row of a conflicting duplicate
        super().__init__(message)


def check_candles(
    time: IntArray,
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    volume: FloatArray,
    *,
    timeframe: str | None,
) -> IntArray:
    """Validate raw rows (any order) where candles enter; answer the rows to keep, by time.

    DESIGN §8: prices finite and > 0, open and close within [low, high], volume >= 0, open
    times aligned to the timeframe (when it is known), one row per time. A repeated time
    with identical values is the same bar twice and is kept once; with other values it is
    an error naming both rows. Raises CandleProblem for the first bad row in input order.
    """
    for name, values in (("open", open_), ("high", high), ("low", low), ("close", close)):
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise CandleProblem(
                i, f"{name} must be a finite price above 0, not {float(values[i])!r}"
            )
    bad_volume = ~(np.isfinite(volume) & (volume >= 0))
    if bad_volume.any():
        i = int(np.argmax(bad_volume))
        raise CandleProblem(i, f"volume must be finite and not negative, not {float(volume[i])!r}")
    inverted = high < low
    if inverted.any():
        i = int(np.argmax(inverted))
        raise CandleProblem(i, f"high {float(high[i])!r} is below low {float(low[i])!r}")
    for name, values in (("open", open_), ("close", close)):
        outside = (values < low) | (values > high)
        if outside.any():
            i = int(np.argmax(outside))
            raise CandleProblem(
                i,
                f"{name} {float(values[i])!r} is outside the bar's range [low {float(low[i])!r}, high {float(high[i])!r}]",
            )
    if timeframe is not None:
        step = timeframe_ms(timeframe)
        misaligned = (time - open_offset_ms(timeframe)) % step != 0
        if misaligned.any():
            i = int(np.argmax(misaligned))
            raise CandleProblem(
                i,
                f"time {_iso(int(time[i]))} is not the open of a {timeframe} bar "
                f"(is the file of another timeframe?)",
            )
    order = np.argsort(time, kind="stable")
    ordered = time[order]
    repeat = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(repeat):
        fields = np.stack([open_, high, low, close, volume])
        earlier, later = order[repeat], order[repeat + 1]
        differs = np.any(fields[:, earlier] != fields[:, later], axis=0)
        if differs.any():
            k = int(np.argmax(differs))
            first, second = sorted((int(earlier[k]), int(later[k])))
            raise CandleProblem(
                second,
                f"time {_iso(int(time[second]))} appears twice with different values",
                other=first,
            )
    keep: IntArray = order[np.r_[ordered[1:] != ordered[:-1], True]]
    return keep


def _iso(time_ms: int) -> str:
    return to_datetime(time_ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def align_to(
    values: FloatArray,
    informative_time: IntArray,
    informative_timeframe: str,
    primary_time: IntArray,
    primary_timeframe: str,
) -> FloatArray:
    """Map an informative series onto primary bars so that bar t sees only bars closed by t.

    An informative bar opened at S closes at S + its timeframe; primary bar t closes at
    time[t] + its timeframe. Bar t sees the last informative bar with close <= t's close.
    """
    closes = informative_time + timeframe_ms(informative_timeframe)
    primary_closes = primary_time + timeframe_ms(primary_timeframe)
    idx = np.searchsorted(closes, primary_closes, side="right") - 1
    out = np.full(len(primary_time), np.nan, dtype=np.float64)
    visible = idx >= 0
    out[visible] = values[idx[visible]]
    return out
