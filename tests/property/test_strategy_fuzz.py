"""Fuzzing the strategy model (DESIGN §3): whatever document `parse_strategy` is given, it
either returns a Strategy or raises StrategyInvalid naming each problem as (path, message),
never any other exception; and a strategy it returns round-trips through its JSON form.

Three sources of documents: any JSON value; objects with the strategy's own keys holding any
JSON value; and "near-valid" documents, valid strategies with a few random mutations
(deleted keys, wrong types, random names for functions, references and operators, huge
numbers, NaN and infinities that JSON does not have, unicode, unknown keys).

The defects the fuzzing found (non-finite numbers, unhashable timeframes) have focused tests
at the end.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
from engine.core.strategy import Strategy, StrategyInvalid, parse_strategy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.core import DESIGN_EXAMPLE

Json = Any
Path = tuple[str | int, ...]

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- valid documents -----------------------------------------------------------------------


EVERY_FORM: dict[str, Json] = {
    "strategy_id": "every_form-2",
    "name": "Bänder, refs und nicht ✓",
    "status": "paused",
    "assets": ["ETH/USDT:USDT", "BRK.B", "EUR-USD"],
    "timeframe": "15m",
    "indicators": {
        "bb": {"fn": "BBANDS", "params": {"timeperiod": 20, "nbdevup": 2.5, "nbdevdn": 2}},
        "macd": {"fn": "MACD", "params": {}},
        "atr": {"fn": "ATR", "params": {"timeperiod": 14}, "timeframe": "4h"},
        "ema_1d": {"fn": "EMA", "params": {"timeperiod": 10}, "timeframe": "1d"},
        "adosc": {"fn": "ADOSC"},
    },
    "entry": {
        "all": [
            {"not": {"left": "close", "op": ">=", "right": "bb.upperband"}},
            {"left": {"ref": "macd.macd", "shift": 2}, "op": "crosses_below", "right": 0.5},
            {
                "any": [
                    {"left": "volume", "op": ">", "right": {"ref": "adosc", "shift": 0}},
                    {"left": -1, "op": "<=", "right": "ema_1d"},
                ]
            },
        ]
    },
    "execution_config": {
        "position_sizing": {"type": "fixed_quantity", "value": 0.25},
        "max_open_positions": 3,
        "stop_loss": {"type": "atr", "indicator": "atr", "multiplier": 1.5},
        "take_profit": {"type": "atr", "indicator": "atr", "multiplier": 3},
        "cooldown_config": {"15m": {"short_loss_limit": 1, "short_window_bars": 4}, "1d": {}},
    },
}

LEGACY: dict[str, Json] = {
    "strategy_id": "legacy",
    "name": "legacy cooldown keys, percent exits",
    "assets": ["AAPL"],
    "timeframe": "1d",
    "entry": {"left": "close", "op": ">", "right": {"ref": "close", "shift": 1}},
    "exit": {"not": {"not": {"left": "low", "op": "<", "right": 10}}},
    "execution_config": {
        "stop_loss": {"type": "percent", "value": 0.1},
        "take_profit": {"type": "percent", "value": 0.3},
        "cooldown_bars": 2,
        "daily_momentum_limit": 3,
        "weekly_momentum_limit": 5,
    },
}

MINIMAL: dict[str, Json] = {
    "strategy_id": "m",
    "name": "m",
    "assets": ["X"],
    "timeframe": "1w",
    "entry": {"left": 1, "op": "<", "right": 2},
}

VALID_DOCUMENTS = [DESIGN_EXAMPLE, EVERY_FORM, LEGACY, MINIMAL]

# --- generators ------------------------------------------------------------------------------

HUGE_NUMBERS: list[Json] = [
    10**30,
    -(10**30),
    2**63,
    -(2**63) - 1,
    10**400,
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    -0.0,
    0,
    -1,
]
NON_FINITE: list[Json] = [math.nan, math.inf, -math.inf]
# Names a strategy document uses, plausible and not: functions, references, operators, keys.
TOKENS: list[Json] = [
    *["RSI", "rsi", "MACD", "BBANDS", "SMA ", "NOPE", "MAVP", "HT_PHASOR", "", " "],
    *["macd.macdsignal", "macd.nope", "bb.upperband", "bb", "rsi.real", "close.x", "."],
    *["open", "high", "low", "close", "volume", "sma", "atr", "__class__", "constructor"],
    *["<", "<=", ">", ">=", "=>", "==", "crosses", "crosses_above", "CROSSES_BELOW", " <"],
    *["all", "any", "not", "ref", "shift", "fn", "params", "timeframe", "type", "value"],
    *["1h", "1H", "60m", "1d", "0m", "percent", "atr", "risk_reward", "fixed_notional"],
    *["\x00", "\u200b", "é", "日本", "🙂", "\ud800", "a" * 300],
]
STRATEGY_KEYS = [
    "strategy_id",
    "name",
    "status",
    "assets",
    "timeframe",
    "indicators",
    "entry",
    "exit",
    "execution_config",
]
EXTRA_KEYS = ["max_hold_bars", "cooldown_bars", "not_", "left", "unknown", "fn", "ref", ""]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()  # NaN and the infinities too: Python's json module reads them
    | st.text()
    | st.sampled_from(TOKENS)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
strategy_shaped = st.dictionaries(
    st.sampled_from(STRATEGY_KEYS) | st.text(max_size=5), json_values, max_size=10
)


def paths(doc: Json, prefix: Path = ()) -> list[Path]:
    """Every place in a document: each key of an object, each item of an array."""
    out: list[Path] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.append((*prefix, key))
            out += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.append((*prefix, i))
            out += paths(value, (*prefix, i))
    return out


def containers(doc: Json, prefix: Path = ()) -> list[Path]:
    """Every object in a document (including the document itself)."""
    out: list[Path] = [prefix] if isinstance(doc, dict) else []
    if isinstance(doc, dict | list):
        items = doc.items() if isinstance(doc, dict) else enumerate(doc)
        for key, value in items:
            out += containers(value, (*prefix, key))
    return out


def get(doc: Json, path: Path) -> Json:
    for part in path:
        doc = doc[part]
    return doc


def wrong_type(value: Json) -> list[Json]:
    """Values of other JSON types than `value`'s."""
    return [
        candidate
        for candidate in (None, True, 0, 1.5, "0", "", [], [value], {}, {"value": value})
        if type(candidate) is not type(value)
    ]


