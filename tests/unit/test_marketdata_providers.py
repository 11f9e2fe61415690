"""FileProvider, RepositoryProvider, provider_from_config and the package's import cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine.adapters import candle_files as candles_io
from engine.adapters.marketdata import (
    CcxtProvider,
    FileProvider,
    RepositoryProvider,
    candles_file_stem,
    provider_from_config,
)
from engine.core.candles import Candles
from engine.core.timeframes import HOUR_MS
from engine.service.errors import MarketDataUnavailable, StorageUnavailable

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z


def write_csv(path: Path, count: int, *, start: int = T0, close: float = 100.0) -> None:
    lines = ["time,open,high,low,close,volume"]
    for i in range(count):
        c = close + i
        lines.append(f"{start + i * HOUR_MS},{c},{c + 1},{c - 1 if c > 1 else c / 2},{c},{10 + i}")
    path.write_text("\n".join(lines) + "\n")


# --- FileProvider ------------------------------------------------------------------------


def test_file_name_replaces_slashes() -> None:
    assert candles_file_stem("BTC/USDT", "1h") == "BTC_USDT_1h"
    assert candles_file_stem("AAPL", "1d") == "AAPL_1d"


def test_reads_csv_and_answers_the_bars_closed_by_now(tmp_path: Path) -> None:
    write_csv(tmp_path / "BTC_USDT_1h.csv", 48)
    provider = FileProvider(tmp_path)
    now = T0 + 20 * HOUR_MS + 30 * 60_000  # 20:30: bar 19 closed, bar 20 forming

    candles = provider.fetch("BTC/USDT", "1h", 5, now)

    assert [int(t) for t in candles.time] == [T0 + i * HOUR_MS for i in range(15, 20)]
    assert candles.closed_count("1h", now) == 5
    assert list(candles.close) == [100.0 + i for i in range(15, 20)]


def test_short_history_answers_what_there_is(tmp_path: Path) -> None:
    write_csv(tmp_path / "BTC_USDT_1h.csv", 3)
    candles = FileProvider(tmp_path).fetch("BTC/USDT", "1h", 100, T0 + 10 * HOUR_MS)
    assert len(candles) == 3


def test_reads_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "time": pa.array([T0 + i * 4 * HOUR_MS for i in range(10)], type=pa.int64()),
            "open": [1.0] * 10,
            "high": [20.0] * 10,
            "low": [0.5] * 10,
            "close": [float(i + 1) for i in range(10)],
            "volume": [3.0] * 10,
        }
    )
    pq.write_table(table, tmp_path / "ETH_USDT_4h.parquet")
    candles = FileProvider(tmp_path).fetch("ETH/USDT", "4h", 3, T0 + 100 * HOUR_MS)
    assert list(candles.close) == [8.0, 9.0, 10.0]


def test_csv_preferred_when_both_exist(tmp_path: Path) -> None:
    write_csv(tmp_path / "BTC_USDT_1h.csv", 5, close=1.0)
    (tmp_path / "BTC_USDT_1h.parquet").write_bytes(b"not parquet at all")
    provider = FileProvider(tmp_path)
    assert provider.path_for("BTC/USDT", "1h") == tmp_path / "BTC_USDT_1h.csv"
    assert len(provider.fetch("BTC/USDT", "1h", 2, T0 + 10 * HOUR_MS)) == 2


def test_parsed_files_are_cached_by_path_and_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "BTC_USDT_1h.csv"
    write_csv(path, 10)
    reads: list[Path] = []
    real = candles_io.read_candles_file

    def counting(p: str | Path, timeframe: str | None = None) -> Candles:
        reads.append(Path(p))
        return real(p, timeframe)

    monkeypatch.setattr(candles_io, "read_candles_file", counting)
    provider = FileProvider(tmp_path)
    now = T0 + 100 * HOUR_MS

    provider.fetch("BTC/USDT", "1h", 5, now)
    provider.fetch("BTC/USDT", "1h", 3, now)
    assert reads == [path]

    write_csv(path, 20)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    candles = provider.fetch("BTC/USDT", "1h", 100, now)
    assert reads == [path, path]
    assert len(candles) == 20


def test_missing_file_is_unavailable_naming_both_names(tmp_path: Path) -> None:
    with pytest.raises(MarketDataUnavailable) as info:
        FileProvider(tmp_path).fetch("BTC/USDT", "1h", 5, T0)
    message = info.value.message
    assert "BTC/USDT 1h" in message
    assert "BTC_USDT_1h.csv" in message and "BTC_USDT_1h.parquet" in message


def test_broken_file_is_unavailable_with_the_parsers_reason(tmp_path: Path) -> None:
    (tmp_path / "BTC_USDT_1h.csv").write_text("time,open,high\n1,2,3\n")
    with pytest.raises(MarketDataUnavailable) as info:
        FileProvider(tmp_path).fetch("BTC/USDT", "1h", 5, T0)
    assert "BTC/USDT 1h" in info.value.message
    assert "missing column" in info.value.message


# --- RepositoryProvider ------------------------------------------------------------------


class FakeCandleRepository:
    def __init__(self, candles: Candles | None = None, error: Exception | None = None) -> None:
        self.candles = candles if candles is not None else Candles.empty()
        self.error = error
        self.calls: list[tuple[str, str, int]] = []

    def put(self, asset: str, timeframe: str, candles: Candles) -> int:
        raise NotImplementedError

    def latest(
        self, asset: str, timeframe: str, limit: int, *, closed_by_ms: int | None = None
    ) -> Candles:
        self.calls.append((asset, timeframe, limit))
        if self.error is not None:
            raise self.error
        candles = self.candles
        if closed_by_ms is not None:  # as the table's key condition does
            candles = candles.head(
                int(np.searchsorted(candles.time, closed_by_ms - HOUR_MS, "right"))
            )
        return candles.tail(limit)


def hourly(count: int) -> Candles:
    return Candles.from_rows((T0 + i * HOUR_MS, 1.0, 2.0, 0.5, 1.5, 1.0) for i in range(count))


def test_repository_asks_for_the_bars_closed_by_now() -> None:
    repo = FakeCandleRepository(hourly(500))
    candles = RepositoryProvider(repo).fetch("BTC/USDT", "1h", 200, T0 + 300 * HOUR_MS + 5)
    assert repo.calls == [("BTC/USDT", "1h", 200)]
    assert len(candles) == 200 and int(candles.time[-1]) == T0 + 299 * HOUR_MS


def test_repository_answers_only_bars_closed_by_now() -> None:
    repo = FakeCandleRepository(hourly(10))
    # 05:30: the 05:00 bar is forming, 06:00 onwards lie in the future
    candles = RepositoryProvider(repo).fetch("BTC/USDT", "1h", 20, T0 + 5 * HOUR_MS + 1_800_000)
    assert int(candles.time[-1]) == T0 + 4 * HOUR_MS
    assert len(candles) == 5


@pytest.mark.parametrize(
    "error",
    [StorageUnavailable("DynamoDB throttled the candle query"), RuntimeError("socket closed")],
)
def test_repository_failure_is_unavailable(error: Exception) -> None:
    provider = RepositoryProvider(FakeCandleRepository(error=error))
    with pytest.raises(MarketDataUnavailable) as info:
        provider.fetch("BTC/USDT", "1h", 10, T0)
    assert "BTC/USDT 1h" in info.value.message and type(error).__name__ in info.value.message
    assert info.value.__cause__ is error


def test_repository_passes_market_data_errors_through() -> None:
    error = MarketDataUnavailable("no candles for BTC/USDT 1h")
    provider = RepositoryProvider(FakeCandleRepository(error=error))
    with pytest.raises(MarketDataUnavailable) as info:
        provider.fetch("BTC/USDT", "1h", 10, T0)
    assert info.value is error


# --- provider_from_config ----------------------------------------------------------------


def test_default_is_the_dynamodb_candle_table() -> None:
    repo = FakeCandleRepository()
    provider = provider_from_config({}, candle_repository=repo)
    assert isinstance(provider, RepositoryProvider) and provider.candle_repository is repo
    explicit = provider_from_config({"MARKET_DATA_PROVIDER": "DynamoDB"}, candle_repository=repo)
    assert isinstance(explicit, RepositoryProvider)


def test_dynamodb_needs_a_repository() -> None:
    with pytest.raises(ValueError, match="candle repository"):
        provider_from_config({"MARKET_DATA_PROVIDER": "dynamodb"})


def test_ccxt_from_config() -> None:
    provider = provider_from_config(
        {
            "MARKET_DATA_PROVIDER": "ccxt",
            "CCXT_EXCHANGE": "bybit",
            "CCXT_SYMBOL_MAP": json.dumps({"BTC/USDT": "BTC/USDT:USDT"}),
        }
    )
    assert isinstance(provider, CcxtProvider)
    assert provider.exchange_id == "bybit"
    assert provider.symbol("BTC/USDT") == "BTC/USDT:USDT"
    assert provider.symbol("ETH/USDT") == "ETH/USDT"


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"MARKET_DATA_PROVIDER": "ccxt"}, "CCXT_EXCHANGE"),
        ({"MARKET_DATA_PROVIDER": "ccxt", "CCXT_EXCHANGE": "x", "CCXT_SYMBOL_MAP": "{"}, "JSON"),
        (
            {"MARKET_DATA_PROVIDER": "ccxt", "CCXT_EXCHANGE": "x", "CCXT_SYMBOL_MAP": "[1]"},
            "JSON object",
        ),
        ({"MARKET_DATA_PROVIDER": "file"}, "MARKET_DATA_DIR"),
        ({"MARKET_DATA_PROVIDER": "s3"}, "dynamodb, ccxt, file"),
    ],
)
def test_bad_configuration_names_the_problem(env: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        provider_from_config(env, candle_repository=FakeCandleRepository())


def test_file_from_config(tmp_path: Path) -> None:
    write_csv(tmp_path / "BTC_USDT_1h.csv", 5)
    provider = provider_from_config(
        {"MARKET_DATA_PROVIDER": "file", "MARKET_DATA_DIR": str(tmp_path)}
    )
    assert isinstance(provider, FileProvider)
    assert len(provider.fetch("BTC/USDT", "1h", 2, T0 + 10 * HOUR_MS)) == 2


# --- import cost -------------------------------------------------------------------------


def test_importing_and_configuring_does_not_import_ccxt_or_pyarrow(tmp_path: Path) -> None:
    write_csv(tmp_path / "BTC_USDT_1h.csv", 5)
    code = f"""
