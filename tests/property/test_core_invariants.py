"""Accounting invariants of every trade in generated runs (DESIGN §3, §4).

Whatever the strategy and the market, each closed trade must be explainable from the candles
alone: its exit is the first bar that touched the stop or target (gap fills at the open, the
stop wins a bar that touches both), signals and time exits fill at the close of an evaluated
bar, and the PnL is (exit - entry) * quantity - fees. Each asset's reported cooldown is
checked against a second opinion computed from those trades alone (`cooldown_oracle`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from engine.core.state import EvaluationResult, Position
from engine.core.timeframes import to_ms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest import approx

from tests.property.core_generators import build, cases, chain, schedules


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # a CI failure reproduces on any machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases(), data=st.data())
def test_every_trade_is_explained_by_the_candles(case, data):
    doc, market = case
    strategy = build(doc)
    config = strategy.execution_config
    schedule = data.draw(schedules(len(market.times)), label="schedule")
    shared = market.data()
    results = chain(strategy, schedule, market, lambda _now: shared)
    times = [int(x) for x in market.times]
    index_of = {t: i for i, t in enumerate(times)}
    evaluated = set(schedule)
    tiers = cooldown_tiers(doc)
    losses: dict[str, list[int]] = defaultdict(list)  # asset -> exit bar indices of losses

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
            if expected < 0:
                losses[trade.asset].append(e)
        # step 4 (cooldown update) follows the exits: the status at t counts this bar's losses
        for status in result.cooldowns:
            until = cooldown_oracle(tiers, losses[status.asset])
            if until is None or t > until[0]:
                assert not status.active, (t, status, until)
            else:
                assert (status.active, status.tier, status.remaining_bars) == (
                    True,
                    until[1],
                    until[0] - t + 1,
                ), (t, until)


# Bars per day in each timeframe (DESIGN §3), written out here rather than taken from the engine.
_BARS_PER_DAY: dict[str, float] = {"1m": 1440, "5m": 288, "15m": 96, "30m": 48, "1h": 24}
_BARS_PER_DAY |= {"2h": 12, "4h": 6, "6h": 4, "12h": 2, "1d": 1, "1w": 1 / 7}


def cooldown_tiers(doc: dict[str, Any]) -> list[tuple[str, int, int, int]]:
    """(tier, loss limit L, window W, bars blocked after the trip) per DESIGN §5, read from
    the document: cooldown_config's entry for the primary timeframe, else the legacy keys."""
    config = doc["execution_config"]
    entry = (config.get("cooldown_config") or {}).get(doc["timeframe"])
    if entry is not None:
        found = [
            (tier, entry.get(f"{tier}_loss_limit", 0), entry.get(f"{tier}_window_bars", 0))
            for tier in ("short", "long")
        ]
        return [(tier, limit, w, w) for tier, limit, w in found if limit > 0 and w > 0]
    day = max(1, int(_BARS_PER_DAY[doc["timeframe"]]))
    week = max(1, int(7 * _BARS_PER_DAY[doc["timeframe"]]))
    block = config.get("cooldown_bars")
    tiers = []
    if "daily_momentum_limit" in config:
        tiers.append(("short", config["daily_momentum_limit"], day, block or day))
    if "weekly_momentum_limit" in config:
        tiers.append(("long", config["weekly_momentum_limit"], week, block or week))
    if not tiers and block is not None:
        tiers.append(("short", 1, block, block))  # a pause after every loss
    return tiers


def cooldown_oracle(
    tiers: list[tuple[str, int, int, int]], losses: list[int]
) -> tuple[int, str] | None:
    """(cooldown_until, tier) from the losing exits' bar indices, or None if nothing tripped.

    DESIGN §5: at each losing exit b, a tier trips when the losses with exit bar in (b - W, b]
    number at least L; cooldown_until = max(cooldown_until, b + blocked); when both tiers
    reach the same bar, the longer window (long) rules.
    """
    best: tuple[int, bool] | None = None
    for b in losses:
        for tier, limit, window, blocked in tiers:
            if sum(1 for e in losses if b - window < e <= b) >= limit:
                candidate = (b + blocked, tier == "long")
                best = candidate if best is None else max(best, candidate)
    return None if best is None else (best[0], "long" if best[1] else "short")


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
