"""Tick and lot rounding: hand-computed cases, and the properties an exchange relies on."""

from __future__ import annotations

import math

import pytest
from engine.core.rounding import round_price, round_quantity
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("price", "tick", "expected"),
    [
        (95.123, 0.01, 95.12),
        (95.125, 0.01, 95.13),  # a half goes away from zero
        (0.30000000000000004, 0.1, 0.3),
        (101.26, 0.05, 101.25),
        (101.28, 0.05, 101.3),
        (12_345.6, 5.0, 12_345.0),
        (12_347.6, 5.0, 12_350.0),
        (95.123, None, 95.123),
    ],
)
def test_prices_go_to_the_nearest_tick(price: float, tick: float | None, expected: float) -> None:
    assert round_price(price, tick) == expected


@pytest.mark.parametrize(
    ("quantity", "lot", "expected"),
    [
        (2.3456, 0.001, 2.345),  # down, never up: sizing is a ceiling
        (2.9999, 1.0, 2.0),
        (0.0009, 0.001, 0.0),  # below one lot: no order
        (0.3, 0.1, 0.3),  # 0.3 / 0.1 is 2.9999999999999996 in floats: still three lots
        (7.0, None, 7.0),
    ],
)
def test_quantities_go_down_to_whole_lots(
    quantity: float, lot: float | None, expected: float
) -> None:
    assert round_quantity(quantity, lot) == expected


steps = st.sampled_from([0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0])


@given(st.floats(0.01, 1e6), steps)
def test_a_rounded_price_is_a_whole_number_of_ticks_within_half_a_tick(
    price: float, tick: float
) -> None:
    rounded = round_price(price, tick)
    assert math.isclose(rounded / tick, round(rounded / tick), abs_tol=1e-6)
    assert abs(rounded - price) <= tick / 2 + 1e-9 * max(1.0, price)


@given(st.floats(0.0, 1e6), steps)
def test_a_rounded_quantity_is_whole_lots_never_above_and_within_one_lot(
    quantity: float, lot: float
) -> None:
    rounded = round_quantity(quantity, lot)
    assert math.isclose(rounded / lot, round(rounded / lot), abs_tol=1e-6)
    assert rounded <= quantity + 1e-9 * max(1.0, quantity)
    assert quantity - rounded < lot + 1e-9 * max(1.0, quantity)