@st.composite
def mutated(draw: st.DrawFn, doc: Json) -> Json:
    """One mutation of a (deep-copied) document."""
    doc = copy.deepcopy(doc)
    kind = draw(
        st.sampled_from(
            ["delete", "replace", "wrong_type", "token", "number", "add_key", "list", "tweak"]
        )
    )
    if kind == "add_key":
        where = draw(st.sampled_from(containers(doc)))
        key = draw(st.sampled_from(EXTRA_KEYS + STRATEGY_KEYS) | st.text(max_size=8))
        get(doc, where)[key] = draw(json_values)
        return doc
    places = paths(doc)
    if not places:
        return draw(json_values)
    path = draw(st.sampled_from(places))
    parent, last = get(doc, path[:-1]), path[-1]
    value = parent[last]
    if kind == "delete":
        del parent[last]
    elif kind == "replace":
        parent[last] = draw(json_values)
    elif kind == "wrong_type":
        parent[last] = draw(st.sampled_from(wrong_type(value)))
    elif kind == "token":
        parent[last] = draw(st.sampled_from(TOKENS) | st.text(min_size=1, max_size=12))
    elif kind == "tweak":  # a plausible value of the same type: often still valid
        parent[last] = draw(tweaked(value))
    elif kind == "number":
        parent[last] = draw(
            st.sampled_from(HUGE_NUMBERS + NON_FINITE)
            | st.floats()
            | st.integers(min_value=-(2**70), max_value=2**70)
        )
    elif isinstance(value, list):  # "list": empty it, duplicate or drop an item
        action = draw(st.sampled_from(["empty", "duplicate", "pop", "many"]))
        if action == "empty":
            value.clear()
        elif value and action == "duplicate":
            value.append(copy.deepcopy(value[0]))
        elif value and action == "pop":
            value.pop(draw(st.integers(0, len(value) - 1)))
        else:
            value.extend([copy.deepcopy(value[-1]) if value else None] * 60)
    else:  # "list" on a non-list: wrap it in one
        parent[last] = [value]
    return doc


def tweaked(value: Json) -> st.SearchStrategy[Json]:
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(0, 60)
    if isinstance(value, float):
        return st.floats(0, 1.5, allow_subnormal=False)
    if isinstance(value, str):
        return st.sampled_from(TOKENS)
    return st.just(value)


@st.composite
def near_valid(draw: st.DrawFn) -> Json:
    doc = draw(st.sampled_from(VALID_DOCUMENTS))
    for _ in range(draw(st.integers(1, 3))):
        doc = draw(mutated(doc))
    return doc


# --- the contract ----------------------------------------------------------------------------


def walk(doc: Json) -> list[Json]:
    return [doc] + [get(doc, p) for p in paths(doc)]


