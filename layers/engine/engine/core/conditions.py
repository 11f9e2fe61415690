"""Conditions compiled once into closures evaluated at a bar index of a frame.

A frame maps names (candle fields, `rsi`, `macd.macdsignal`) to arrays aligned to the
primary candles. A comparison touching an undefined (NaN) value is false and reports the
names it could not read, so the caller can warn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.core.candles import FloatArray
from engine.core.strategy import AllOf, AnyOf, Comparison, NotOf, Ref

Frame = Mapping[str, FloatArray]
# (frame, bar index, set collecting undefined operand names) -> truth
Predicate = Callable[[Frame, int, set[str]], bool]
_Getter = Callable[[Frame, int], float]

_NAN = float("nan")


def compile_condition(cond: Any) -> Predicate:
    if isinstance(cond, AllOf):
        children = [compile_condition(c) for c in cond.all]

        def all_of(frame: Frame, i: int, undefined: set[str]) -> bool:
            for child in children:  # noqa: SIM110 - all() would make a generator every bar
                if not child(frame, i, undefined):
                    return False
            return True

        return all_of
    if isinstance(cond, AnyOf):
        children = [compile_condition(c) for c in cond.any]

        def any_of(frame: Frame, i: int, undefined: set[str]) -> bool:
            for child in children:  # noqa: SIM110 - any() would make a generator every bar
                if child(frame, i, undefined):
                    return True
            return False

        return any_of
    if isinstance(cond, NotOf):
        inner = compile_condition(cond.not_)
        return lambda frame, i, undefined: not inner(frame, i, undefined)
    if isinstance(cond, Comparison):
        return _compile_comparison(cond)
    raise TypeError(f"not a condition: {cond!r}")


def _getter(operand: Any) -> tuple[_Getter, str | None]:
    if isinstance(operand, bool):  # guarded by the model, kept for safety
        raise TypeError("boolean operand")
    if isinstance(operand, int | float):
        value = float(operand)
        return (lambda frame, i: value), None
    name, shift = (operand.ref, operand.shift) if isinstance(operand, Ref) else (operand, 0)
    label = name if shift == 0 else f"{name}[-{shift}]"

    def get(frame: Frame, i: int) -> float:
        j = i - shift
        if j < 0:
            return _NAN
        return float(frame[name][j])

    return get, label


def _compile_comparison(cond: Comparison) -> Predicate:
    left, left_label = _getter(cond.left)
    right, right_label = _getter(cond.right)
    labels = [label for label in (left_label, right_label) if label is not None]

    op = cond.op
    if op in ("crosses_above", "crosses_below"):
        above = op == "crosses_above"

        def crosses(frame: Frame, i: int, undefined: set[str]) -> bool:
            if i < 1:
                undefined.update(labels)
                return False
            a0, b0, a1, b1 = (
                left(frame, i - 1),
                right(frame, i - 1),
                left(frame, i),
                right(frame, i),
            )
            if a0 != a0 or b0 != b0 or a1 != a1 or b1 != b1:  # a NaN: undefined
                undefined.update(labels)
                return False
            if above:
                return a0 <= b0 and a1 > b1
            return a0 >= b0 and a1 < b1

        return crosses

    compare: Callable[[float, float], bool] = {
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }[op]

    def simple(frame: Frame, i: int, undefined: set[str]) -> bool:
        a, b = left(frame, i), right(frame, i)
        if a != a or b != b:  # a NaN: undefined
            undefined.update(labels)
            return False
        return compare(a, b)

    return simple
