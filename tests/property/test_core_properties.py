"""Properties of evaluation over generated strategies and random-walk markets (DESIGN §4).

1. Idempotency: evaluating again at the same bar with the state the first evaluation left
   changes nothing and creates no order, after any chain of (possibly skipping) evaluations.
2. No look-ahead: the decisions at bar t are the same whether the market data holds only
   the bars up to t or also later ones.
3. Determinism: the same inputs give the same results and ids, run after run.
4. Sharing changes nothing: strategies evaluated together on one MarketData (a bulk run:
   candles and indicator values computed once, shared) decide exactly what each decides
   alone on its own.
"""

from __future__ import annotations

import numpy as np
from engine.core.evaluate import evaluate
from engine.core.state import EvaluationResult, ExecutionState
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.property.core_generators import (
    TIMEFRAMES,
    build,
    cases,
    chain,
    markets,
    schedules,
    snapshot,
    strategy_docs,
)


def describe(results: list[EvaluationResult]) -> None:
    """Label the example (hypothesis statistics show how much each property exercised)."""
    trades = [t for r in results for t in r.closed_trades]
    event(f"closed trades: {min(len(trades), 5)}{'+' if len(trades) >= 5 else ''}")
    for reason in sorted({t.exit_reason for t in trades}):
        event(f"exit reason {reason}")
    if any(c.active for r in results for c in r.cooldowns):
        event("a cooldown was active")
    if any(o.side == "enter_long" for r in results for o in r.changes.orders):
        event("entered")


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # a CI failure reproduces on any machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(case=cases(), data=st.data())
def test_evaluating_again_at_the_same_bar_changes_nothing(case, data):
    doc, market = case
    strategy = build(doc)
    schedule = data.draw(schedules(len(market.times)), label="schedule")
    shared = market.data()

    def retry(now: int, first: EvaluationResult, _before: ExecutionState) -> None:
        again = evaluate(strategy, first.state, shared, now)
        assert again.changes.empty, again.changes
        assert again.state == first.state
        assert again.closed_trades == []
        known = {o.order_id: o.status for o in first.state.orders}
        known.update({o.order_id: o.status for o in first.orders})
        assert {o.order_id: o.status for o in again.orders}.items() <= known.items()
        assert [p.position_id for p in again.positions] == [p.position_id for p in first.positions]
        assert again.cooldowns == first.cooldowns
        assert again.bar == first.bar
        # a third time, still nothing
        assert evaluate(strategy, again.state, shared, now).changes.empty

    results = chain(strategy, schedule, market, lambda _now: shared, on_step=retry)
    describe(results)


@SETTINGS
@given(case=cases(), data=st.data())
def test_later_bars_change_no_decision(case, data):
    doc, market = case
    strategy = build(doc)
    schedule = data.draw(schedules(len(market.times)), label="schedule")
    full = market.data()
    with_future = chain(strategy, schedule, market, lambda _now: full)
    only_past = chain(strategy, schedule, market, market.data_up_to)
    describe(with_future)
    for index, seen_all, seen_past in zip(schedule, with_future, only_past, strict=True):
        assert snapshot(seen_all) == snapshot(seen_past), f"bar index {index}"
    # and every series a condition could read at t (candles, indicators, informative
    # timeframes) has the same value, defined or not, with or without the later bars
    for index in schedule[:: max(1, len(schedule) // 8)]:
        now = market.now_after(index)
        past = market.data_up_to(now)
        for asset in strategy.assets:
            a, b = full.frame(strategy, asset), past.frame(strategy, asset)
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_array_equal(a[name][: index + 1], b[name], err_msg=name)


@SETTINGS
@given(case=cases(), data=st.data())
def test_same_inputs_same_results_and_ids(case, data):
    doc, market = case
    schedule = data.draw(schedules(len(market.times)), label="schedule")
    data_1, data_2 = market.data(), market.data()
    first = chain(build(doc), schedule, market, lambda _now: data_1)
    second = chain(build(doc), schedule, market, lambda _now: data_2)
    assert [snapshot(r) for r in first] == [snapshot(r) for r in second]
    # ids never collide: an order id always names the same order of the same position
    seen: dict[str, tuple] = {}
    for result in first:
        for order in result.changes.orders:
            identity = (order.position_id, order.side, order.type, order.created_at)
            assert seen.setdefault(order.order_id, identity) == identity
    entries = [o for r in first for o in r.changes.orders if o.side == "enter_long"]
    assert len({o.position_id for o in entries}) == len(entries)


@SETTINGS
@given(timeframe=st.sampled_from(TIMEFRAMES), data=st.data())
def test_strategies_sharing_market_data_decide_what_each_decides_alone(timeframe, data):
    docs = data.draw(st.lists(strategy_docs(timeframe), min_size=2, max_size=5), label="docs")
    market = data.draw(markets(timeframe), label="market")
    # same indicator names with other parameters, other names for the same computation,
    # one or two assets, informative timeframes: whatever the generator draws
    strategies = [build({**doc, "strategy_id": f"prop-{n}"}) for n, doc in enumerate(docs)]
    schedule = data.draw(schedules(len(market.times)), label="schedule")
    shared: dict[int, object] = {}

    def together(now: int):  # one snapshot per bar for every strategy, as a bulk run has
        return shared.setdefault(now, market.data())

    for strategy in strategies:
        bulk = chain(strategy, schedule, market, together)
        alone = chain(strategy, schedule, market, lambda _now: market.data())
        assert [snapshot(r) for r in bulk] == [snapshot(r) for r in alone], strategy.strategy_id
    computations = sum(d.cache.computations for d in shared.values())  # type: ignore[attr-defined]
    distinct = {
        (asset, ind.fn, tuple(sorted(ind.params.items())), ind.timeframe)
        for s in strategies
        for asset in s.assets
        for ind in s.indicators.values()
    }
    assert computations <= len(distinct) * len(shared)
