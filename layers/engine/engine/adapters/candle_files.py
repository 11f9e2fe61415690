"""Candles files (CSV, Parquet) read into and written from `engine.core.candles.Candles`.

Columns, by name in a header row: time, open, high, low, close, volume (other columns are
ignored). `time` is the bar's open time, UTC: ISO 8601 with or without an offset (a naive
time is UTC) or integer epoch milliseconds. Rows may come in any order (they are sorted);
a time may repeat only with identical values (kept once). Rows are checked by DESIGN §8's
rules (`engine.core.candles.check_candles`), times against the timeframe when the caller
knows it. Every problem is a `CandlesFileError`, a ValueError naming the file, the line
(or Parquet row) and what is wrong: bad candles are refused, never silently used.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from engine.core.candles import (
    CANDLE_FIELDS,
    CandleProblem,
    Candles,
    FloatArray,
    IntArray,
    check_candles,
)

ByteArray = npt.NDArray[np.uint8]
COLUMNS: tuple[str, ...] = ("time", *CANDLE_FIELDS)
PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Integer times all below this (1973-03-03 in ms) are almost surely epoch *seconds*.
_SECONDS_SUSPECT_MS = 100_000_000_000


# k-th data row (0-based) -> the line (CSV) or row (Parquet) number to name in a message
LineOf = Callable[[int], int]


def _row_of(k: int) -> int:
    return k + 1


class CandlesFileError(ValueError):
    """A candles file that cannot be read; names the file, the line and the problem."""

    def __init__(
        self, path: str | Path, problem: str, *, line: int | None = None, unit: str = "line"
    ):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}: {unit} {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


# --- reading --------------------------------------------------------------------------------


def read_candles_file(path: str | Path, timeframe: str | None = None) -> Candles:
    """Read a .csv or .parquet candles file, chosen by its suffix; with `timeframe`, every
    time must open a bar of it."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return read_csv(path, timeframe)
    if suffix in (".parquet", ".pq"):
        return read_parquet(path, timeframe)
    raise CandlesFileError(
        path, f"unsupported candles file type {suffix or '(none)'!r}: expected .csv or .parquet"
    )


def read_csv(path: str | Path, timeframe: str | None = None) -> Candles:
    """Read a CSV candles file with a header row (see the module docstring)."""
    line_of = _CsvLines(path)
    plain = _PlainCsv.of(path)
    if plain is not None:
        parsed = plain.parse()
        if parsed is not None:
            times, values, integer = parsed
            if integer:
                _check_not_seconds(path, times)
            for name, array in values.items():
                _check_finite(path, name, array, line_of)
            return _assemble(path, times, values, line_of, timeframe=timeframe)
    columns = plain.columns() if plain is not None else _csv_columns(path)
    return _from_strings(path, columns, line_of, timeframe)


def _from_strings(
    path: str | Path, columns: list[list[str]], line_of: LineOf, timeframe: str | None
) -> Candles:
    """Candles from the time, open, high, low, close and volume fields as strings: the
    reading that names any bad field by its line."""
    times = _parse_times(path, columns[0], line_of)
    values = {
        name: _parse_numbers(path, name, column, line_of)
        for name, column in zip(CANDLE_FIELDS, columns[1:], strict=True)
    }
    return _assemble(path, times, values, line_of, timeframe=timeframe)


_ISO_SECONDS = len("2024-01-31T13:00:00")  # the ISO times the fast parse takes, before the Z
_YEAR_ONE_MS = -62_135_596_800_000  # datetime's first moment; numpy would also take year 0
# Integer times the fast parse takes: up to 15 digits (year 33658 in ms) are exact as floats
_MAX_DIGITS = 15


