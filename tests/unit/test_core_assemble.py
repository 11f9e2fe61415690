"""The parts of an answer built without validating again, and shared, because a bulk run
holds tens of thousands of answers: `assemble` (model_construct's result, cheaper and smaller;
instances share one fields-set object per model class, which nothing pydantic does changes)
and `NO_CHANGES`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from engine.core.evaluate import evaluate
from engine.core.market import MarketData
from engine.core.state import (
    NO_CHANGES,
    CooldownStatus,
    EvaluationResult,
    ExecutionState,
    GuardStatus,
    Position,
    assemble,
    revise,
)
from pydantic import BaseModel, Field

from tests.support.service import BARS, NOW, candles, strategy


def test_an_assembled_model_is_the_model_construct_would_build() -> None:
    built = assemble(CooldownStatus, asset="BTC/USDT", active=True, remaining_bars=3)
    constructed = CooldownStatus.model_construct(asset="BTC/USDT", active=True, remaining_bars=3)
    assert built == constructed
    assert list(built.__dict__) == list(constructed.__dict__)  # field order: the JSON's order
    assert built.model_dump(mode="json") == constructed.model_dump(mode="json")
    empty = assemble(ExecutionState, strategy_id="s1")
    other = assemble(ExecutionState, strategy_id="s2")
    assert empty.positions == [] and empty.positions is not other.positions  # a list each


def test_assembled_models_share_one_fields_set_that_nothing_changes() -> None:
    a = assemble(GuardStatus, guard="max_drawdown", active=False)
    b = assemble(GuardStatus, guard="max_open_positions_total", active=True)
    assert a.__pydantic_fields_set__ is b.__pydantic_fields_set__
    shared = set(a.__pydantic_fields_set__)
    assert shared == set(GuardStatus.model_fields)
    a.active = True  # what pydantic does on assignment: add the field's name
    copied = b.model_copy(update={"detail": "C"})
    deep = b.model_copy(deep=True)
    assert a.__pydantic_fields_set__ == shared == b.__pydantic_fields_set__
    assert (
        copied.__pydantic_fields_set__ is not shared and deep.__pydantic_fields_set__ is not shared
    )
    assert (a.active, b.detail, copied.detail) == (True, "", "C")


def test_a_result_with_its_state_assembles_and_serialises_as_validated() -> None:
    state = assemble(ExecutionState, strategy_id="s1", version=2)
    result = assemble(EvaluationResult, strategy_id="s1", bar=None, state=state)
    validated = EvaluationResult(
        strategy_id="s1", bar=None, state=ExecutionState(strategy_id="s1", version=2)
    )
    assert result.model_dump(mode="json") == validated.model_dump(mode="json")
    assert result.model_dump_json() == validated.model_dump_json()
    assert "state" not in result.model_dump()  # an excluded field


def test_a_required_field_not_given_or_a_name_that_is_no_field_is_refused() -> None:
    """Nothing validates an assembled model, so a slip in the code that builds one must not
    make a model that lacks a field or carries a stray one (model_construct would)."""
    with pytest.raises(TypeError, match="asset"):
        assemble(CooldownStatus, active=True)
    with pytest.raises(TypeError, match="nonsense"):
        assemble(CooldownStatus, asset="A", active=True, nonsense=1)


def test_an_evaluation_that_changed_nothing_answers_the_one_shared_no_changes() -> None:
    """Most of a bulk run's answers share it; its parts are tuples, so nothing can add to
    it (its lists equal [] and refuse to grow). An evaluation that enters has changes of its
    own."""
    quiet = evaluate(strategy("a"), ExecutionState(strategy_id="a"), _market(spike=False), NOW)
    entered = evaluate(strategy("a"), ExecutionState(strategy_id="a"), _market(spike=True), NOW)
    assert quiet.changes is NO_CHANGES and NO_CHANGES.empty
    assert quiet.changes.positions == [] and quiet.changes.cooldowns == []
    with pytest.raises(TypeError, match="NO_CHANGES is shared"):
        quiet.changes.positions.append(entered.positions[0])
    with pytest.raises(TypeError, match="NO_CHANGES is shared"):
        quiet.changes.orders += entered.orders
    assert entered.changes is not NO_CHANGES and len(entered.changes.positions) == 1
    assert NO_CHANGES.empty


def _market(*, spike: bool) -> MarketData:
    bars = candles(1, spike_at=BARS - 1 if spike else None)
    return MarketData({("BTC/USDT", "1h"): bars})


def test_revise_is_model_copy_with_an_update() -> None:
    """The evaluation's cheaper model_copy: the same fields, order and fields-set, the original
    untouched; a fields-set naming every field is shared, any other is the copy's own."""
    validated = Position(
        position_id="p1",
        strategy_id="s1",
        asset="BTC/USDT",
        entry_time=datetime(2026, 1, 1, tzinfo=UTC),
        entry_price=100.0,
        quantity=2.0,
    )
    update = {"status": "closed", "exit_price": 90.0, "pnl": -20.0}
    revised, copied = revise(validated, **update), validated.model_copy(update=update)
    assert revised == copied and list(revised.__dict__) == list(copied.__dict__)
    assert revised.model_fields_set == copied.model_fields_set
    assert revised.model_fields_set is not validated.model_fields_set
    assert (validated.status, validated.pnl) == ("open", None)
    assert revised.model_dump_json() == copied.model_dump_json()
    assembled = assemble(CooldownStatus, asset="A", active=False)
    again = revise(assembled, active=True)
    assert again.__pydantic_fields_set__ is assembled.__pydantic_fields_set__
    assert (assembled.active, again.active) == (False, True)


def test_a_field_may_have_any_name_the_generated_builder_uses_for_itself() -> None:
    """The builder is written from the field names: a field named like one of its own
    locals must still get its own value."""

    class Odd(BaseModel):
        model: str
        cls: int = 1
        every: list[int] = Field(default_factory=list)

    built = assemble(Odd, model="m", cls=2)
    assert (built.model, built.cls, built.every) == ("m", 2, [])
    assert built.model_dump() == Odd(model="m", cls=2).model_dump()
    assert revise(built, model="n").model == "n"
