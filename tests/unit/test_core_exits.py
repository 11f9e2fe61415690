"""Exits, entries, pricing, sizing and PnL of the engine core (DESIGN §3, §4).

Every expected number is computed by hand in the test. Unless said otherwise: 1h bars from
2024-01-01 00:00 UTC, FLAT bars are o=h=l=c=100 v=1, and the entry fires on a bar whose
volume is above 5 (filling at that bar's close).
"""

from __future__ import annotations

import numpy as np
import pytest
import talib
from engine.core.state import EvaluationResult
from engine.core.strategy import Strategy

from tests.support.core import (
    EXIT_ON_LOW_VOLUME,
    FLAT,
    SIGNAL,
    T0,
    Driver,
    H,
    candles,
    cooldown_of,
    dt,
    entries,
    flat_bars,
    hour,
    make_strategy,
)

# stop 5% below and target 25% above an entry at 100: 95 and 125, exact in binary floating point
STOP_TARGET = {
    "stop_loss": {"type": "percent", "value": 0.05},
    "take_profit": {"type": "percent", "value": 0.25},
}


def bracket_strategy(**config: object) -> Strategy:
    return make_strategy(execution_config={**STOP_TARGET, **config})


def enter_at_2_then(bar3: tuple[float, ...]) -> tuple[EvaluationResult, EvaluationResult]:
    """Enter at bar 2 (close 100, stop 95, target 125); evaluate bars 2 and 3."""
    strategy = bracket_strategy()
    c = candles(flat_bars(5, b2=SIGNAL, b3=bar3))
    driver = Driver(strategy, c)
    opened = driver.at(2)
    closed = driver.at(3)
    return opened, closed


# --- entry ------------------------------------------------------------------------------


def test_entry_fills_at_close_and_places_stop_and_target():
    opened, _ = enter_at_2_then(FLAT)
    (position,) = opened.positions
    assert position.entry_time == hour(2)
    assert position.entry_price == 100.0
    assert position.quantity == 1.0  # default sizing: fixed_quantity 1
    assert position.stop_loss_price == 95.0
    assert position.take_profit_price == 125.0
    by_type = {o.type: o for o in opened.orders}
    assert set(by_type) == {"market", "stop_loss", "take_profit"}
    assert by_type["market"].side == "enter_long"
    assert by_type["market"].status == "filled"
    assert by_type["market"].price == 100.0
    assert by_type["market"].filled_at == hour(2)
    for kind, price in (("stop_loss", 95.0), ("take_profit", 125.0)):
        assert by_type[kind].side == "exit_long"
        assert by_type[kind].status == "open"
        assert by_type[kind].price == price
        assert by_type[kind].position_id == position.position_id
    assert opened.bar == hour(2)


def test_resting_orders_are_not_checked_on_the_entry_bar():
    # the entry bar itself dips to 90 and spikes to 130: the orders start at bar t+1
    strategy = bracket_strategy()
    c = candles(flat_bars(4, b2=(100, 130, 90, 100, 10)))
    driver = Driver(strategy, c)
    first = driver.at(2)
    assert len(first.positions) == 1 and first.closed_trades == []
    second = driver.at(3)  # FLAT bar: nothing touches 95 or 125
    assert len(second.positions) == 1 and second.closed_trades == []


def test_forming_bar_is_never_used():
    # now is one millisecond before bar 2 closes: bar t is bar 1, the signal on bar 2 is unseen
    strategy = bracket_strategy()
    c = candles(flat_bars(3, b2=SIGNAL))
    driver = Driver(strategy, c)
    from engine.core.evaluate import evaluate

    result = evaluate(strategy, driver.state, driver.market, T0 + 3 * H - 1)
    assert result.bar == hour(1)
    assert result.positions == []
    result = evaluate(strategy, driver.state, driver.market, T0 + 3 * H)
    assert result.bar == hour(2)
    assert len(result.positions) == 1


