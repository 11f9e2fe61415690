"""The HTTP edge's limits, checked on the raw text before anything recursive runs (issue 10)."""

from __future__ import annotations

import json
import sys

import pytest
from engine.core.strategy import (
    MAX_CONDITION_DEPTH,
    MAX_CONDITIONS,
    StrategyInvalid,
    parse_strategy,
)
from engine.entrypoints.http import MAX_JSON_DEPTH, json_depth, parse_json_body, unknown_query
from engine.service.errors import InvalidRequest, MalformedJson

LEAF = {"left": "close", "op": ">", "right": 0}


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('{"a": "[[[[{{{{"}', 1),  # brackets inside strings do not count
        ('["\\"[[[", [2]]', 2),  # nor after an escaped quote
        ("[" * 50_000, 50_000),  # unbalanced: still measured, without recursion
    ],
)
def test_json_depth(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_a_body_nested_past_the_limit_is_refused_before_parsing() -> None:
    text = "[" * (sys.getrecursionlimit() * 10) + "]" * (sys.getrecursionlimit() * 10)
    with pytest.raises(InvalidRequest, match=f"at most {MAX_JSON_DEPTH}"):
        parse_json_body(text)
    assert parse_json_body("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None


def test_a_huge_integer_is_read_as_a_float_for_its_field_to_refuse() -> None:
    assert parse_json_body('{"n": ' + "9" * 5_000 + "}") == {"n": float("inf")}
    assert parse_json_body('{"n": -' + "9" * 5_000 + "}") == {"n": float("-inf")}
    assert parse_json_body('{"n": 12345}') == {"n": 12345}


def test_malformed_json_names_line_and_column() -> None:
    with pytest.raises(MalformedJson, match="line 2 column 3"):
        parse_json_body('{"a": 1,\n  }')


def _strategy(entry: object) -> dict[str, object]:
    return {
        "strategy_id": "s",
        "name": "s",
        "assets": ["BTC/USDT"],
        "timeframe": "1h",
        "entry": entry,
    }


def _nested(depth: int, key: str) -> object:
    cond: object = LEAF
    for _ in range(depth - 1):
        cond = {key: cond} if key == "not" else {key: [cond]}
    return cond


@pytest.mark.parametrize("key", ["not", "all", "any"])
def test_conditions_nest_at_most_the_limit(key: str) -> None:
    parse_strategy(_strategy(_nested(MAX_CONDITION_DEPTH, key)))
    with pytest.raises(StrategyInvalid, match=f"at most {MAX_CONDITION_DEPTH}") as info:
        parse_strategy(_strategy(_nested(MAX_CONDITION_DEPTH + 1, key)))
    assert [path for path, _ in info.value.problems] == ["entry"]


def test_a_condition_tree_far_past_the_recursion_limit_is_refused_without_recursion() -> None:
    deep = _nested(sys.getrecursionlimit() * 5, "not")
    with pytest.raises(StrategyInvalid, match=f"at most {MAX_CONDITION_DEPTH}"):
        parse_strategy(_strategy(deep))


def test_at_most_max_conditions() -> None:
    parse_strategy(_strategy({"all": [LEAF] * (MAX_CONDITIONS - 1)}))
    with pytest.raises(StrategyInvalid, match=f"at most {MAX_CONDITIONS}"):
        parse_strategy(_strategy({"all": [LEAF] * MAX_CONDITIONS}))


def test_unknown_query_parameters_and_repeats_are_refused() -> None:
    def answer(single: dict[str, str], multi: dict[str, list[str]]) -> object:
        event = {"queryStringParameters": single, "multiValueQueryStringParameters": multi}
        refused = unknown_query(event, ("persist",))
        return None if refused is None else json.loads(str(refused.body))

    assert answer({"persist": "false"}, {"persist": ["false"]}) is None
    assert answer({}, {}) is None
    refused = answer({"persist": "true"}, {"persist": ["false", "true"]})
    assert refused is not None and "more than once" in str(refused)
    refused = answer({"dry_run": "true"}, {"dry_run": ["true"]})
    assert refused is not None and "unknown query parameter" in str(refused)