@dataclass(frozen=True)
class _PlainCsv:
    """A plain CSV file: no quotes, carriage returns or NULs, no blank lines, every line as many
    fields as the header, and a time, open, high, low, close and volume column. Such a file
    is parsed by numpy's C parsers (`parse`) or split at once (`columns`): the same values,
    and the same errors, as the csv module's reading, several times faster on long files."""

    data: bytes  # the rows: no header, no final newline
    names: dict[str, int]  # column name (stripped, lower case) -> index
    width: int  # fields per line
    ends: IntArray  # byte offset of each line's end
    commas: IntArray  # byte offsets of the commas, `width - 1` per line

    @classmethod
    def of(cls, path: str | Path) -> _PlainCsv | None:
        """The file's layout, or None for any other file (the csv module then reads it)."""
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        if b'"' in data or b"\r" in data or b"\x00" in data:
            return None
        if data.endswith(b"\n"):
            data = data[:-1]
        first = data.find(b"\n")
        if first < 0:
            return None
        rows = data[first + 1 :]
        try:
            header = data[:first].decode("utf-8").split(",")
            rows.decode("utf-8")  # only checked: numpy reads the bytes
        except UnicodeDecodeError:
            return None
        names: dict[str, int] = {}
        for index, name in enumerate(header):
            names.setdefault(name.strip().lower(), index)
        if not rows or any(c not in names for c in COLUMNS):
            return None
        # every line exactly len(header) - 1 commas: count them between consecutive newlines
        raw = np.frombuffer(rows, dtype=np.uint8)
        ends = np.r_[np.flatnonzero(raw == 10), len(raw)]
        commas = np.flatnonzero(raw == 44)
        per_line = np.diff(np.r_[0, np.searchsorted(commas, ends)])
        if (per_line != len(header) - 1).any():
            return None
        return cls(rows, names, len(header), ends, commas)

    def columns(self) -> list[list[str]]:
        """The time, open, high, low, close and volume fields, as the csv module reads them."""
        fields = self.data.decode("utf-8").replace("\n", ",").split(",")
        return [fields[self.names[name] :: self.width] for name in COLUMNS]

    def parse(self) -> tuple[IntArray, dict[str, FloatArray], bool] | None:
        """Times, numbers and whether the times were integers, by numpy's parsers, in one
        pass over the rows; None where they refuse a field or the times are in another form
        (the string path then reads or names it)."""
        raw = np.frombuffer(self.data, dtype=np.uint8)
        starts, stops = self._time_spans()
        times = self._iso_times(raw, starts, stops)
        integer = times is None
        if integer and not self._digit_times(raw, starts, stops):
            return None
        usecols = [self.names[name] for name in CANDLE_FIELDS]
        if integer:
            usecols.append(self.names["time"])
        try:
            numbers = np.loadtxt(
                io.BytesIO(self.data),
                delimiter=",",
                comments=None,
                dtype=np.float64,
                usecols=usecols,
                ndmin=2,
            )
        except ValueError:
            return None
        if times is None:  # exact as a float: at most _MAX_DIGITS digits, below 2**53
            times = numbers[:, len(CANDLE_FIELDS)].astype(np.int64)
        columns = {name: numbers[:, k].copy() for k, name in enumerate(CANDLE_FIELDS)}
        return times, columns, integer

    def _time_spans(self) -> tuple[IntArray, IntArray]:
        """Byte offsets of each row's time field: where it starts, where it stops."""
        column = self.names["time"]
        commas = self.commas.reshape(len(self.ends), self.width - 1)
        starts = np.r_[0, self.ends[:-1] + 1] if column == 0 else commas[:, column - 1] + 1
        stops = self.ends if column == self.width - 1 else commas[:, column]
        return starts, stops

    @staticmethod
    def _iso_times(raw: ByteArray, starts: IntArray, stops: IntArray) -> IntArray | None:
        """Every time (bytes `starts`..`stops` of `raw`) written `YYYY-MM-DDTHH:MM:SSZ` (what
        write_csv writes), as epoch milliseconds; None when one is not, or names no moment."""
        if not (stops - starts == _ISO_SECONDS + 1).all():
            return None
        if not ((raw[starts + 10] == ord("T")) & (raw[stops - 1] == ord("Z"))).all():
            return None
        text = raw[starts[:, None] + np.arange(_ISO_SECONDS)].view(f"S{_ISO_SECONDS}")
        try:  # numpy's parse is strict: day, hour, minute and second in range
            times = text.ravel().astype("datetime64[ms]").astype(np.int64)
        except ValueError:
            return None
        return times if (times >= _YEAR_ONE_MS).all() else None

    @staticmethod
    def _digit_times(raw: ByteArray, starts: IntArray, stops: IntArray) -> bool:
        """Every time is 1 to _MAX_DIGITS digits and nothing else: epoch milliseconds."""
        lengths = stops - starts
        if lengths.min() < 1 or lengths.max() > _MAX_DIGITS:
            return False
        edges = np.zeros(len(raw) + 1, dtype=np.int64)  # +1 where a time starts, -1 after it
        np.add.at(edges, starts, 1)
        np.add.at(edges, stops, -1)
        in_time = np.cumsum(edges[:-1]) > 0
        return bool(((raw[in_time] >= ord("0")) & (raw[in_time] <= ord("9"))).all())


