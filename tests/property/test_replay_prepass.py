"""Replay passing over the bars the pre-pass proves quiet decides exactly what replay
evaluating every bar decides (issue 14): random strategies (every signal shape, stops,
targets, time exits, several positions, cooldowns of both kinds) on random markets with and
without closures; trades, orders, positions, cooldown trips, the final state, every warning
and how often it was raised, and the counted log records must all be equal.

And the pre-pass itself: each condition vectorized is the scalar condition at every bar,
and its undefined bars cover every bar where the scalar one reports an undefined value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from engine.core import prepass
from engine.core.conditions import compile_condition
from engine.core.evaluate import compile_strategy
from engine.core.market import MarketData
from engine.core.prepass import vector_condition
from engine.core.strategy import ExecutionConfig
from engine.service import replay as replay_module
from engine.service.replay import ReplayResult, replay
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.property.core_generators import (
    ASSETS,
    Market,
    build,
    markets,
    random_walk,
    strategy_docs,
)
from tests.support.core import T0

COMPARED = (
    "trades",
    "orders",
    "open_positions",
    "warnings",
    "warning_counts",
    "final_state",
    "cooldown_trips",
    "positions",
    "log_counts",
    "bars",
    "start_ms",
)


def _equal(fast: ReplayResult, full: ReplayResult) -> None:
    for name in COMPARED:
        assert getattr(fast, name) == getattr(full, name), name


@st.composite
def single_asset_cases(draw: st.DrawFn) -> tuple[dict[str, Any], Market]:
    doc = draw(strategy_docs("1h"))
    doc["assets"] = [ASSETS[0]]
    return doc, draw(markets("1h", min_bars=60, max_bars=400))


@settings(max_examples=60, deadline=None)
@given(single_asset_cases(), st.integers(0, 30))
def test_passing_over_quiet_bars_changes_nothing(
    case: tuple[dict[str, Any], Market], start: int
) -> None:
    doc, market = case
    strategy = build(doc)
    candles = market.candles[ASSETS[0]]
    start_ms = int(candles.time[min(start, len(candles) - 1)])
    fast = replay(strategy, candles, progress=False, start_ms=start_ms)
    full = replay(strategy, candles, progress=False, start_ms=start_ms, skip_quiet=False)
    _equal(fast, full)


@settings(max_examples=15, deadline=None)
@given(strategy_docs("1h"), markets("1h", min_bars=40, max_bars=150))
def test_several_assets_are_evaluated_at_every_bar(doc: dict[str, Any], market: Market) -> None:
    """No pre-pass for an account of several assets (each asset's newest bar differs): the
    switch must make no difference there either."""
    strategy = build(doc)
    candles = {a: market.candles[a] for a in strategy.assets}
    _equal(
        replay(strategy, candles, progress=False),
        replay(strategy, candles, progress=False, skip_quiet=False),
    )


def test_the_pre_pass_passes_over_most_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not vacuous: on a crossing strategy most bars are never evaluated, and the result is
    still the full one."""
    doc = {
        "strategy_id": "cross",
        "name": "cross",
        "assets": [ASSETS[0]],
        "timeframe": "1h",
        "indicators": {
            "fast": {"fn": "SMA", "params": {"timeperiod": 5}},
            "slow": {"fn": "SMA", "params": {"timeperiod": 20}},
        },
        "entry": {"left": "fast", "op": "crosses_above", "right": "slow"},
        "exit": {"left": "fast", "op": "crosses_below", "right": "slow"},
        "execution_config": {
            "stop_loss": {"type": "percent", "value": 0.01},
            "take_profit": {"type": "percent", "value": 0.02},
            "time_based_exits": {"max_hold_bars": 30},
            "fee_rate": 0.001,
            "cooldown_config": {"1h": {"short_loss_limit": 2, "short_window_bars": 20}},
        },
    }
    rng = np.random.default_rng(3)
    candles = random_walk(rng, T0 + np.arange(3000, dtype=np.int64) * 3_600_000)
    strategy = build(doc)
    calls = 0
    evaluate = replay_module.evaluate

    def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return evaluate(*args)

    monkeypatch.setattr(replay_module, "evaluate", counting)
    fast = replay(strategy, candles, progress=False)
    assert calls < len(candles) // 3
    assert len(fast.trades) > 30
    calls = 0
    full = replay(strategy, candles, progress=False, skip_quiet=False)
    assert calls == len(candles)
    _equal(fast, full)


@settings(max_examples=60, deadline=None)
@given(strategy_docs("1h"), markets("1h", min_bars=30, max_bars=120))
def test_vectorized_conditions_are_the_scalar_ones(doc: dict[str, Any], market: Market) -> None:
    strategy = build(doc)
    data = MarketData({(a, "1h"): c for a, c in market.candles.items()})
    frame = data.frame(strategy, ASSETS[0])
    n = len(market.candles[ASSETS[0]])
    for cond in [strategy.entry] + ([strategy.exit] if strategy.exit is not None else []):
        scalar = compile_condition(cond)
        vector = vector_condition(cond, frame, n)
        for i in range(n):
            undefined: set[str] = set()
            assert scalar(frame, i, undefined) == bool(vector.truth[i]), i
            if undefined:
                assert vector.undefined[i], i
    compile_strategy(strategy)  # the document is a valid strategy


def test_a_rule_the_pre_pass_does_not_know_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field added to the execution config after the pre-pass was written (simulated by
    forgetting a known one) turns it off unless it holds its default: every bar evaluated."""
    doc = {
        "strategy_id": "fee",
        "name": "fee",
        "assets": [ASSETS[0]],
        "timeframe": "1h",
        "entry": {"left": "close", "op": ">", "right": {"ref": "close", "shift": 1}},
        "execution_config": {"fee_rate": 0.001},
    }
    known = prepass._KNOWN_FIELDS[ExecutionConfig] - {"fee_rate"}
    monkeypatch.setitem(prepass._KNOWN_FIELDS, ExecutionConfig, known)
    assert not prepass.understood(build(doc))
    doc["execution_config"] = {"fee_rate": 0.0}
    assert prepass.understood(build(doc))

    candles = random_walk(np.random.default_rng(5), T0 + np.arange(50, dtype=np.int64) * 3_600_000)
    compiled = compile_strategy(build({**doc, "execution_config": {"fee_rate": 0.001}}))
    frame = MarketData({(ASSETS[0], "1h"): candles}).frame(compiled.strategy, ASSETS[0])
    assert prepass.plan(compiled, frame, ASSETS[0], candles) is None
