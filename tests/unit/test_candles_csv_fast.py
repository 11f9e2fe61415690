"""The CSV fast path (`_simple_columns`) splits exactly the fields the csv module does, or
declines (None) and leaves the file to it: random files with reordered and extra columns,
a BOM, CRLF line ends, quoted fields, blank lines, ragged rows, spaces and a missing final
newline."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine.adapters.candle_files import CandlesFileError, _csv_columns, _simple_columns, read_csv
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
    fast = _simple_columns(path)
    if plain:
        assert fast is not None
    if fast is not None:
        assert fast == _csv_columns(path)


def test_a_bad_value_is_named_by_its_line_either_way(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "time,open,high,low,close,volume\n"
        "1700000000000,1,2,0.5,1.5,3\n"
        "1700003600000,1,2,0.5,oops,3\n",
        encoding="utf-8",
    )
    assert _simple_columns(path) is not None
    with pytest.raises(CandlesFileError, match=r"c\.csv: line 3: close is not a number: 'oops'"):
        read_csv(path)
