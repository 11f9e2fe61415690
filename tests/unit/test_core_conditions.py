"""Conditions (DESIGN §3): all/any/not, every operator, crosses, {ref, shift}, NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
from engine.core.conditions import compile_condition

from tests.support.core import Driver, candles, entries, flat_bars, make_strategy

NAN = math.nan


def cond(condition: dict) -> object:
    """The parsed condition model (validated in a strategy, whose names it may use)."""
    return make_strategy(entry=condition).entry


def frame(**series: list[float]) -> dict[str, np.ndarray]:
    """A frame of candle-field names; unspecified fields are zeros of the same length."""
    n = len(next(iter(series.values())))
    out = {f: np.zeros(n) for f in ("open", "high", "low", "close", "volume")}
    out.update({k: np.array(v, dtype=np.float64) for k, v in series.items()})
    return out


def check(condition: dict, data: dict, i: int) -> tuple[bool, set[str]]:
    undefined: set[str] = set()
    verdict = compile_condition(cond(condition))(data, i, undefined)
    return verdict, undefined


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("<", [True, False, False]),
        ("<=", [True, True, False]),
        (">", [False, False, True]),
        (">=", [False, True, True]),
    ],
)
def test_comparison_operators(op, expected):
    # close - open: 1 < 2, 2 = 2, 3 > 2
    data = frame(close=[1, 2, 3], open=[2, 2, 2])
    got = [check({"left": "close", "op": op, "right": "open"}, data, i)[0] for i in range(3)]
    assert got == expected
    # numbers on either side
    got = [check({"left": "close", "op": op, "right": 2}, data, i)[0] for i in range(3)]
    assert got == expected
    mirrored = [check({"left": 2, "op": op, "right": "close"}, data, i)[0] for i in range(3)]
    assert mirrored == expected[::-1]


@pytest.mark.parametrize(
    ("before", "now", "above", "below"),
    [
        ((1, 2), (3, 2), True, False),  # from below to above
        ((2, 2), (3, 2), True, False),  # from equal to above: left <= right at t-1
        ((1, 2), (2, 2), False, False),  # from below to equal: not > at t
        ((3, 2), (4, 2), False, False),  # already above
        ((3, 2), (1, 2), False, True),  # from above to below
        ((2, 2), (1, 2), False, True),  # from equal to below: left >= right at t-1
        ((3, 2), (2, 2), False, False),  # from above to equal
        ((1, 2), (0, 2), False, False),  # already below
        ((2, 2), (2, 2), False, False),  # equal both times
    ],
)
def test_crosses_exact_semantics(before, now, above, below):
    data = frame(close=[before[0], now[0]], open=[before[1], now[1]])
    assert check({"left": "close", "op": "crosses_above", "right": "open"}, data, 1) == (
        above,
        set(),
    )
    assert check({"left": "close", "op": "crosses_below", "right": "open"}, data, 1) == (
        below,
        set(),
    )


def test_crosses_a_number_and_a_moving_right_side():
    data = frame(close=[69, 71, 72, 69], open=[10, 10, 80, 60])
    up = {"left": "close", "op": "crosses_above", "right": 70}
    assert [check(up, data, i)[0] for i in (1, 2, 3)] == [True, False, False]
    # the right side moves too: 71 > 10 at 1, 72 < 80 at 2, 69 > 60 at 3
    up_open = {"left": "close", "op": "crosses_above", "right": "open"}
    assert [check(up_open, data, i)[0] for i in (1, 2, 3)] == [False, False, True]
    down_open = {"left": "close", "op": "crosses_below", "right": "open"}
    assert [check(down_open, data, i)[0] for i in (1, 2, 3)] == [False, True, False]


def test_crosses_at_the_first_bar_is_undefined():
    data = frame(close=[5.0], open=[1.0])
    verdict, undefined = check({"left": "close", "op": "crosses_above", "right": "open"}, data, 0)
    assert verdict is False
    assert undefined == {"close", "open"}


def test_crosses_with_nan_the_bar_before_is_undefined():
    data = frame(close=[NAN, 5.0], open=[1.0, 1.0])
    verdict, undefined = check({"left": "close", "op": "crosses_above", "right": "open"}, data, 1)
    assert (verdict, undefined) == (False, {"close", "open"})


def test_ref_and_shift():
    data = frame(close=[1, 2, 3, 4, 5])
    two_back = {"ref": "close", "shift": 2}
    assert check({"left": two_back, "op": ">", "right": 2.5}, data, 4) == (True, set())  # 3
    assert check({"left": two_back, "op": ">", "right": 3}, data, 4) == (False, set())
    # close now above close two bars ago
    rising = {"left": "close", "op": ">", "right": two_back}
    assert [check(rising, data, i)[0] for i in (2, 3, 4)] == [True, True, True]
    # shift 0 is the value at the bar itself
    assert check({"left": {"ref": "close"}, "op": ">=", "right": 5}, data, 4) == (True, set())
    # before the first bar: undefined, false, named with its shift
    verdict, undefined = check(rising, data, 1)
    assert (verdict, undefined) == (False, {"close", "close[-2]"})


def test_shifted_crosses():
    # the previous bar's close crossed above the open of the bar before it
    data = frame(close=[1, 3, 0], open=[2, 2, 2])
    crossed = {
        "left": {"ref": "close", "shift": 1},
        "op": "crosses_above",
        "right": {"ref": "open", "shift": 1},
    }
    assert check(crossed, data, 2) == (True, set())
    assert check(crossed, data, 1)[0] is False


def test_all_any_not():
    data = frame(close=[5], open=[3])
    t = {"left": "close", "op": ">", "right": 4}
    f = {"left": "close", "op": "<", "right": 4}
    cases = [
        ({"all": [t, t]}, True),
        ({"all": [t, f]}, False),
        ({"any": [f, f]}, False),
        ({"any": [f, t]}, True),
        ({"not": t}, False),
        ({"not": f}, True),
        ({"not": {"all": [t, f]}}, True),
        ({"all": [t, {"any": [f, {"not": f}]}]}, True),
        ({"any": [{"all": [t, f]}, {"not": {"any": [t]}}]}, False),
    ]
    for condition, expected in cases:
        assert check(condition, data, 0)[0] is expected, condition


def test_nan_comparison_is_false_for_every_operator():
    data = frame(close=[NAN], open=[1.0])
    for op in ("<", "<=", ">", ">="):
        assert check({"left": "close", "op": op, "right": "open"}, data, 0) == (
            False,
            {"close", "open"},
        )
        assert check({"left": "close", "op": op, "right": 1}, data, 0) == (False, {"close"})


def test_not_of_an_undefined_comparison():
    # DESIGN read literally: the comparison is false, so its negation is true (and it warns)
    data = frame(close=[NAN])
    assert check({"not": {"left": "close", "op": ">", "right": 1}}, data, 0) == (True, {"close"})


def test_undefined_value_warns_and_blocks_entry():
    # SMA(5) is not defined before bar 4: "close > sma" is false there and the result warns
    strategy = make_strategy(
        indicators={"sma": {"fn": "SMA", "params": {"timeperiod": 5}}},
        entry={
            "all": [
                {"left": "volume", "op": ">", "right": 5},
                {"left": "close", "op": ">", "right": "sma"},
            ]
        },
    )
    # closes 100 .. 104 rising, volume spikes at bars 3 and 4; SMA(5) at 4 is 102 < 104
    bars = [(100.0 + i, 100.0 + i, 100.0 + i, 100.0 + i, 10.0 if i >= 3 else 1.0) for i in range(6)]
    driver = Driver(strategy, candles(bars))
    early = driver.at(3)
    assert entries(early) == []
    (warning,) = [w for w in early.warnings if w.code == "undefined_value"]
    assert "sma" in warning.message
    later = driver.at(4)
    assert [o.price for o in entries(later)] == [104.0]
    assert later.warnings == []


def test_exit_condition_undefined_value_warns_too():
    strategy = make_strategy(
        indicators={"sma": {"fn": "SMA", "params": {"timeperiod": 50}}},
        exit={"left": "close", "op": "<", "right": "sma"},
    )
    driver = Driver(strategy, candles(flat_bars(6, b2=(100, 100, 100, 100, 10))))
    driver.at(2)
    result = driver.at(4)
    assert result.closed_trades == []
    assert "undefined_value" in [w.code for w in result.warnings]