# --- resting orders ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bar3", "reason", "price"),
    [
        pytest.param((100, 101, 94, 96, 1), "stop_loss", 95.0, id="stop-touched"),
        pytest.param((100, 101, 95, 96, 1), "stop_loss", 95.0, id="stop-exactly-touched"),
        pytest.param((100, 126, 99, 120, 1), "take_profit", 125.0, id="target-touched"),
        pytest.param((100, 125, 99, 120, 1), "take_profit", 125.0, id="target-exactly-touched"),
        pytest.param((90, 92, 88, 91, 1), "stop_loss", 90.0, id="gap-through-stop-fills-at-open"),
        pytest.param((95, 99, 94, 98, 1), "stop_loss", 95.0, id="open-at-stop"),
        pytest.param(
            (130, 131, 128, 130, 1), "take_profit", 130.0, id="gap-through-target-fills-at-open"
        ),
        pytest.param((100, 130, 90, 100, 1), "stop_loss", 95.0, id="both-touched-stop-wins"),
        pytest.param((90, 130, 85, 120, 1), "stop_loss", 90.0, id="gap-stop-and-target-touched"),
    ],
)
def test_resting_order_fills(bar3, reason, price):
    _, closed = enter_at_2_then(bar3)
    (trade,) = closed.closed_trades
    assert trade.exit_reason == reason
    assert trade.exit_price == price
    assert trade.exit_time == hour(3)
    assert trade.entry_time == hour(2)
    assert trade.pnl == pytest.approx(price - 100.0)  # quantity 1, no fees
    assert closed.positions == []
    assert closed.state.positions == [] and closed.state.orders == []

    by_type = {o.type: o for o in closed.orders}
    sibling = "take_profit" if reason == "stop_loss" else "stop_loss"
    assert by_type[reason].status == "filled"
    assert by_type[reason].price == price
    assert by_type[reason].filled_at == hour(3)
    assert by_type[sibling].status == "cancelled"
    assert by_type[sibling].filled_at is None
    assert "market" not in by_type  # no market exit order for a resting fill
    (position,) = closed.changes.positions
    assert position.status == "closed"
    assert position.exit_reason == reason
    assert position.exit_price == price
    assert position.exit_time == hour(3)


def test_no_fill_when_bar_stays_between_stop_and_target():
    _, second = enter_at_2_then((100, 124.99, 95.01, 110, 1))
    assert second.closed_trades == []
    assert len(second.positions) == 1
    assert {o.status for o in second.orders} == {"open"}
    assert second.changes.empty


def test_stop_only_and_target_only():
    stop_only = make_strategy(execution_config={"stop_loss": {"type": "percent", "value": 0.05}})
    c = candles(flat_bars(5, b2=SIGNAL, b3=(100, 200, 99, 150, 1), b4=(100, 101, 80, 90, 1)))
    driver = Driver(stop_only, c)
    driver.over([2, 3, 4])
    (trade,) = driver.closed_trades
    assert (trade.exit_reason, trade.exit_price, trade.exit_time) == ("stop_loss", 95.0, hour(4))

    target_only = make_strategy(
        execution_config={"take_profit": {"type": "percent", "value": 0.25}}
    )
    c = candles(flat_bars(5, b2=SIGNAL, b3=(100, 101, 1, 50, 1), b4=(60, 126, 60, 126, 1)))
    driver = Driver(target_only, c)
    driver.over([2, 3, 4])
    (trade,) = driver.closed_trades
    assert (trade.exit_reason, trade.exit_price, trade.exit_time) == ("take_profit", 125.0, hour(4))


# --- signal and time exits --------------------------------------------------------------


def test_signal_exit_fills_at_close_with_market_order():
    strategy = make_strategy(exit=EXIT_ON_LOW_VOLUME, execution_config=STOP_TARGET)
    c = candles(flat_bars(6, b2=SIGNAL, b4=(100, 104, 99, 103, 0.1)))
    driver = Driver(strategy, c)
    driver.over([2, 3])
    assert len(driver.state.positions) == 1
    result = driver.at(4)
    (trade,) = result.closed_trades
    assert trade.exit_reason == "signal"
    assert trade.exit_price == 103.0
    assert trade.exit_time == hour(4)
    assert trade.pnl == pytest.approx(3.0)
    by_type = {o.type: o for o in result.orders}
    market_exit = by_type["market"]
    assert market_exit.side == "exit_long"
    assert market_exit.status == "filled"
    assert market_exit.price == 103.0
    assert market_exit.reason == "signal"
    assert market_exit.filled_at == hour(4)
    assert by_type["stop_loss"].status == "cancelled"
    assert by_type["take_profit"].status == "cancelled"


def test_signal_exit_never_on_the_entry_bar():
    # exit when close > 102; the entry bar closes at 105, the next bar too
    strategy = make_strategy(exit={"left": "close", "op": ">", "right": 102})
    c = candles(flat_bars(4, b2=(100, 105, 100, 105, 10), b3=(105, 106, 104, 105, 1)))
    driver = Driver(strategy, c)
    first = driver.at(2)
    assert len(first.positions) == 1 and first.closed_trades == []
    again = driver.at(2)
    assert len(again.positions) == 1 and again.closed_trades == []
    later = driver.at(3)
    (trade,) = later.closed_trades
    assert (trade.exit_reason, trade.exit_price, trade.exit_time) == ("signal", 105.0, hour(3))