import sys
import engine.adapters.marketdata as md
md.provider_from_config({{"MARKET_DATA_PROVIDER": "ccxt", "CCXT_EXCHANGE": "binance"}})
provider = md.provider_from_config({{"MARKET_DATA_PROVIDER": "file", "MARKET_DATA_DIR": {str(tmp_path)!r}}})
provider.fetch("BTC/USDT", "1h", 2, {T0 + 10 * HOUR_MS})
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("ccxt", "pyarrow"))
print(",".join(heavy))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("minute", [0, 1, 59])
def test_every_provider_answers_closed_bars_only_and_enough_of_them(
    tmp_path: Path, minute: int
) -> None:
    """The contract of MarketDataProvider, for each provider built from configuration:
    the newest `bars` closed by now, no forming bar, nothing from the future."""
    write_csv(tmp_path / "BTC_USDT_1h.csv", 48)
    repository = FakeCandleRepository(hourly(48))
    now = T0 + 30 * HOUR_MS + minute * 60_000
    providers = {
        "file": provider_from_config(
            {"MARKET_DATA_PROVIDER": "file", "MARKET_DATA_DIR": str(tmp_path)}
        ),
        "dynamodb": provider_from_config({}, candle_repository=repository),
    }
    for name, provider in providers.items():
        candles = provider.fetch("BTC/USDT", "1h", 12, now)
        assert candles.closed_count("1h", now) == len(candles) >= 12, name
        assert int(candles.time[-1]) == T0 + 29 * HOUR_MS, name  # closed at 30:00
