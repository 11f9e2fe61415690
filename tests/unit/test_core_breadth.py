"""Trading breadth (DESIGN §11): short side, trailing stops, scale-out targets, sizing from
the account, guards. Every expected number is computed by hand here.

Unless said otherwise: 1h bars from 2024-01-01 00:00 UTC, FLAT bars are o=h=l=c=100 v=1,
an entry signal fires on a bar whose volume is above 5 (filling at that bar's close), and
positions hold quantity 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import talib
from engine.adapters.candle_files import read_candles_file
from engine.core.strategy import StrategyInvalid, parse_strategy
from engine.service.replay import replay

from tests.support.core import (
    ENTRY_ON_VOLUME,
    EXIT_ON_LOW_VOLUME,
    FLAT,
    SIGNAL,
    Driver,
    candles,
    cooldown_of,
    flat_bars,
    hour,
    make_strategy,
    strategy_doc,
    warning_codes,
)

NEVER = {"left": "volume", "op": ">", "right": 1e12}
# short 100 -> stop 105, target 75 (5% and 25%, exact in binary floating point)
SHORT_BRACKET = {
    "stop_loss": {"type": "percent", "value": 0.05},
    "take_profit": {"type": "percent", "value": 0.25},
}


def short_strategy(**config: Any) -> Any:
    return make_strategy(
        entry=NEVER,
        short_entry=ENTRY_ON_VOLUME,
        execution_config={**SHORT_BRACKET, **config},
    )


def short_then(bar3: tuple[float, ...], **config: Any) -> Any:
    """Short at bar 2 (close 100: stop 105, target 75), then bar 3."""
    driver = Driver(short_strategy(**config), candles(flat_bars(5, b2=SIGNAL, b3=bar3)))
    opened = driver.at(2)
    closed = driver.at(3)
    return opened, closed


# --- short side -------------------------------------------------------------------------


def test_short_entry_places_its_stop_above_and_its_target_below():
    opened, _ = short_then(FLAT)
    (position,) = opened.positions
    assert (position.side, position.entry_price) == ("short", 100.0)
    assert (position.stop_loss_price, position.take_profit_price) == (105.0, 75.0)
    sides = sorted((o.side, o.type, o.price) for o in opened.orders)
    assert sides == [
        ("enter_short", "market", 100.0),
        ("exit_short", "stop_loss", 105.0),
        ("exit_short", "take_profit", 75.0),
    ]


def test_short_gap_through_the_stop_fills_at_the_open():
    _, closed = short_then((107.0, 110.0, 106.0, 108.0, 1.0))
    (trade,) = closed.closed_trades
    assert (trade.exit_reason, trade.exit_price, trade.pnl) == ("stop_loss", 107.0, -7.0)


def test_short_gap_through_the_target_fills_at_the_open():
    _, closed = short_then((70.0, 72.0, 69.0, 71.0, 1.0))
    (trade,) = closed.closed_trades
    assert (trade.exit_reason, trade.exit_price, trade.pnl) == ("take_profit", 70.0, 30.0)


def test_short_stop_wins_a_bar_reaching_both():
    _, closed = short_then((100.0, 106.0, 70.0, 90.0, 1.0))
    (trade,) = closed.closed_trades
    assert (trade.exit_reason, trade.exit_price, trade.pnl) == ("stop_loss", 105.0, -5.0)


def test_short_target_touched_pays_entry_minus_exit_less_fees():
    # fee 0.1%: entry 100·0.001 = 0.1, exit 75·0.001 = 0.075; (100 - 75) - 0.175 = 24.825
    _, closed = short_then((100.0, 101.0, 74.0, 80.0, 1.0), fee_rate=0.001)
    (trade,) = closed.closed_trades
    assert (trade.exit_reason, trade.exit_price) == ("take_profit", 75.0)
    assert trade.pnl == pytest.approx(24.825)
    assert closed.equity == pytest.approx(10_000 + 24.825)


def test_reversal_long_exits_on_its_signal_and_a_short_enters_on_the_same_bar():
    strategy = make_strategy(
        exit=EXIT_ON_LOW_VOLUME,
        short_entry=EXIT_ON_LOW_VOLUME,
        short_exit=ENTRY_ON_VOLUME,
    )
    bars = flat_bars(6, b2=SIGNAL, b4=(101.0, 103.0, 100.0, 102.0, 0.1), b5=(99, 99, 99, 99, 10))
    driver = Driver(strategy, candles(bars))
    driver.at(2)
    driver.at(3)
    reversed_ = driver.at(4)
    (long_trade,) = reversed_.closed_trades
    assert (long_trade.side, long_trade.exit_reason, long_trade.pnl) == ("long", "signal", 2.0)
    (short,) = reversed_.positions
    assert (short.side, short.entry_price, short.entry_time) == ("short", 102.0, hour(4))
    # bar 5: the short exits on its signal at 99 (+3), and the long entry re-opens long
    back = driver.at(5)
    (short_trade,) = back.closed_trades
    assert (short_trade.side, short_trade.exit_price, short_trade.pnl) == ("short", 99.0, 3.0)
    assert [o.side for o in back.changes.orders if o.type == "market"] == [
        "exit_short",
        "enter_long",
    ]
    assert [p.side for p in back.positions] == ["long"]


def test_an_entry_of_the_other_direction_is_skipped_while_positions_remain_open():
    strategy = make_strategy(
        short_entry=EXIT_ON_LOW_VOLUME, execution_config={"max_open_positions": 3}
    )
    driver = Driver(strategy, candles(flat_bars(5, b2=SIGNAL, b3=(100, 100, 100, 100, 0.1))))
    driver.at(2)
    skipped = driver.at(3)
    assert [p.side for p in skipped.positions] == ["long"]
    assert "opposite_position_open" in warning_codes(skipped)
    assert not skipped.changes.orders


def test_max_open_positions_counts_both_directions():
    strategy = make_strategy(
        exit=EXIT_ON_LOW_VOLUME,
        short_entry=EXIT_ON_LOW_VOLUME,
        execution_config={"max_open_positions": 1},
    )
    # long at 2; at 3 the long exits and the short enters; at 4 another short signal: capped
    bars = flat_bars(6, b2=SIGNAL, b3=(100, 100, 100, 100, 0.1), b4=(100, 100, 100, 100, 0.1))
    driver = Driver(strategy, candles(bars))
    driver.over([2, 3])
    capped = driver.at(4)
    assert [p.side for p in capped.positions] == ["short"]
    assert not capped.changes.orders


# --- trailing stops ---------------------------------------------------------------------

TRAIL_10 = {"stop_loss": {"type": "trailing_percent", "value": 0.1}}


def test_the_trailing_stop_ratchets_at_the_close_and_never_loosens():
    # long 100, stop 90; bar 3 closes 120 -> 108; bar 4 closes 110 (level 99) -> stays 108;
    # bar 5 reaches 107.5 -> stopped at 108, +8
    bars = flat_bars(
        7,
        b2=SIGNAL,
        b3=(100, 121, 100, 120, 1),
        b4=(119, 119, 109, 110, 1),
        b5=(110, 110, 107.5, 109, 1),
    )
    driver = Driver(make_strategy(execution_config=TRAIL_10), candles(bars))
    stops = [r.positions[0].stop_loss_price for r in driver.over([2, 3, 4])]
    assert stops == [90.0, 108.0, 108.0]
    stopped = driver.at(5)
    (trade,) = stopped.closed_trades
    assert (trade.exit_reason, trade.exit_price, trade.pnl) == ("stop_loss", 108.0, 8.0)
    # the stop order kept its id all along; its price is the level it filled at
    stop_ids = {o.order_id for r in driver.results for o in r.orders if o.type == "stop_loss"}
    assert len(stop_ids) == 1


def test_a_stop_move_changes_one_order_level_and_nothing_else():
    bars = flat_bars(5, b2=SIGNAL, b3=(100, 121, 100, 120, 1))
    driver = Driver(make_strategy(execution_config=TRAIL_10), candles(bars))
    driver.at(2)
    moved = driver.at(3)
    changes = moved.changes
    assert not changes.positions and not changes.orders and changes.account is None
    (move,) = changes.stop_moves
    assert (move.price, move.checked_through) == (108.0, hour(3))
    (stop_order,) = [o for o in moved.orders if o.type == "stop_loss"]
    assert stop_order.price == 108.0 and stop_order.order_id == move.order_id
    # evaluated again at the same bar: nothing changes
    again = driver.at(3)
    assert again.changes.empty


def test_a_short_trailing_stop_ratchets_down():
    # short 100, stop 110; bar 3 closes 80 -> min(110, 88) = 88; bar 4 reaches 88.5 -> stopped at 88
    strategy = make_strategy(entry=NEVER, short_entry=ENTRY_ON_VOLUME, execution_config=TRAIL_10)
    bars = flat_bars(6, b2=SIGNAL, b3=(100, 100, 79, 80, 1), b4=(81, 88.5, 80, 85, 1))
    driver = Driver(strategy, candles(bars))
    driver.over([2, 3])
    (trade,) = driver.at(4).closed_trades
    assert (trade.exit_reason, trade.exit_price, trade.pnl) == ("stop_loss", 88.0, 12.0)


def test_trailing_starts_at_the_activation_threshold():
    # activation 5%: bar 3 closes 104 (not yet), bar 4 closes 106 (active: 95.4), bar 5 closes
    # 103 (level 92.7, stays 95.4)
    config = {"stop_loss": {"type": "trailing_percent", "value": 0.1, "activation": 0.05}}
    bars = flat_bars(
        7,
        b2=SIGNAL,
        b3=(100, 104, 100, 104, 1),
        b4=(104, 106, 104, 106, 1),
        b5=(106, 106, 103, 103, 1),
    )
    driver = Driver(make_strategy(execution_config=config), candles(bars))
    results = driver.over([2, 3, 4, 5])
    assert [r.positions[0].stop_loss_price for r in results] == pytest.approx(
        [90.0, 90.0, 95.4, 95.4]
    )
    assert [r.positions[0].trailing_active for r in results] == [False, False, True, True]


def test_atr_trailing_follows_close_minus_multiple_of_the_atr_at_each_bar():
    config = {"stop_loss": {"type": "trailing_atr", "indicator": "atr", "multiplier": 2}}
    bars = [(100.0, 101.0, 99.0, 100.0, 1.0)] * 4 + [
        (100.0, 101.0, 99.0, 100.0, 10.0),  # 4: entry at 100
        (100.0, 106.0, 100.0, 105.0, 1.0),  # 5: ratchet to 105 - 2·ATR(5)
        (105.0, 105.0, 102.0, 103.0, 1.0),  # 6: 103 - 2·ATR(6) is lower: unchanged
    ]
    c = candles(bars)
    strategy = make_strategy(
        indicators={"atr": {"fn": "ATR", "params": {"timeperiod": 2}}}, execution_config=config
    )
    atr = talib.ATR(c.high, c.low, c.close, timeperiod=2)
    driver = Driver(strategy, c)
    stops = [r.positions[0].stop_loss_price for r in driver.over([4, 5, 6])]
    entry_stop = 100 - 2 * atr[4]
    after_5 = max(entry_stop, 105 - 2 * atr[5])
    assert after_5 > entry_stop
    assert 103 - 2 * atr[6] < after_5
    assert stops == pytest.approx([entry_stop, after_5, after_5])


def test_a_trailing_stop_ratchets_through_missed_bars_exactly_as_every_bar_does():
    bars = flat_bars(
        7,
        b2=SIGNAL,
        b3=(100, 121, 100, 120, 1),
        b4=(119, 119, 109, 110, 1),
        b5=(110, 110, 107.5, 109, 1),
    )
    every = Driver(make_strategy(execution_config=TRAIL_10), candles(bars))
    every.over([2, 3, 4, 5])
    caught_up = Driver(make_strategy(execution_config=TRAIL_10), candles(bars))
    caught_up.at(2)
    late = caught_up.at(5)  # bars 3 and 4 missed: the stop still ratchets to 108 at bar 3
    assert [t.model_dump() for t in every.closed_trades] == [
        t.model_dump() for t in late.closed_trades
    ]
    (trade,) = late.closed_trades
    assert (trade.exit_time, trade.exit_price) == (hour(5), 108.0)


def test_a_later_evaluation_does_not_refill_at_a_moved_stop_on_bars_already_walked():
    # bar 3 dips to 95 (above the first stop 90) and closes 120 (stop -> 108). Bar 4 is quiet.
    # Walking bar 3 again with the stop at 108 would wrongly stop the position out.
    bars = flat_bars(6, b2=SIGNAL, b3=(100, 121, 95, 120, 1), b4=(115, 116, 114, 115, 1))
    driver = Driver(make_strategy(execution_config=TRAIL_10), candles(bars))
    driver.over([2, 3])
    held = driver.at(4)
    assert not held.closed_trades and held.positions[0].stop_loss_price == 108.0


# --- scale-out targets ------------------------------------------------------------------

TWO_TARGETS = [
    {"type": "percent", "value": 0.125, "fraction": 0.5},
    {"type": "percent", "value": 0.25, "fraction": 0.5},
]  # at an entry of 100: 112.5 and 125, half each


def scale_out(bar3: tuple[float, ...], *more: tuple[float, ...], **config: Any) -> Driver:
    bars = flat_bars(3 + 1 + len(more) + 1, b2=SIGNAL, b3=bar3)
    for k, bar in enumerate(more):
        bars[4 + k] = bar
    strategy = make_strategy(execution_config={"take_profit": TWO_TARGETS, **config})
    driver = Driver(strategy, candles(bars))
    driver.over(range(2, 4 + len(more)))
    return driver


def test_two_targets_fill_in_one_bar_each_at_its_price():
    driver = scale_out((100, 130, 99, 120, 1))
    trades = driver.closed_trades
    assert [(t.exit_price, t.quantity, t.pnl) for t in trades] == [
        (112.5, 0.5, 6.25),
        (125.0, 0.5, 12.5),
    ]
    assert not driver.results[-1].positions
    closed = [p for p in driver.results[-1].changes.positions if p.status == "closed"]
    assert [(p.pnl, p.exit_reason) for p in closed] == [(18.75, "take_profit")]


def test_a_gap_through_two_targets_fills_both_at_the_open():
    driver = scale_out((130, 131, 129, 130, 1))
    assert [(t.exit_price, t.pnl) for t in driver.closed_trades] == [(130.0, 15.0), (130.0, 15.0)]


def test_a_target_reduces_the_position_and_the_stop_order_quantity():
    driver = scale_out((100, 113, 99, 111, 1), stop_loss={"type": "percent", "value": 0.05})
    result = driver.results[-1]
    (position,) = result.positions
    assert (position.quantity, position.initial_quantity, position.targets_filled) == (0.5, 1.0, 1)
    assert position.realized_pnl == 6.25 and position.take_profit_price == 125.0
    (stop,) = [o for o in result.orders if o.type == "stop_loss" and o.status == "open"]
    assert (stop.quantity, stop.price) == (0.5, 95.0)
    assert result.equity == 10_006.25


def test_break_even_moves_the_stop_to_the_entry_once_a_target_filled():
    # target 1 at 112.5 fills at bar 3 (+6.25), the stop goes from 95 to 100; bar 4 dips to
    # 99: the other half stops out at 100 (0): the position made +6.25 in all
    driver = scale_out(
        (100, 113, 99, 111, 1),
        (105, 105, 99, 101, 1),
        stop_loss={"type": "percent", "value": 0.05},
        break_even_after=1,
    )
    assert driver.results[1].positions[0].stop_loss_price == 100.0
    assert [(t.exit_reason, t.exit_price, t.pnl) for t in driver.closed_trades] == [
        ("take_profit", 112.5, 6.25),
        ("stop_loss", 100.0, 0.0),
    ]
    (closed,) = [p for p in driver.results[-1].changes.positions if p.status == "closed"]
    assert closed.pnl == 6.25


@pytest.mark.parametrize(("stop", "is_loss"), [(0.05, False), (0.2, True)])
def test_cooldown_counts_a_position_as_one_trade_over_all_its_fills(stop: float, is_loss: bool):
    # +6.25 on the first half at 112.5; the second half stops at 95 (-2.5, in all +3.75: no
    # loss) or at 80 (-10, in all -3.75: a loss, which trips a 1-loss tier at bar 4)
    driver = scale_out(
        (100, 113, 99, 111, 1),
        (100, 100, 70, 75, 1),
        stop_loss={"type": "percent", "value": stop},
        cooldown_config={"1h": {"short_loss_limit": 1, "short_window_bars": 3}},
    )
    last = driver.results[-1]
    assert sum(t.pnl for t in driver.closed_trades) == (-3.75 if is_loss else 3.75)
    assert cooldown_of(last).active is is_loss
    if is_loss:
        assert cooldown_of(last).until == hour(7)


# --- sizing from the account ------------------------------------------------------------


def test_risk_sizing_risks_its_share_of_equity_and_fees_come_on_top():
    # equity 10,000 · 1% = 100 at risk over 100 - 95 = 5: quantity 20. Stopped at 95:
    # -100, entry fee 100·20·0.001 = 2, exit fee 95·20·0.001 = 1.9: -103.9
    strategy = make_strategy(
        execution_config={
            "position_sizing": {"type": "risk_percent", "value": 0.01},
            "stop_loss": {"type": "percent", "value": 0.05},
            "fee_rate": 0.001,
        }
    )
    driver = Driver(strategy, candles(flat_bars(5, b2=SIGNAL, b3=(100, 100, 94, 96, 1))))
    opened = driver.at(2)
    assert opened.positions[0].quantity == pytest.approx(20.0)
    closed = driver.at(3)
    (trade,) = closed.closed_trades
    assert trade.pnl == pytest.approx(-103.9)
    assert closed.equity == pytest.approx(9_896.1)
    assert closed.state.realized_pnl == pytest.approx(-103.9)


def test_equity_percent_sizes_from_capital_plus_realized_pnl_after_a_loss():
    # 10% of 10,000 = 1,000 at 100: 10 units; stopped at 95: -50. Then 10% of 9,950 at 100: 9.95
    strategy = make_strategy(
        execution_config={
            "position_sizing": {"type": "equity_percent", "value": 0.1},
            "stop_loss": {"type": "percent", "value": 0.05},
        }
    )
    bars = flat_bars(6, b2=SIGNAL, b3=(100, 100, 94, 96, 1), b4=SIGNAL)
    driver = Driver(strategy, candles(bars))
    assert driver.at(2).positions[0].quantity == pytest.approx(10.0)
    assert driver.at(3).closed_trades[0].pnl == pytest.approx(-50.0)
    assert driver.at(4).positions[0].quantity == pytest.approx(9.95)


def test_capital_sets_the_starting_equity():
    strategy = make_strategy(
        execution_config={
            "capital": 2_000,
            "position_sizing": {"type": "equity_percent", "value": 0.5},
        }
    )
    opened = Driver(strategy, candles(flat_bars(4, b2=SIGNAL))).at(2)
    assert opened.positions[0].quantity == pytest.approx(10.0) and opened.equity == 2_000


# --- guards -----------------------------------------------------------------------------


def test_max_open_positions_total_caps_entries_across_assets():
    strategy = make_strategy(
        assets=["BTC/USDT", "ETH/USDT"], execution_config={"max_open_positions_total": 1}
    )
    c = candles(flat_bars(4, b2=SIGNAL))
    result = Driver(strategy, {"BTC/USDT": c, "ETH/USDT": c}).at(2)
    assert [p.asset for p in result.positions] == ["BTC/USDT"]
    (guard,) = result.guards
    assert (guard.guard, guard.active) == ("max_open_positions_total", True)


def test_the_drawdown_halt_blocks_entries_from_its_bar_for_halt_bars_bars():
    # 100 units at 100; bar 3 closes 89: equity 10,000 - 1,100 = 8,900 <= 0.9·10,000: halted
    # at bar 3, entries blocked at bars 3, 4, 5 (halt_bars 2 after it), allowed again at 6
    strategy = make_strategy(
        execution_config={
            "position_sizing": {"type": "fixed_quantity", "value": 100},
            "max_open_positions": 10,
            "max_drawdown": {"value": 0.1, "halt_bars": 2},
        }
    )
    down = (89.0, 89.0, 89.0, 89.0, 10.0)  # a signal bar closing at 89
    bars = flat_bars(8, b2=SIGNAL, b3=down, b4=down, b5=down, b6=down)
    driver = Driver(strategy, candles(bars))
    results = driver.over([2, 3, 4, 5, 6])
    assert [len(r.positions) for r in results] == [1, 1, 1, 1, 2]
    halt = results[1].guards[0]
    assert (halt.guard, halt.active, halt.until, halt.remaining_bars) == (
        "max_drawdown",
        True,
        hour(5),
        3,
    )
    assert results[1].state.halted_at == hour(3)
    assert not results[4].guards[0].active


# --- invalid combinations ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (
            {"position_sizing": {"type": "risk_percent", "value": 0.01}},
            "execution_config.position_sizing",
        ),
        (
            {
                "take_profit": [
                    {"type": "percent", "value": 0.1, "fraction": 0.5},
                    {"type": "percent", "value": 0.2, "fraction": 0.4},
                ]
            },
            "execution_config.take_profit",
        ),
        ({"stop_loss": {"type": "trailing_percent"}}, "execution_config.stop_loss.value"),
        (
            {"stop_loss": {"type": "trailing_atr", "indicator": "nope", "multiplier": 2}},
            "execution_config.stop_loss.indicator",
        ),
        (
            {"take_profit": [{"type": "percent", "value": 0.1}]},
            "execution_config.take_profit[0].fraction",
        ),
        (
            {"take_profit": [{"type": "risk_reward", "ratio": 2, "fraction": 1}]},
            "execution_config.take_profit[0]",
        ),
        ({"break_even_after": 1}, "execution_config.break_even_after"),
        (
            {"position_sizing": {"type": "equity_percent", "value": 2}},
            "execution_config.position_sizing.value",
        ),
        ({"max_drawdown": {"value": 0.2}}, "execution_config.max_drawdown.halt_bars"),
    ],
)
def test_invalid_combinations_name_their_path(config: dict[str, Any], path: str):
    with pytest.raises(StrategyInvalid) as caught:
        parse_strategy(strategy_doc(execution_config=config))
    assert path in [p for p, _ in caught.value.problems], caught.value.problems


def test_short_conditions_are_checked_for_references():
    with pytest.raises(StrategyInvalid) as caught:
        parse_strategy(strategy_doc(short_entry={"left": "rsi", "op": "<", "right": 30}))
    assert "short_entry.left" in [p for p, _ in caught.value.problems]


def test_scale_out_targets_count_in_the_worst_case_commit():
    one = make_strategy(execution_config={"take_profit": {"type": "percent", "value": 0.1}})
    three = make_strategy(
        execution_config={
            "take_profit": [
                {"type": "percent", "value": 0.1, "fraction": 0.3},
                {"type": "percent", "value": 0.2, "fraction": 0.3},
                {"type": "percent", "value": 0.3, "fraction": 0.4},
            ]
        }
    )
    # per position: 2 more resting orders to close, and 2 more to place at entry
    assert three.max_writes_per_evaluation == one.max_writes_per_evaluation + 4
    assert np.isclose(sum(t.fraction for t in three.execution_config.take_profit), 1.0)  # type: ignore[union-attr]


def test_the_breadth_example_is_valid_and_replays_on_the_sample_candles():
    root = Path(__file__).resolve().parents[2]
    doc = (root / "examples/strategies/breadth_long_short.json").read_text()
    strategy = parse_strategy(json.loads(doc))
    sample = read_candles_file(root / "examples/candles/btc_1h_sample.csv", "1h")
    result = replay(strategy, sample, asset="BTC/USDT", progress=False)
    sides = {t.side for t in result.trades}
    assert sides == {"long", "short"}, sides


def test_a_retry_at_the_same_bar_changes_nothing_after_fills_moves_and_a_halt():
    # a short with a trailing stop and two targets, sized from equity, under a drawdown guard
    strategy = make_strategy(
        entry=NEVER,
        short_entry=ENTRY_ON_VOLUME,
        execution_config={
            "position_sizing": {"type": "equity_percent", "value": 0.5},
            "stop_loss": {"type": "trailing_percent", "value": 0.1},
            "take_profit": TWO_TARGETS,
            "max_drawdown": {"value": 0.01, "halt_bars": 3},
        },
    )
    bars = flat_bars(
        7, b2=SIGNAL, b3=(100, 100, 87, 90, 1), b4=(90, 98.5, 89, 98, 1), b5=(98, 98, 97, 97, 1)
    )
    driver = Driver(strategy, candles(bars))
    for bar in (2, 3, 4, 5):
        first = driver.at(bar)
        again = driver.at(bar)
        assert again.changes.empty, bar
        assert again.positions == first.positions
        assert again.state.model_dump() == first.state.model_dump()
        assert (again.equity, again.guards) == (first.equity, first.guards)
    # bar 3 fills the first target at 87.5 and ratchets the stop from 110 to 99; bar 4 stays
    # under it (98.5) and ratchets no further (98 · 1.1 > 99)
    assert [t.exit_price for t in driver.closed_trades] == [87.5]
    assert driver.results[-1].positions[0].stop_loss_price == pytest.approx(99.0)