def test_resting_fill_at_t_wins_over_signal_exit_at_t():
    strategy = make_strategy(exit=EXIT_ON_LOW_VOLUME, execution_config=STOP_TARGET)
    c = candles(flat_bars(5, b2=SIGNAL, b3=(100, 104, 94, 103, 0.1)))
    driver = Driver(strategy, c)
    driver.at(2)
    (trade,) = driver.at(3).closed_trades
    assert (trade.exit_reason, trade.exit_price) == ("stop_loss", 95.0)


def test_time_exit_after_max_hold_bars():
    strategy = make_strategy(execution_config={"time_based_exits": {"max_hold_bars": 3}})
    c = candles(
        flat_bars(
            7,
            b2=SIGNAL,
            b3=(100, 101, 100, 101, 1),
            b4=(101, 102, 101, 102, 1),
            b5=(102, 104, 102, 104, 1),
        )
    )
    driver = Driver(strategy, c)
    held = driver.over([2, 3, 4])  # bars held: 0, 1, 2
    assert all(r.closed_trades == [] for r in held)
    result = driver.at(5)  # bars held: 3
    (trade,) = result.closed_trades
    assert trade.exit_reason == "time"
    assert trade.exit_price == 104.0
    assert trade.exit_time == hour(5)
    assert trade.pnl == pytest.approx(4.0)
    (market_exit,) = [o for o in result.orders if o.type == "market"]
    assert (market_exit.side, market_exit.reason, market_exit.price) == ("exit_long", "time", 104.0)


def test_time_exit_counts_candles_across_a_market_closure():
    # bars at 00:00..03:00 on Monday, then the market is closed until Wednesday 03:00
    times = [T0 + h * H for h in (0, 1, 2, 3, 51, 52, 53)]
    bars = [FLAT, FLAT, SIGNAL, FLAT, FLAT, (100, 107, 100, 107, 1), FLAT]
    strategy = make_strategy(execution_config={"time_based_exits": {"max_hold_bars": 3}})
    driver = Driver(strategy, candles(bars, times=times))
    driver.over([2, 3])
    # index 4 (Wednesday 03:00) is 49 hours after entry but only 2 candles: still held
    assert driver.at(4).closed_trades == []
    (trade,) = driver.at(5).closed_trades
    assert trade.exit_reason == "time"
    assert trade.exit_time == dt(T0 + 52 * H)
    assert trade.exit_price == 107.0


def test_time_exit_counts_candles_not_evaluations():
    strategy = make_strategy(execution_config={"time_based_exits": {"max_hold_bars": 3}})
    c = candles(flat_bars(8, b2=SIGNAL, b5=(100, 103, 100, 103, 1), b6=(103, 106, 103, 106, 1)))
    # two evaluations only: at entry, then at bar 5 (held 3 candles) -> exits at bar 5
    driver = Driver(strategy, c)
    driver.at(2)
    (trade,) = driver.at(5).closed_trades
    assert (trade.exit_reason, trade.exit_time, trade.exit_price) == ("time", hour(5), 103.0)
    # a time exit acts at t only: evaluated first at bar 6 it exits at bar 6's close
    driver = Driver(strategy, c)
    driver.at(2)
    (trade,) = driver.at(6).closed_trades
    assert (trade.exit_reason, trade.exit_time, trade.exit_price) == ("time", hour(6), 106.0)


# --- catch-up ---------------------------------------------------------------------------


def test_catch_up_fills_at_the_bar_that_touched_not_at_t():
    # missed bars 3..6; bar 4 has an exit signal (ignored: signals act at t only),
    # bar 5 touches the stop, bar 6 would have hit the target
    strategy = make_strategy(exit=EXIT_ON_LOW_VOLUME, execution_config=STOP_TARGET)
    c = candles(
        flat_bars(
            9,
            b2=SIGNAL,
            b4=(100, 101, 99, 100, 0.1),
            b5=(99, 100, 94, 96, 1),
            b6=(110, 130, 110, 128, 1),
        )
    )
    driver = Driver(strategy, c)
    driver.at(2)
    result = driver.at(7)
    assert result.bar == hour(7)
    (trade,) = result.closed_trades
    assert trade.exit_reason == "stop_loss"
    assert trade.exit_price == 95.0
    assert trade.exit_time == hour(5)
    (stop,) = [o for o in result.orders if o.type == "stop_loss"]
    assert stop.filled_at == hour(5)