def _beyond_float(value: Json) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return not math.isfinite(float(value))
    except OverflowError:
        return True


def _indicator_defs(doc: Json) -> list[dict[str, Json]]:
    indicators = doc.get("indicators") if isinstance(doc, dict) else None
    if not isinstance(indicators, dict):
        return []
    return [ind for ind in indicators.values() if isinstance(ind, dict)]


def assert_contract(doc: Json) -> str:
    """parse_strategy returns a Strategy or raises StrategyInvalid with (path, message)s.

    Returns what happened, for hypothesis's statistics.
    """
    before = copy.deepcopy(doc)
    try:
        strategy = parse_strategy(doc)
    except StrategyInvalid as exc:
        problems = exc.problems
        assert isinstance(problems, list) and problems, problems
        for problem in problems:
            assert isinstance(problem, tuple) and len(problem) == 2, problem
            path, message = problem
            assert isinstance(path, str) and isinstance(message, str) and message, problem
        assert str(exc)
        return "invalid"
    finally:
        assert repr(doc) == repr(before), "parse_strategy changed its input"
    assert isinstance(strategy, Strategy)
    dumped = strategy.model_dump(mode="json", by_alias=True)
    again = parse_strategy(dumped)
    assert again == strategy, (dumped, again.model_dump(mode="json", by_alias=True))
    assert again.canonical_json() == strategy.canonical_json()
    return "valid"


@pytest.mark.parametrize("doc", VALID_DOCUMENTS, ids=lambda d: d["strategy_id"])
def test_the_seed_documents_are_valid_and_round_trip(doc: dict[str, Json]) -> None:
    assert assert_contract(copy.deepcopy(doc)) == "valid"


@SETTINGS
@given(json_values)
def test_any_json_value(doc: Json) -> None:
    event(assert_contract(doc))


@settings(SETTINGS, max_examples=200)
@given(strategy_shaped)
def test_any_values_under_the_strategy_keys(doc: Json) -> None:
    event(assert_contract(doc))


@settings(SETTINGS, max_examples=1000)
@given(near_valid())
def test_near_valid_documents(doc: Json) -> None:
    event(assert_contract(doc))


# --- defects the fuzzing found, since fixed: each keeps a focused regression test ------------


def _with(**changes: Callable[[dict[str, Json]], None]) -> dict[str, Json]:
    doc = copy.deepcopy(MINIMAL)
    for change in changes.values():
        change(doc)
    return doc


@pytest.mark.parametrize("value", [math.inf, -math.inf, 10**400], ids=["inf", "-inf", "10**400"])
def test_an_indicator_parameter_beyond_float_range_is_a_problem(value: Json) -> None:
    doc = _with(
        ind=lambda d: d.update(indicators={"s": {"fn": "SMA", "params": {"timeperiod": value}}})
    )
    with pytest.raises(StrategyInvalid) as caught:
        parse_strategy(doc)
    assert [p for p, _ in caught.value.problems if p.startswith("indicators.s")]


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(indicators={"s": {"fn": "SMA", "timeframe": ["1h"]}}),
        lambda d: d.update(indicators={"s": {"fn": "SMA", "timeframe": {}}}),
        lambda d: d.update(timeframe=[], indicators={"s": {"fn": "SMA", "timeframe": "1h"}}),
    ],
    ids=["indicator-array", "indicator-object", "strategy-array"],
)
def test_a_timeframe_of_the_wrong_type_is_a_problem(
    change: Callable[[dict[str, Json]], None],
) -> None:
    with pytest.raises(StrategyInvalid) as caught:
        parse_strategy(_with(c=change))
    assert [p for p, _ in caught.value.problems if "timeframe" in p]


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(entry={"left": "close", "op": ">", "right": math.nan}),
        lambda d: d.update(entry={"left": -math.inf, "op": "<", "right": "close"}),
        lambda d: d.update(execution_config={"position_sizing": {"value": math.inf}}),
        lambda d: d.update(
            execution_config={"take_profit": {"type": "percent", "value": math.inf}}
        ),
        lambda d: d.update(
            indicators={"a": {"fn": "ATR"}},
            execution_config={
                "stop_loss": {"type": "atr", "indicator": "a", "multiplier": math.inf}
            },
        ),
    ],
    ids=["nan-operand", "inf-operand", "inf-size", "inf-target", "inf-atr-multiplier"],
)
def test_non_finite_numbers_are_problems(change: Callable[[dict[str, Json]], None]) -> None:
    try:
        strategy = parse_strategy(_with(c=change))
    except StrategyInvalid:
        return
    raise AssertionError(f"accepted: {strategy.canonical_json()}")
