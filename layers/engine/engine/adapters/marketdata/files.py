"""Candles from CSV or Parquet files in one directory, one file per (asset, timeframe)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from engine.core.candles import Candles
from engine.service.errors import MarketDataUnavailable

SUFFIXES: Final[tuple[str, ...]] = (".csv", ".parquet")


def candles_file_stem(asset: str, timeframe: str) -> str:
    """`BTC/USDT`, `1h` -> `BTC_USDT_1h` (the file name without its suffix)."""
    return f"{asset.replace('/', '_')}_{timeframe}"


class FileProvider:
    """MarketDataProvider over `{directory}/{asset with / as _}_{timeframe}.csv|.parquet`.

    A file holds the whole history; `fetch` answers the last `bars` closed by `now_ms`, so
    replaying history never sees the future.
    Parsed files are cached by (path, modification time): a rewritten file is read again.
    When both a .csv and a .parquet exist, the .csv is used.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._cache: dict[Path, tuple[int, Candles]] = {}

    def path_for(self, asset: str, timeframe: str) -> Path | None:
        stem = candles_file_stem(asset, timeframe)
        for suffix in SUFFIXES:
            candidate = self.directory / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def fetch(self, asset: str, timeframe: str, bars: int, now_ms: int) -> Candles:
        if bars < 1:
            raise ValueError(f"bars must be at least 1, not {bars}")
        path = self.path_for(asset, timeframe)
        if path is None:
            stem = candles_file_stem(asset, timeframe)
            raise MarketDataUnavailable(
                f"market data for {asset} {timeframe} unavailable: no file "
                f"{stem}.csv or {stem}.parquet in {self.directory}"
            )
        candles = self._read(asset, timeframe, path)
        return candles.closed_by(timeframe, now_ms).tail(bars)

    def _read(self, asset: str, timeframe: str, path: Path) -> Candles:
        try:
            mtime = path.stat().st_mtime_ns
            cached = self._cache.get(path)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            from engine.adapters.candle_files import read_candles_file

            candles = read_candles_file(path, timeframe)
        except (OSError, ValueError) as exc:  # CandlesFileError is a ValueError
            raise MarketDataUnavailable(
                f"market data for {asset} {timeframe} unavailable: {exc}"
            ) from exc
        self._cache[path] = (mtime, candles)
        return candles