def test_catch_up_gap_fills_at_the_open_of_the_missed_bar():
    strategy = bracket_strategy()
    c = candles(flat_bars(8, b2=SIGNAL, b3=(101, 102, 99, 101, 1), b4=(88, 90, 85, 89, 1)))
    driver = Driver(strategy, c)
    driver.at(2)
    (trade,) = driver.at(7).closed_trades
    assert (trade.exit_reason, trade.exit_price, trade.exit_time) == ("stop_loss", 88.0, hour(4))
    assert trade.pnl == pytest.approx(-12.0)


def test_missed_bars_do_not_signal_exit_or_enter():
    strategy = make_strategy(exit=EXIT_ON_LOW_VOLUME)
    c = candles(flat_bars(8, b2=SIGNAL, b4=(100, 100, 100, 100, 0.1), b5=SIGNAL))
    driver = Driver(strategy, c)
    driver.at(2)
    result = driver.at(6)
    assert result.closed_trades == []
    assert [p.entry_time for p in result.positions] == [hour(2)]
    assert entries(result) == []


def test_catch_up_exit_then_entry_at_t():
    strategy = bracket_strategy()
    c = candles(flat_bars(8, b2=SIGNAL, b4=(100, 101, 90, 99, 1), b6=(99, 99, 98, 98, 10)))
    driver = Driver(strategy, c)
    driver.at(2)
    result = driver.at(6)
    (trade,) = result.closed_trades
    assert (trade.exit_time, trade.exit_price) == (hour(4), 95.0)
    (position,) = result.positions
    assert (position.entry_time, position.entry_price) == (hour(6), 98.0)
    assert position.stop_loss_price == pytest.approx(98 * 0.95)


# --- max open positions and assets ------------------------------------------------------


def test_max_open_positions_per_asset():
    strategy = make_strategy(execution_config={"max_open_positions": 2})
    c = candles(flat_bars(6, b2=SIGNAL, b3=SIGNAL, b4=SIGNAL))
    driver = Driver(strategy, c)
    results = driver.over(range(6))
    assert [len(entries(r)) for r in results] == [0, 0, 1, 1, 0, 0]
    assert [p.entry_time for p in driver.state.positions] == [hour(2), hour(3)]
    assert len({p.position_id for p in driver.state.positions}) == 2


def test_freed_slot_allows_a_new_entry():
    strategy = make_strategy(execution_config={**STOP_TARGET, "max_open_positions": 1})
    c = candles(flat_bars(6, b2=SIGNAL, b3=SIGNAL, b4=(100, 130, 100, 100, 10)))
    driver = Driver(strategy, c)
    results = driver.over(range(6))
    # bar 3: the slot is taken; bar 4: the target fills first (step 1), then the entry (step 5)
    assert [len(entries(r)) for r in results] == [0, 0, 1, 0, 1, 0]
    assert [t.exit_time for t in driver.closed_trades] == [hour(4)]


def test_assets_are_independent():
    strategy = make_strategy(
        assets=["AAA/USD", "BBB/USD"], execution_config={**STOP_TARGET, "max_open_positions": 1}
    )
    a = candles(flat_bars(6, b2=SIGNAL, b3=SIGNAL, b4=(100, 100, 90, 92, 1)))
    b = candles(flat_bars(6, b3=SIGNAL))
    driver = Driver(strategy, {"AAA/USD": a, "BBB/USD": b})
    driver.at(2)
    at3 = driver.at(3)
    # A entered at bar 2 and is full at bar 3; B's own signal at bar 3 enters
    assert sorted((p.asset, p.entry_time) for p in at3.positions) == [
        ("AAA/USD", hour(2)),
        ("BBB/USD", hour(3)),
    ]
    at4 = driver.at(4)
    # A's stop fills; B (flat at 100) is untouched
    assert [(t.asset, t.exit_reason) for t in at4.closed_trades] == [("AAA/USD", "stop_loss")]
    assert [(p.asset, p.entry_time) for p in at4.positions] == [("BBB/USD", hour(3))]
    assert {c.asset for c in at4.cooldowns} == {"AAA/USD", "BBB/USD"}
    a_id = next(o.position_id for o in driver.results[0].orders if o.asset == "AAA/USD")
    b_id = next(p.position_id for p in at4.positions)
    assert a_id != b_id