def _csv_columns(path: str | Path) -> list[list[str]]:
    """The time, open, high, low, close and volume fields of each row, by the csv module."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CandlesFileError(path, f"cannot open: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        header = _header(path, reader)
        try:
            rows = [row for row in reader if _filled(row)]
        except csv.Error as exc:
            raise CandlesFileError(path, f"malformed CSV: {exc}", line=reader.line_num) from None
        except UnicodeDecodeError as exc:
            raise CandlesFileError(path, f"not UTF-8 text: {exc.reason}") from None
    if not rows:
        raise CandlesFileError(path, "no candle rows after the header")
    line_of = _CsvLines(path)

    positions = [header[name] for name in COLUMNS]
    width = max(positions) + 1
    if min(map(len, rows)) < width:
        k = next(k for k, row in enumerate(rows) if len(row) < width)
        raise CandlesFileError(
            path,
            f"expected at least {width} fields (up to column "
            f"{_column_name(header, width - 1)!r}), found {len(rows[k])}",
            line=line_of(k),
        )
    return [[row[position] for row in rows] for position in positions]


def _filled(row: list[str]) -> bool:
    """False for a blank line."""
    return bool(row) and (len(row) > 1 or bool(row[0].strip()))


class _CsvLines:
    """Line number of the k-th candle row, found by reading the file again (errors only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self._lines: list[int] | None = None

    def __call__(self, k: int) -> int:
        if self._lines is None:
            with open(self.path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                next(reader, None)
                self._lines = [reader.line_num for row in reader if _filled(row)]
        return self._lines[k]


def read_parquet(path: str | Path, timeframe: str | None = None) -> Candles:
    """Read a Parquet candles file: `time` a timestamp column (naive = UTC) or int64 ms."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the environment
        raise CandlesFileError(
            path, "reading Parquet needs pyarrow: pip install 'execution-engine[parquet]'"
        ) from None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CandlesFileError(path, f"cannot read Parquet: {exc}") from None

    by_name = {name.strip().lower(): name for name in table.column_names}
    missing = [c for c in COLUMNS if c not in by_name]
    if missing:
        raise CandlesFileError(
            path,
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(found: {', '.join(table.column_names) or 'none'})",
        )
    if table.num_rows == 0:
        raise CandlesFileError(path, "no candle rows")

    time_col = table.column(by_name["time"]).combine_chunks()
    _no_nulls(path, "time", time_col)
    kind = time_col.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        # A timestamp with a zone is an instant; a naive one is read as UTC (same numbers).
        as_ms = pc.cast(time_col, pa.timestamp("ms", tz=getattr(kind, "tz", None)), safe=False)
        times = np.asarray(as_ms.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    elif pa.types.is_integer(kind):
        times = np.asarray(time_col.to_numpy(zero_copy_only=False), dtype=np.int64)
        _check_not_seconds(path, times)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        times = _parse_times(path, time_col.to_pylist(), _row_of, unit="row")
    else:
        raise CandlesFileError(
            path,
            f"column 'time' has type {kind}: expected a timestamp, integer epoch "
            "milliseconds or ISO 8601 strings",
        )

    values: dict[str, FloatArray] = {}
    for name in CANDLE_FIELDS:
        column = table.column(by_name[name]).combine_chunks()
        _no_nulls(path, name, column)
        try:
            as_float = pc.cast(column, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise CandlesFileError(
                path, f"column {name!r} has type {column.type}: expected numbers"
            ) from None
        array = np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)
        _check_finite(path, name, array, _row_of, unit="row")
        values[name] = array
    return _assemble(path, times, values, _row_of, unit="row", timeframe=timeframe)


def _no_nulls(path: str | Path, name: str, column: Any) -> None:
    if column.null_count:
        first = next(i for i, valid in enumerate(column.is_valid().to_pylist()) if not valid)
        raise CandlesFileError(path, f"{name} is empty (null)", line=first + 1, unit="row")


def _header(path: str | Path, reader: Any) -> dict[str, int]:
    try:
        row: list[str] | None = next(reader, None)
    except csv.Error as exc:
        raise CandlesFileError(path, f"malformed CSV: {exc}", line=1) from None
    except UnicodeDecodeError as exc:
        raise CandlesFileError(path, f"not UTF-8 text: {exc.reason}") from None
    if row is None:
        raise CandlesFileError(
            path, f"empty file: expected a header row {','.join(COLUMNS)} and candle rows"
        )
    header: dict[str, int] = {}
    for index, name in enumerate(row):
        header.setdefault(name.strip().lower(), index)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        found = ", ".join(repr(name) for name in row) or "nothing"
        raise CandlesFileError(
            path,
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} in the "
            f"header row (found {found}); the first row must name the columns: "
            f"{','.join(COLUMNS)}",
            line=1,
        )
    return header


def _column_name(header: dict[str, int], position: int) -> str:
    return next((name for name, index in header.items() if index == position), str(position))


def _parse_times(
    path: str | Path, texts: Sequence[str], line_of: LineOf, *, unit: str = "line"
) -> IntArray:
    try:  # every time integer epoch milliseconds
        times = np.asarray(texts, dtype=np.int64)
    except (ValueError, OverflowError, TypeError):
        pass
    else:
        _check_not_seconds(path, times)
        return times
    parse = datetime.fromisoformat
    try:  # every time ISO 8601
        moments = [parse(text) for text in texts]
    except (ValueError, TypeError):
        # mixed formats, surrounding spaces or a bad value: one by one, naming the bad one
        return np.fromiter(
            (_parse_time(path, text, line_of, k, unit) for k, text in enumerate(texts)),
            dtype=np.int64,
            count=len(texts),
        )
    return np.fromiter(
        (((m if m.tzinfo is not None else m.replace(tzinfo=UTC)) - _EPOCH) // _MS for m in moments),
        dtype=np.int64,
        count=len(moments),
    )


def _parse_time(path: str | Path, text: str, line_of: LineOf, k: int, unit: str) -> int:
    value = text.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CandlesFileError(
            path,
            f"unparsable time {text!r}: expected ISO 8601 (e.g. 2024-01-31T13:00:00Z) "
            "or integer epoch milliseconds",
            line=line_of(k),
            unit=unit,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


def _check_not_seconds(path: str | Path, times: IntArray) -> None:
    if len(times) and int(np.abs(times).max()) < _SECONDS_SUSPECT_MS:
        raise CandlesFileError(
            path,
            f"integer times look like epoch seconds (largest {int(np.abs(times).max())}, "
            "before 1973 if read as milliseconds): time must be epoch milliseconds "
            "(multiply by 1000) or ISO 8601",
        )


def _parse_numbers(
    path: str | Path, name: str, texts: Sequence[str], line_of: LineOf
) -> FloatArray:
    try:
        array = np.asarray(texts, dtype=np.float64)
    except ValueError:
        for i, text in enumerate(texts):
            try:
                float(text)
            except ValueError:
                what = "empty" if not text.strip() else f"not a number: {text!r}"
                raise CandlesFileError(path, f"{name} is {what}", line=line_of(i)) from None
        raise  # pragma: no cover - numpy and float() disagree; let the original error show
    _check_finite(path, name, array, line_of)
    return array


def _check_finite(
    path: str | Path, name: str, array: FloatArray, line_of: LineOf, *, unit: str = "line"
) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        i = int(np.argmax(bad))
        raise CandlesFileError(
            path, f"{name} is not a finite number: {float(array[i])!r}", line=line_of(i), unit=unit
        )


def _assemble(
    path: str | Path,
    times: IntArray,
    values: dict[str, FloatArray],
    line_of: LineOf,
    *,
    unit: str = "line",
    timeframe: str | None = None,
) -> Candles:
    """Check the rows (DESIGN §8), sort them by time and keep one row per time."""
    try:
        keep = check_candles(times, *(values[name] for name in CANDLE_FIELDS), timeframe=timeframe)
    except CandleProblem as problem:
        message = problem.message
        if problem.other is not None:
            message += f" (also {unit} {line_of(problem.other)})"
        raise CandlesFileError(path, message, line=line_of(problem.index), unit=unit) from None
    return Candles(
        time=np.ascontiguousarray(times[keep]),
        **{name: np.ascontiguousarray(values[name][keep]) for name in CANDLE_FIELDS},
    )


# --- writing --------------------------------------------------------------------------------


def write_csv(
    path: str | Path, candles: Candles, *, time_format: Literal["iso", "ms"] = "iso"
) -> None:
    """Write candles with a header row; times as ISO 8601 UTC (`...Z`) or epoch milliseconds.

    Floats are written in their shortest round-trip form, so reading the file back gives
    exactly the same candles.
    """
    times = [int(t) for t in candles.time]
    columns = [candles.field(name).tolist() for name in CANDLE_FIELDS]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for i, t in enumerate(times):
            stamp: str | int = format_time(t) if time_format == "iso" else t
            writer.writerow([stamp, *(_number(column[i]) for column in columns)])


def format_time(time_ms: int) -> str:
    """ISO 8601 UTC with a `Z`, milliseconds only when the time has them."""
    moment = _EPOCH + timedelta(milliseconds=time_ms)
    if time_ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(value)
