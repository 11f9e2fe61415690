"""`engine.core.state.assemble`: model_construct's result, cheaper and smaller. Instances share
one fields-set object per model class; nothing pydantic does to a model changes it."""

from __future__ import annotations

from engine.core.state import (
    CooldownStatus,
    EvaluationResult,
    ExecutionState,
    assemble,
)


def test_an_assembled_model_is_the_model_construct_would_build() -> None:
    built = assemble(CooldownStatus, asset="BTC/USDT", active=True, remaining_bars=3)
    constructed = CooldownStatus.model_construct(asset="BTC/USDT", active=True, remaining_bars=3)
    assert built == constructed
    assert list(built.__dict__) == list(constructed.__dict__)  # field order: the JSON's order
    assert built.model_dump(mode="json") == constructed.model_dump(mode="json")
    empty = assemble(ExecutionState, strategy_id="s1")
    assert empty.positions == [] and empty.positions is not assemble(ExecutionState).positions


def test_assembled_models_share_one_fields_set_that_nothing_changes() -> None:
    a = assemble(CooldownStatus, asset="A", active=False)
    b = assemble(CooldownStatus, asset="B", active=True)
    assert a.__pydantic_fields_set__ is b.__pydantic_fields_set__
    shared = set(a.__pydantic_fields_set__)
    assert shared == set(CooldownStatus.model_fields)
    a.active = True  # what pydantic does on assignment: add the field's name
    copied = b.model_copy(update={"asset": "C"})
    deep = b.model_copy(deep=True)
    assert a.__pydantic_fields_set__ == shared == b.__pydantic_fields_set__
    assert (
        copied.__pydantic_fields_set__ is not shared and deep.__pydantic_fields_set__ is not shared
    )
    assert (a.active, b.asset, copied.asset) == (True, "B", "C")


def test_a_result_with_its_state_assembles_and_serialises_as_validated() -> None:
    state = assemble(ExecutionState, strategy_id="s1", version=2)
    result = assemble(EvaluationResult, strategy_id="s1", bar=None, state=state)
    validated = EvaluationResult(
        strategy_id="s1", bar=None, state=ExecutionState(strategy_id="s1", version=2)
    )
    assert result.model_dump(mode="json") == validated.model_dump(mode="json")
    assert result.model_dump_json() == validated.model_dump_json()
    assert "state" not in result.model_dump()  # an excluded field


def test_a_required_field_not_given_and_a_name_that_is_no_field_are_left_out() -> None:
    """As model_construct leaves them: neither appears in the model's fields."""
    built = assemble(CooldownStatus, active=True, nonsense=1)
    constructed = CooldownStatus.model_construct(active=True, nonsense=1)
    assert built.__dict__ == constructed.__dict__
    assert "asset" not in built.__dict__ and "nonsense" not in built.__dict__