def test_asset_without_market_data_warns_and_others_proceed():
    strategy = make_strategy(assets=["AAA/USD", "ZZZ/USD"])
    driver = Driver(strategy, {"AAA/USD": candles(flat_bars(3, b2=SIGNAL))})
    result = driver.at(2)
    assert [p.asset for p in result.positions] == ["AAA/USD"]
    assert "no_market_data" in [w.code for w in result.warnings]
    assert cooldown_of(result, "ZZZ/USD").active is False


# --- stop and target pricing ------------------------------------------------------------


def random_candles(n: int, seed: int, signal_at: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 1, n))
    open_ = close + rng.normal(0, 0.3, n)
    high = np.maximum(open_, close) + rng.uniform(0.1, 1.5, n)
    low = np.minimum(open_, close) - rng.uniform(0.1, 1.5, n)
    volume = np.ones(n)
    volume[signal_at] = 10
    return open_, high, low, close, volume


def test_atr_stop_and_target_from_the_entry_bar():
    n, t = 40, 30
    o, h, lo, c, v = random_candles(n, seed=7, signal_at=t)
    strategy = make_strategy(
        indicators={"atr": {"fn": "ATR", "params": {"timeperiod": 5}}},
        execution_config={
            "stop_loss": {"type": "atr", "indicator": "atr", "multiplier": 2},
            "take_profit": {"type": "atr", "indicator": "atr", "multiplier": 3},
        },
    )
    driver = Driver(strategy, candles(list(zip(o, h, lo, c, v, strict=True))))
    result = driver.at(t)
    atr_t = talib.ATR(h, lo, c, timeperiod=5)[t]
    (position,) = result.positions
    assert position.entry_price == c[t]
    assert position.stop_loss_price == pytest.approx(c[t] - 2 * atr_t, rel=1e-12)
    assert position.take_profit_price == pytest.approx(c[t] + 3 * atr_t, rel=1e-12)
    prices = {o.type: o.price for o in result.orders}
    assert prices["stop_loss"] == pytest.approx(c[t] - 2 * atr_t, rel=1e-12)
    assert prices["take_profit"] == pytest.approx(c[t] + 3 * atr_t, rel=1e-12)


def test_risk_reward_target_from_percent_stop():
    strategy = make_strategy(
        execution_config={
            "stop_loss": {"type": "percent", "value": 0.04},
            "take_profit": {"type": "risk_reward", "ratio": 2.5},
        }
    )
    # entry at 100: stop 96, target 100 + 2.5 * (100 - 96) = 110
    driver = Driver(strategy, candles(flat_bars(5, b2=SIGNAL, b3=(100, 111, 99, 105, 1))))
    (position,) = driver.at(2).positions
    assert position.stop_loss_price == pytest.approx(96.0)
    assert position.take_profit_price == pytest.approx(110.0)
    (trade,) = driver.at(3).closed_trades
    assert (trade.exit_reason, trade.exit_price) == ("take_profit", pytest.approx(110.0))


def test_risk_reward_target_from_atr_stop():
    n, t = 40, 25
    o, h, lo, c, v = random_candles(n, seed=11, signal_at=t)
    strategy = make_strategy(
        indicators={"atr": {"fn": "ATR", "params": {"timeperiod": 14}}},
        execution_config={
            "stop_loss": {"type": "atr", "indicator": "atr", "multiplier": 1.5},
            "take_profit": {"type": "risk_reward", "ratio": 2},
        },
    )
    driver = Driver(strategy, candles(list(zip(o, h, lo, c, v, strict=True))))
    atr_t = talib.ATR(h, lo, c, timeperiod=14)[t]
    stop = c[t] - 1.5 * atr_t
    (position,) = driver.at(t).positions
    assert position.stop_loss_price == pytest.approx(stop, rel=1e-12)
    assert position.take_profit_price == pytest.approx(c[t] + 2 * (c[t] - stop), rel=1e-12)


def test_entry_skipped_when_atr_stop_is_undefined():
    # ATR(14) is not defined at bar 5: the stop cannot be priced, so no position is opened
    strategy = make_strategy(
        indicators={"atr": {"fn": "ATR", "params": {"timeperiod": 14}}},
        execution_config={"stop_loss": {"type": "atr", "indicator": "atr", "multiplier": 2}},
    )
    result = Driver(strategy, candles(flat_bars(8, b5=SIGNAL))).at(5)
    assert result.positions == []
    assert result.changes.empty
    assert "entry_skipped" in [w.code for w in result.warnings]


