"""Reading and writing candles files: both time formats, ordering, duplicates, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine.adapters.candle_files import (
    CandlesFileError,
    format_time,
    read_candles_file,
    read_csv,
    read_parquet,
    write_csv,
)
from engine.core.candles import CANDLE_FIELDS, Candles

H = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def write(tmp_path: Path, text: str, name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_same(a: Candles, b: Candles) -> None:
    assert a.time.dtype == np.int64
    np.testing.assert_array_equal(a.time, b.time)
    for name in CANDLE_FIELDS:
        assert a.field(name).dtype == np.float64
        np.testing.assert_array_equal(a.field(name), b.field(name))


# --- times --------------------------------------------------------------------------------


def test_iso_times_with_z_offset_and_naive_are_utc(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "time,open,high,low,close,volume\n"
        "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2024-01-01T02:00:00+01:00,1.5,2.5,1,2,11\n"  # = 01:00 UTC
        "2024-01-01 02:00:00,2,3,1.5,2.5,12\n"  # naive = UTC
        "2024-01-01T03:00:00.000+00:00,2.5,3,2,2.75,13\n",
    )
    c = read_csv(path)
    assert c.time.tolist() == [T0, T0 + H, T0 + 2 * H, T0 + 3 * H]
    assert c.open.tolist() == [1, 1.5, 2, 2.5]
    assert c.high.tolist() == [2, 2.5, 3, 3]
    assert c.low.tolist() == [0.5, 1, 1.5, 2]
    assert c.close.tolist() == [1.5, 2, 2.5, 2.75]
    assert c.volume.tolist() == [10, 11, 12, 13]


def test_epoch_millisecond_times(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"time,open,high,low,close,volume\n{T0},1,2,0.5,1.5,10\n{T0 + H},1.5,2.5,1,2,11\n",
    )
    c = read_csv(path)
    assert c.time.tolist() == [T0, T0 + H]
    assert c.close.tolist() == [1.5, 2.0]


def test_mixed_time_formats_in_one_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"time,open,high,low,close,volume\n{T0},1,2,0.5,1.5,10\n2024-01-01T01:00:00Z,1,2,0.5,1.5,10\n",
    )
    assert read_csv(path).time.tolist() == [T0, T0 + H]


def test_columns_by_name_any_order_extra_columns_ignored_case_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(
        f"\ufeffVolume, Close ,symbol,Time,Low,High,Open\n10,1.5,BTC,{T0},0.5,2,1\n".encode()
    )
    c = read_csv(path)
    assert c.time.tolist() == [T0]
    assert (c.open[0], c.high[0], c.low[0], c.close[0], c.volume[0]) == (1, 2, 0.5, 1.5, 10)


def test_unsorted_rows_are_sorted_and_an_identical_repeat_is_kept_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "time,open,high,low,close,volume\n"
        f"{T0 + 2 * H},3,3,3,3,3\n"
        f"{T0},1,1,1,1,1\n"
        f"{T0 + H},2,2,2,2,2\n"
        f"{T0},1,1,1,1,1\n"  # the same bar again, the same values
        "\n",  # a blank line is ignored
    )
    c = read_csv(path)
    assert c.time.tolist() == [T0, T0 + H, T0 + 2 * H]
    assert c.close.tolist() == [1, 2, 3]


def test_a_repeated_time_with_other_values_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"time,open,high,low,close,volume\n{T0},1,1,1,1,1\n{T0 + H},2,2,2,2,2\n{T0},9,9,9,9,9\n",
    )
    err = error_of(path)
    assert err.line == 4
    assert err.problem == (
        "time 2024-01-01T00:00:00Z appears twice with different values (also line 2)"
    )


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("10,12,9,11,1", None),  # a sound bar, for contrast
        ("8,12,9,11,1", "open 8.0 is outside the bar's range [low 9.0, high 12.0]"),
        ("10,12,9,13,1", "close 13.0 is outside the bar's range [low 9.0, high 12.0]"),
        ("-1,12,9,11,1", "open must be a finite price above 0, not -1.0"),
        ("10,12,9,0,1", "close must be a finite price above 0, not 0.0"),
        ("10,12,9,11,-2", "volume must be finite and not negative, not -2.0"),
    ],
)
def test_design_candle_rules_are_checked_naming_the_line(
    tmp_path: Path, row: str, problem: str | None
) -> None:
    path = write(tmp_path, f"time,open,high,low,close,volume\n{T0},10,11,9,10,1\n{T0 + H},{row}\n")
    if problem is None:
        assert len(read_csv(path)) == 2
        return
    err = error_of(path)
    assert (err.line, err.problem) == (3, problem)


def test_times_off_the_timeframe_grid_are_refused_when_the_timeframe_is_known(
    tmp_path: Path,
) -> None:
    rows = "".join(f"{T0 + i * H},1,1,1,1,1\n" for i in range(6))
    path = write(tmp_path, "time,open,high,low,close,volume\n" + rows)
    assert len(read_csv(path, "1h")) == 6
    with pytest.raises(CandlesFileError) as info:
        read_csv(path, "4h")  # an hourly file imported as 4h bars
    assert info.value.line == 3
    assert info.value.problem == (
        "time 2024-01-01T01:00:00Z is not the open of a 4h bar (is the file of another timeframe?)"
    )


# --- errors -------------------------------------------------------------------------------


def error_of(path: Path) -> CandlesFileError:
    with pytest.raises(CandlesFileError) as info:
        read_csv(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)
    return info.value


def test_missing_column_names_it_and_the_header(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, f"time,open,high,low,close\n{T0},1,1,1,1\n"))
    assert err.line == 1
    assert "missing column volume" in str(err)


def test_no_header_row_is_reported_as_missing_columns(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, f"{T0},1,2,0.5,1.5,10\n"))
    assert "missing columns time, open, high, low, close, volume" in str(err)
    assert "header" in str(err)


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    assert "empty file" in str(error_of(write(tmp_path, "", "a.csv")))
    assert "no candle rows" in str(
        error_of(write(tmp_path, "time,open,high,low,close,volume\n", "b.csv"))
    )


def test_unparsable_time_names_the_line_and_value(tmp_path: Path) -> None:
    err = error_of(
        write(
            tmp_path,
            "time,open,high,low,close,volume\n"
            "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
            "yesterday,1,2,0.5,1.5,10\n",
        )
    )
    assert err.line == 3
    assert ": line 3: unparsable time 'yesterday'" in str(err)


def test_epoch_seconds_are_refused_with_a_hint(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "time,open,high,low,close,volume\n1704067200,1,2,0.5,1.5,10\n"))
    assert "epoch seconds" in str(err)
    assert "milliseconds" in str(err)


def test_non_numeric_and_empty_prices(tmp_path: Path) -> None:
    err = error_of(
        write(
            tmp_path,
            f"time,open,high,low,close,volume\n{T0},1,2,0.5,1.5,10\n{T0 + H},1,2,0.5,abc,10\n",
            "a.csv",
        )
    )
    assert err.line == 3
    assert "close is not a number: 'abc'" in str(err)
    err = error_of(
        write(tmp_path, f"time,open,high,low,close,volume\n{T0},,2,0.5,1.5,10\n", "b.csv")
    )
    assert err.line == 2
    assert "open is empty" in str(err)
    err = error_of(
        write(tmp_path, f"time,open,high,low,close,volume\n{T0},1,inf,0.5,1.5,10\n", "c.csv")
    )
    assert "high is not a finite number" in str(err)


def test_high_below_low(tmp_path: Path) -> None:
    err = error_of(
        write(
            tmp_path,
            f"time,open,high,low,close,volume\n{T0},1,2,0.5,1.5,10\n{T0 + H},1,0.5,2,1.5,10\n",
        )
    )
    assert err.line == 3
    assert "high 0.5 is below low 2.0" in str(err)


def test_short_row(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, f"time,open,high,low,close,volume\n{T0},1,2,0.5\n"))
    assert err.line == 2
    assert "expected at least 6 fields" in str(err)


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    err = error_of(
        write(
            tmp_path,
            f"time,open,high,low,close,volume\n\n{T0},1,2,0.5,1.5,10\n\n{T0},1,2,0.5,x,1\n",
        )
    )
    assert err.line == 5


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CandlesFileError, match="cannot open"):
        read_csv(tmp_path / "nope.csv")


# --- writing, parquet, dispatch ---------------------------------------------------------


def sample(n: int, seed: int = 0) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    return Candles(
        time=T0 + np.arange(n, dtype=np.int64) * H,
        open=open_,
        high=np.maximum(open_, close) * 1.001,
        low=np.minimum(open_, close) * 0.999,
        close=close,
        volume=rng.uniform(0, 50, n),
    )


@pytest.mark.parametrize("time_format", ["iso", "ms"])
def test_write_then_read_is_exact(tmp_path: Path, time_format: str) -> None:
    c = sample(50)
    path = tmp_path / "c.csv"
    write_csv(path, c, time_format=time_format)  # type: ignore[arg-type]
    assert path.read_text().splitlines()[0] == "time,open,high,low,close,volume"
    assert_same(read_csv(path), c)


def test_format_time() -> None:
    assert format_time(T0) == "2024-01-01T00:00:00Z"
    assert format_time(T0 + 1234) == "2024-01-01T00:00:01.234Z"


def test_parquet_with_timestamp_and_integer_times(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    c = sample(20)
    prices = {name: c.field(name) for name in CANDLE_FIELDS}
    for name, time_column in {
        "ts_utc.parquet": pa.array(c.time, type=pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "ts_naive.parquet": pa.array(c.time * 1000, type=pa.int64()).cast(pa.timestamp("us")),
        "ms.parquet": pa.array(c.time, type=pa.int64()),
    }.items():
        pq.write_table(pa.table({"time": time_column, **prices}), tmp_path / name)
        assert_same(read_parquet(tmp_path / name), c)
        assert_same(read_candles_file(tmp_path / name), c)


def test_parquet_missing_column_and_null(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"time": [T0], "open": [1.0]}), tmp_path / "a.parquet")
    with pytest.raises(CandlesFileError, match="missing columns high, low, close, volume"):
        read_parquet(tmp_path / "a.parquet")
    table = pa.table(
        {
            "time": [T0, T0 + H],
            "open": [1.0, 1.0],
            "high": [2.0, None],
            "low": [0.5, 0.5],
            "close": [1.5, 1.5],
            "volume": [1.0, 1.0],
        }
    )
    pq.write_table(table, tmp_path / "b.parquet")
    with pytest.raises(CandlesFileError, match="row 2: high is empty"):
        read_parquet(tmp_path / "b.parquet")


def test_dispatch_on_suffix(tmp_path: Path) -> None:
    c = sample(5)
    write_csv(tmp_path / "c.CSV", c)
    assert_same(read_candles_file(tmp_path / "c.CSV"), c)
    with pytest.raises(CandlesFileError, match=r"unsupported candles file type '\.txt'"):
        read_candles_file(tmp_path / "c.txt")


def test_100k_rows_round_trip_in_both_time_formats(tmp_path: Path) -> None:
    c = sample(100_000, seed=3)
    iso, ms = tmp_path / "iso.csv", tmp_path / "ms.csv"
    write_csv(iso, c)
    write_csv(ms, c, time_format="ms")
    for path in (iso, ms):
        assert_same(read_csv(path), c)
