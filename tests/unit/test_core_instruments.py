"""Tick and lot sizes (execution_config.instruments): orders an exchange would accept.
Expected numbers computed by hand; FLAT bars are o=h=l=c=100, a SIGNAL bar enters at 100."""

from __future__ import annotations

from typing import Any

import pytest
from engine.core.strategy import StrategyInvalid, parse_strategy

from tests.support.core import SIGNAL, Driver, candles, flat_bars, make_strategy, strategy_doc


def strategy(instruments: dict[str, Any] | None, **config: Any) -> Any:
    return make_strategy(execution_config={**config, "instruments": instruments})


def test_levels_go_to_the_nearest_tick_and_the_quantity_down_to_whole_lots() -> None:
    # 1,000 notional at 100 = 10 units -> 9.9 lots of... lot 0.3: 33 lots = 9.9
    # stop 100 * (1 - 0.0333) = 96.67 -> tick 0.5: 96.5; target 100 * 1.0777 = 107.77 -> 108.0
    s = strategy(
        {"BTC/USDT": {"tick_size": 0.5, "lot_size": 0.3}},
        position_sizing={"type": "fixed_notional", "value": 1_000},
        stop_loss={"type": "percent", "value": 0.0333},
        take_profit={"type": "percent", "value": 0.0777},
    )
    opened = Driver(s, candles(flat_bars(4, b1=SIGNAL))).at(1)
    (position,) = opened.positions
    assert position.quantity == pytest.approx(9.9)
    assert position.stop_loss_price == 96.5 and position.take_profit_price == 108.0
    prices = {o.type: o.price for o in opened.orders}
    assert prices == {"market": 100.0, "stop_loss": 96.5, "take_profit": 108.0}
    assert all(o.quantity == pytest.approx(9.9) for o in opened.orders)


def test_without_instruments_nothing_is_rounded() -> None:
    s = strategy(
        None,
        position_sizing={"type": "fixed_notional", "value": 1_000},
        stop_loss={"type": "percent", "value": 0.0333},
    )
    (position,) = Driver(s, candles(flat_bars(3, b1=SIGNAL))).at(1).positions
    assert position.quantity == pytest.approx(10.0)
    assert position.stop_loss_price == pytest.approx(96.67)


def test_a_quantity_below_one_lot_is_no_order() -> None:
    # 50 notional at 100 = 0.5 units, lot 1: nothing to buy
    s = strategy(
        {"BTC/USDT": {"lot_size": 1}}, position_sizing={"type": "fixed_notional", "value": 50}
    )
    result = Driver(s, candles(flat_bars(3, b1=SIGNAL))).at(1)
    assert result.positions == [] and result.orders == []
    (warning,) = [w for w in result.warnings if w.code == "entry_skipped"]
    assert "below one lot" in warning.message


def test_scale_out_quantities_are_whole_lots_and_the_last_takes_the_rest() -> None:
    # 10 units in lots of 0.3 -> 9.9 (33 lots); 1/3 each: 3.3, 3.3, and the rest 3.3
    # with fractions 0.5 / 0.5: 4.95 -> 4.8 (16 lots), the rest 5.1 (17 lots)
    s = strategy(
        {"BTC/USDT": {"lot_size": 0.3}},
        position_sizing={"type": "fixed_notional", "value": 1_000},
        stop_loss={"type": "percent", "value": 0.05},
        take_profit=[
            {"type": "percent", "value": 0.02, "fraction": 0.5},
            {"type": "percent", "value": 0.04, "fraction": 0.5},
        ],
    )
    opened = Driver(s, candles(flat_bars(3, b1=SIGNAL))).at(1)
    targets = sorted((o.price, o.quantity) for o in opened.orders if o.type == "take_profit")
    assert [q for _, q in targets] == [pytest.approx(4.8), pytest.approx(5.1)]


def test_a_trailing_level_is_rounded_to_the_tick_before_it_ratchets() -> None:
    # long at 100, trailing 3%: close 110 -> 106.7 -> tick 0.5: 106.5 (not 106.7)
    s = strategy(
        {"BTC/USDT": {"tick_size": 0.5}},
        stop_loss={"type": "trailing_percent", "value": 0.03},
    )
    bars = flat_bars(4, b1=SIGNAL, b2=(100, 110, 100, 110, 1))
    driver = Driver(s, candles(bars))
    driver.at(1)
    (position,) = driver.at(2).positions
    assert position.stop_loss_price == 106.5


def test_instruments_refuse_a_zero_or_negative_size_naming_the_path() -> None:
    doc = strategy_doc()
    doc["execution_config"]["instruments"] = {"BTC/USDT": {"tick_size": 0}}
    with pytest.raises(StrategyInvalid) as info:
        parse_strategy(doc)
    assert [p for p, _ in info.value.problems] == [
        "execution_config.instruments.BTC/USDT.tick_size"
    ]