# --- sizing, fees, PnL ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizing", "quantity"),
    [
        ({"type": "fixed_notional", "value": 1000}, 8.0),  # 1000 / 125
        ({"type": "fixed_quantity", "value": 3}, 3.0),
        (None, 1.0),  # the default: fixed_quantity 1
    ],
)
def test_position_sizing(sizing, quantity):
    config = {} if sizing is None else {"position_sizing": sizing}
    strategy = make_strategy(execution_config=config)
    c = candles(flat_bars(3, b2=(120, 126, 119, 125, 10)))
    result = Driver(strategy, c).at(2)
    (position,) = result.positions
    assert position.entry_price == 125.0
    assert position.quantity == quantity
    assert {o.quantity for o in result.orders} == {quantity}


def test_pnl_is_price_move_times_quantity_minus_both_fees():
    strategy = make_strategy(
        execution_config={
            "position_sizing": {"type": "fixed_notional", "value": 1000},
            "take_profit": {"type": "percent", "value": 0.1},
            "fee_rate": 0.001,
        }
    )
    # entry 125, quantity 8, target 137.5
    c = candles(flat_bars(4, b2=(120, 126, 119, 125, 10), b3=(130, 140, 129, 139, 1)))
    driver = Driver(strategy, c)
    (position,) = driver.at(2).positions
    assert position.entry_fee == pytest.approx(1.0)  # 125 * 8 * 0.001
    result = driver.at(3)
    (trade,) = result.closed_trades
    assert trade.exit_price == pytest.approx(137.5)
    assert trade.quantity == 8.0
    assert trade.fees == pytest.approx(1.0 + 1.1)  # exit fee 137.5 * 8 * 0.001
    assert trade.pnl == pytest.approx((137.5 - 125) * 8 - 2.1)  # 97.9
    (closed,) = result.changes.positions
    assert closed.exit_fee == pytest.approx(1.1)
    assert closed.pnl == pytest.approx(97.9)


def test_losing_trade_pnl_with_fees():
    strategy = bracket_strategy(fee_rate=0.01)
    c = candles(flat_bars(4, b2=SIGNAL, b3=(100, 101, 94, 96, 1)))
    driver = Driver(strategy, c)
    driver.at(2)
    (trade,) = driver.at(3).closed_trades
    # (95 - 100) * 1 - 100 * 0.01 - 95 * 0.01
    assert trade.pnl == pytest.approx(-6.95)


def test_fees_turn_a_small_gross_win_into_a_loss_that_counts_for_cooldown():
    strategy = make_strategy(
        execution_config={
            "take_profit": {"type": "percent", "value": 0.01},
            "fee_rate": 0.01,
            "cooldown_config": {"1h": {"short_loss_limit": 1, "short_window_bars": 2}},
        }
    )
    c = candles(flat_bars(7, b2=SIGNAL, b3=(100, 102, 100, 101, 1), b4=SIGNAL, b6=SIGNAL))
    driver = Driver(strategy, c)
    driver.at(2)
    result = driver.at(3)
    (trade,) = result.closed_trades
    assert trade.exit_reason == "take_profit"
    assert trade.exit_price == pytest.approx(101.0)
    assert trade.exit_price > trade.entry_price  # a gross win of 1
    assert trade.fees == pytest.approx(1.0 + 1.01)
    assert trade.pnl == pytest.approx(-1.01)
    status = cooldown_of(result)
    assert (status.active, status.tier, status.until, status.remaining_bars) == (
        True,
        "short",
        hour(5),
        3,
    )
    assert entries(driver.at(4)) == []  # blocked
    assert len(entries(driver.at(6))) == 1  # bar 6 > 3 + 2: allowed


def test_break_even_after_fees_is_not_a_loss():
    # gross win exactly equal to the fees would be pnl 0: not a loss (PnL < 0 is a loss).
    # fee_rate 0 and an exit at the entry price gives an exact zero.
    strategy = make_strategy(
        exit=EXIT_ON_LOW_VOLUME,
        execution_config={
            "cooldown_config": {"1h": {"short_loss_limit": 1, "short_window_bars": 2}}
        },
    )
    c = candles(flat_bars(6, b2=SIGNAL, b3=(100, 100, 100, 100, 0.1), b4=SIGNAL))
    driver = Driver(strategy, c)
    driver.at(2)
    (trade,) = driver.at(3).closed_trades
    assert trade.pnl == 0.0
    assert cooldown_of(driver.results[-1]).active is False
    assert len(entries(driver.at(4))) == 1
