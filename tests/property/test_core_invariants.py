"""Accounting invariants of every trade in generated runs (DESIGN §3, §4).

Whatever the strategy and the market, each closed trade must be explainable from the candles
alone: its exit is the first bar that touched the stop or target (gap fills at the open, the
stop wins a bar that touches both), signals and time exits fill at the close of an evaluated
bar, and the PnL is (exit - entry) * quantity - fees.
"""

from __future__ import annotations

from engine.core.state import EvaluationResult, Position
from engine.core.timeframes import to_ms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest import approx

from tests.property.core_generators import build, chain, markets, schedules, strategy_docs


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(doc=strategy_docs(), market=markets(), data=st.data())
def test_every_trade_is_explained_by_the_candles(doc, market, data):
    strategy = build(doc)
    config = strategy.execution_config
    schedule = data.draw(schedules(len(market.times)), label="schedule")
    shared = market.data()
    results = chain(strategy, schedule, market, lambda _now: shared)
    times = [int(x) for x in market.times]
    index_of = {t: i for i, t in enumerate(times)}
    evaluated = set(schedule)

    for t, result in zip(schedule, results, strict=True):
        check_evaluation(strategy, market, t, result)
        closed = {p.position_id: p for p in result.changes.positions if p.status == "closed"}
        assert {tr.position_id for tr in result.closed_trades} == set(closed)
        for trade in result.closed_trades:
            position = closed[trade.position_id]
            c = market.candles[trade.asset]
            s = index_of[to_ms(trade.entry_time)]
            e = index_of[to_ms(trade.exit_time)]
            stop, target = position.stop_loss_price, position.take_profit_price
            assert s < e <= t
            assert trade.entry_price == c.close[s]
            # nothing touched the resting orders between entry and exit
            for b in range(s + 1, e):
                assert stop is None or c.low[b] > stop, (b, "stop touched earlier")
                assert target is None or c.high[b] < target, (b, "target touched earlier")
            price, reason = trade.exit_price, trade.exit_reason
            if reason == "stop_loss":
                assert stop is not None
                if c.open[e] <= stop:
                    assert price == c.open[e]
                else:
                    assert price == stop and c.low[e] <= stop
            elif reason == "take_profit":
                assert target is not None
                # a gap through the target fills at the open before the low is looked at
                assert stop is None or c.open[e] > stop
                if c.open[e] >= target:
                    assert price == c.open[e]
                else:
                    assert price == target and c.high[e] >= target
                    assert stop is None or c.low[e] > stop, "the stop wins a bar touching both"
            else:
                assert e == t, "signal and time exits act at the evaluated bar only"
                assert price == c.close[e]
                assert stop is None or c.low[e] > stop
                assert target is None or c.high[e] < target
                if reason == "time":
                    max_hold = config.time_based_exits.max_hold_bars
                    assert max_hold is not None and e - s >= max_hold
                    if all(b in evaluated for b in range(s + 1, e + 1)):
                        assert e - s == max_hold  # evaluated every bar: exits as soon as due
            fees = (trade.entry_price + trade.exit_price) * trade.quantity * config.fee_rate
            assert trade.fees == approx(fees, rel=1e-9, abs=1e-12)
            expected = (trade.exit_price - trade.entry_price) * trade.quantity - fees
            assert trade.pnl == approx(expected, rel=1e-9, abs=1e-9)


def check_evaluation(strategy, market, t: int, result: EvaluationResult) -> None:
    config = strategy.execution_config
    cooling = {c.asset for c in result.cooldowns if c.active}
    assert {c.asset for c in result.cooldowns} == set(strategy.assets)
    for asset in strategy.assets:
        open_here = [p for p in result.positions if p.asset == asset]
        assert len(open_here) <= config.max_open_positions
    new_entries = [o for o in result.changes.orders if o.side == "enter_long"]
    assert len({o.asset for o in new_entries}) == len(new_entries), "one entry per asset and bar"
    for order in new_entries:
        assert order.asset not in cooling, "entered during a cooldown"
        assert to_ms(order.created_at) == int(market.times[t])
        check_new_position(strategy, market, t, order.position_id, result.positions)
    # open positions carry their open resting orders in the state
    state_orders = {(o.position_id, o.type): o for o in result.state.orders}
    for position in result.positions:
        for kind, level in (
            ("stop_loss", position.stop_loss_price),
            ("take_profit", position.take_profit_price),
        ):
            if level is None:
                assert (position.position_id, kind) not in state_orders
            else:
                order = state_orders[(position.position_id, kind)]
                assert (order.status, order.price) == ("open", level)


def check_new_position(strategy, market, t, position_id, positions: list[Position]) -> None:
    config = strategy.execution_config
    (position,) = [p for p in positions if p.position_id == position_id]
    price = float(market.candles[position.asset].close[t])
    assert position.entry_price == price
    sizing = config.position_sizing
    quantity = sizing.value / price if sizing.type == "fixed_notional" else sizing.value
    assert position.quantity == approx(quantity, rel=1e-12)
    assert position.entry_fee == approx(price * quantity * config.fee_rate, rel=1e-9, abs=1e-12)
    stop, target = position.stop_loss_price, position.take_profit_price
    if config.stop_loss is None:
        assert stop is None
    else:
        assert stop is not None and 0 < stop < price
        if config.stop_loss.type == "percent":
            assert stop == approx(price * (1 - config.stop_loss.value), rel=1e-12)
    if config.take_profit is None:
        assert target is None
    else:
        assert target is not None and target > price
        if config.take_profit.type == "percent":
            assert target == approx(price * (1 + config.take_profit.value), rel=1e-12)
        elif config.take_profit.type == "risk_reward":
            assert target == approx(price + config.take_profit.ratio * (price - stop), rel=1e-12)
