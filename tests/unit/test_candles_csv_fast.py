"""The CSV fast path (`_PlainCsv`) splits exactly the fields the csv module does, or
declines (None) and leaves the file to it: random files with reordered and extra columns,
a BOM, CRLF line ends, quoted fields, blank lines, ragged rows, spaces and a missing final
newline. Its numpy parse reads the same candles as the strings, or raises the same error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine.adapters.candle_files import (
    CandlesFileError,
    _csv_columns,
    _CsvLines,
    _from_strings,
    _PlainCsv,
    format_time,
    read_csv,
    write_csv,
)
from engine.core.candles import CANDLE_FIELDS, Candles
from hypothesis import given, settings
from hypothesis import strategies as st

NAMES = ["time", "open", "high", "low", "close", "volume"]


@st.composite
def csv_texts(draw: st.DrawFn) -> tuple[str, bool]:
    """(text, plain): plain files must take the fast path."""
    columns = NAMES + draw(st.lists(st.sampled_from(["note", "x"]), max_size=2))
    columns = draw(st.permutations(columns))
    header = [draw(st.sampled_from([c, c.upper(), f" {c}"])) for c in columns]
    rows = []
    for k in range(draw(st.integers(1, 12))):
        values = {
            "time": str(1_700_000_000_000 + k * 3_600_000),
            "open": "10",
            "high": "12.5",
            "low": "9",
            "close": draw(st.sampled_from(["11", "11.25", " 11"])),
            "volume": "3",
            "note": draw(st.sampled_from(["a", "", "b c"])),
            "x": "1",
        }
        rows.append([values[c] for c in columns])
    quirks = draw(st.sets(st.sampled_from(["bom", "crlf", "quote", "blank", "ragged", "no_end"])))
    if "quote" in quirks:
        rows[0][0] = f'"{rows[0][0]}"'
    if "ragged" in quirks:
        rows[-1].append("extra")
    lines = [",".join(header)] + [",".join(r) for r in rows]
    if "blank" in quirks:
        lines.insert(draw(st.integers(1, len(lines))), "")
    end = "\r\n" if "crlf" in quirks else "\n"
    text = end.join(lines) + ("" if "no_end" in quirks else end)
    if "bom" in quirks:
        text = "\ufeff" + text
    return text, not quirks & {"crlf", "quote", "blank", "ragged"}


@settings(max_examples=150, deadline=None)
@given(case=csv_texts())
def test_fast_split_is_the_csv_modules_or_declines(
    case: tuple[str, bool], tmp_path_factory: pytest.TempPathFactory
) -> None:
    text, plain = case
    path = tmp_path_factory.mktemp("csv") / "c.csv"
    path.write_text(text, encoding="utf-8")
    fast = _PlainCsv.of(path)
    if plain:
        assert fast is not None
    if fast is not None:
        assert fast.columns() == _csv_columns(path)


def test_a_bad_value_is_named_by_its_line_either_way(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        "1700000000000,1,2,0.5,1.5,3\n"
        "1700003600000,1,2,0.5,oops,3\n",
        encoding="utf-8",
    )
    assert _PlainCsv.of(path) is not None
    with pytest.raises(CandlesFileError, match=r"c\.csv: line 3: close is not a number: 'oops'"):
        read_csv(path)


def _read_by_strings(path: Path) -> Candles:
    """read_csv as it reads a file numpy's parsers decline: fields split into strings."""
    plain = _PlainCsv.of(path)
    assert plain is not None
    return _from_strings(path, plain.columns(), _CsvLines(path), "1h")


ODD_NUMBERS = ["11", " 11", "1e3", "1E-2", "+5", "-0", "1_0", "0x1p3", "nan", "inf", "", "oops"]
ODD_TIMES = [
    "2020-02-30T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "2020-01-01T24:00:00Z",
    "2020-01-01 00:00:00Z",
    "2020-01-01T00:00:00+00:00",
    "2020-01-01T00:00:00.000Z",
    "1577836800000 ",
    "+1577836800000",
    "1577836800",
    "-5",
]


@st.composite
def parsed_texts(draw: st.DrawFn) -> str:
    """Plain files of hourly candles with ISO or integer times, now and then an odd field."""
    iso = draw(st.booleans())
    start = draw(st.sampled_from([1_577_836_800_000, 0]))  # 1970: ISO, or integers refused
    rows = []
    for k in range(draw(st.integers(1, 8))):
        t = start + k * 3_600_000
        time = format_time(t) if iso else str(t)
        price = draw(st.floats(1, 1e6, allow_nan=False))
        fields = [time, repr(price), repr(price * 1.01), repr(price * 0.99), repr(price), "3"]
        if draw(st.integers(0, 4)) == 0:
            fields[0] = draw(st.sampled_from(ODD_TIMES))
        if draw(st.integers(0, 4)) == 0:
            fields[draw(st.integers(1, 5))] = draw(st.sampled_from(ODD_NUMBERS))
        rows.append(",".join(fields))
    return "time,open,high,low,close,volume\n" + "\n".join(rows) + "\n"


@settings(max_examples=200, deadline=None)
@given(text=parsed_texts())
def test_numpys_parse_reads_what_the_string_path_reads(
    text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Same candles, or the same error naming the same line: numpy's parsers take a file
    only where they agree with Python's (else they decline and the strings are parsed)."""
    path = tmp_path_factory.mktemp("csv") / "c.csv"
    path.write_text(text, encoding="utf-8")
    try:
        expected: Candles | str = _read_by_strings(path)
    except CandlesFileError as exc:
        expected = str(exc)
    try:
        got: Candles | str = read_csv(path, "1h")
    except CandlesFileError as exc:
        got = str(exc)
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
    else:
        np.testing.assert_array_equal(got.time, expected.time)
        for name in CANDLE_FIELDS:
            np.testing.assert_array_equal(got.field(name), expected.field(name))


def test_the_files_write_csv_writes_take_numpys_parse(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    candles = Candles(
        time=np.array([1_577_836_800_000, 1_577_840_400_000], dtype=np.int64),
        open=np.array([1.5, 2.0]),
        high=np.array([2.0, 2.5]),
        low=np.array([1.0, 1.5]),
        close=np.array([1.75, 2.25]),
        volume=np.array([3.0, 0.1]),
    )
    for time_format in ("iso", "ms"):
        write_csv(path, candles, time_format=time_format)
        plain = _PlainCsv.of(path)
        assert plain is not None and plain.parse() is not None
        np.testing.assert_array_equal(read_csv(path, "1h").time, candles.time)
