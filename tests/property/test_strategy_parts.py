"""Strategies parsed part by part (engine.service.strategy_parts) against parse_strategy, on the
fuzzer's near-valid documents: whatever the document, a warm template of its body changes
nothing (an equal Strategy with the same fields set and facts, or the same problems), and a
strategy made from a template compiles to the same rules, sharing the template's."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from typing import Any

import pytest
from engine.core.evaluate import compile_strategy
from engine.core.strategy import Strategy, StrategyInvalid, parse_strategy
from engine.service.strategy_parts import SHELL_FIELDS, StrategyParts, fast_path_available
from hypothesis import event, given, settings

from tests.property.test_strategy_fuzz import SETTINGS, VALID_DOCUMENTS, near_valid

Json = Any


def outcome(parse: Any, doc: Json) -> tuple[str, Any]:
    try:
        strategy = parse(copy.deepcopy(doc))
    except StrategyInvalid as exc:
        return "invalid", exc.problems
    assert isinstance(strategy, Strategy)
    facts = (strategy.warmup_bars, strategy.warnings, strategy.max_writes_per_evaluation)
    return "valid", (strategy, strategy.model_fields_set, facts)


def sibling(doc: dict[str, Json]) -> dict[str, Json]:
    """The same body under another valid shell: what warms the template first."""
    assets = doc.get("assets")
    count = len(assets) if isinstance(assets, list) and assets else 1
    return {
        **doc,
        "strategy_id": "sibling",
        "name": "a sibling",
        "status": "active",
        "assets": [f"SIB{i}/USDT" for i in range(count)],
    }


def assert_same_as_full_parse(doc: Json) -> str:
    parts = StrategyParts()
    if isinstance(doc, dict):
        with contextlib.suppress(StrategyInvalid):
            parts.parse(sibling(doc))
    expected = outcome(parse_strategy, doc)
    got = outcome(parts.parse, doc)
    assert got == expected, (got, expected)
    return f"{expected[0]}, {'fast' if parts.fast else 'full'}"


def test_the_fast_path_covers_the_strategy_model() -> None:
    """Fails when Strategy gains a validator or loses a shell field: engine.service.strategy_parts
    then parses everything in full (correct, slow) until it is checked against the change."""
    assert fast_path_available()


@pytest.mark.parametrize("doc", VALID_DOCUMENTS, ids=lambda d: d["strategy_id"])
def test_a_valid_document_from_a_warm_template_is_the_same_strategy(doc: dict[str, Json]) -> None:
    parts = StrategyParts()
    parts.parse(sibling(doc))
    assert assert_same_as_full_parse(doc) == "valid, fast"
    made = parts.parse(copy.deepcopy(doc))
    assert (parts.fast, parts.full) == (1, 1)  # made from the sibling's template
    again = parse_strategy(json.loads(made.canonical_json()))
    assert again == made and again.canonical_json() == made.canonical_json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("strategy_id", "bulk"),  # reserved
        ("strategy_id", "no spaces"),
        ("name", ""),
        ("name", "x" * 201),
        ("status", "stopped"),
        ("assets", ["BTC/USDT", "BTC/USDT"]),  # duplicate
        ("assets", ["BTC USDT"]),
        ("assets", [7]),
        ("assets", []),
        ("assets", "BTC/USDT"),
        ("unknown_key", 1),
    ],
)
def test_a_shell_problem_is_reported_as_the_full_parse_reports_it(field: str, value: Json) -> None:
    doc = {**VALID_DOCUMENTS[0], field: value}
    expected = outcome(parse_strategy, doc)
    assert expected[0] == "invalid"
    assert assert_same_as_full_parse(doc).startswith("invalid")


def test_a_body_that_fits_one_asset_but_not_fifty_is_refused_with_fifty() -> None:
    parts = StrategyParts()
    doc = copy.deepcopy(VALID_DOCUMENTS[0])
    doc["execution_config"] = {**doc["execution_config"], "max_open_positions": 20}
    parts.parse({**doc, "assets": ["A/USDT"]})
    many = {**doc, "assets": [f"A{i}/USDT" for i in range(50)]}
    with pytest.raises(StrategyInvalid) as caught:
        parts.parse(many)
    assert "evaluation_too_large" in str(caught.value) or "atomic commit" in str(caught.value)


def test_strategies_of_one_template_share_its_compiled_rules() -> None:
    parts = StrategyParts()
    doc = VALID_DOCUMENTS[0]
    a = parts.parse({**doc, "strategy_id": "a"})
    b = parts.parse({**doc, "strategy_id": "b", "assets": ["ZZZ/USDT"]})
    assert (parts.fast, parts.full) == (1, 1)
    ca, cb = parts.compile(a), parts.compile(b)
    assert ca.strategy is a and cb.strategy is b
    assert ca.entry is cb.entry and ca.exit is cb.exit and ca.cooldown is cb.cooldown
    plain = compile_strategy(b)
    assert plain.cooldown == cb.cooldown
    assert plain.history_needed(None, 0) == cb.history_needed(None, 0)
    # a strategy parsed elsewhere, even equal, is compiled on its own
    c = parse_strategy({**doc, "strategy_id": "b", "assets": ["ZZZ/USDT"]})
    assert c == b and parts.compile(c).entry is not cb.entry


def test_compiled_rules_for_another_strategy_keep_every_part() -> None:
    doc = {
        **VALID_DOCUMENTS[0],
        "short_entry": {"left": "close", "op": "<", "right": 1},
        "short_exit": {"left": "close", "op": ">", "right": 2},
        "exit": {"left": "close", "op": ">", "right": 3},
    }
    compiled = compile_strategy(parse_strategy(doc))
    other = parse_strategy({**doc, "strategy_id": "other"})
    moved = compiled.for_strategy(other)
    assert moved.strategy is other
    # whatever fields CompiledStrategy grows, for_strategy must carry them all
    for name in (f.name for f in dataclasses.fields(compiled) if f.name != "strategy"):
        assert getattr(compiled, name) is not None, name
        assert getattr(moved, name) is getattr(compiled, name), name


@settings(SETTINGS, max_examples=150)
@given(near_valid())
def test_near_valid_documents_parse_the_same_from_a_warm_template(doc: Json) -> None:
    event(assert_same_as_full_parse(doc))


def test_the_shell_is_all_a_template_is_not_keyed_on() -> None:
    assert set(SHELL_FIELDS) == {"strategy_id", "name", "status", "assets"}
