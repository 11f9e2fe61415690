"""Replay's pre-pass: the bars at which evaluation can be proven to do nothing (issue 14).

Replay calls `evaluate` at every bar. Most bars are quiet: no position is open and the entry
condition is false, or a position is open and neither its stop, its target, the exit
condition, its time limit nor a new entry can act. Such a bar changes nothing (no position,
order or cooldown; only the same constant warnings every bar raises), so replay may pass
over it. This module proves which bars are quiet, vectorized over the whole history:

- the entry and exit conditions are computed for every bar at once, with the very semantics
  of `engine.core.conditions` (a comparison touching NaN is false). A bar is *interesting*
  for a condition when it is true there or when any value it reads is undefined (the
  evaluation would warn): a superset of the bars where it fires or warns;
- with positions open, the next bar at which a resting stop or target could fill (low <=
  stop or high >= target, the test `first_resting_fill` starts with), the exit condition is
  interesting, or the time limit is reached.

It is conservative: a bar it cannot prove quiet is evaluated in full, and a strategy using
anything it does not know (a field of the strategy or its execution config it was not
written for, set to something other than its default; a stop or target kind it does not
know; several assets) gets no pre-pass at all, so every bar is evaluated. Being a superset
is all correctness needs: evaluating a quiet bar in full is always right.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from engine.core.candles import Candles, FloatArray
from engine.core.conditions import Frame
from engine.core.evaluate import CompiledStrategy
from engine.core.state import Position
from engine.core.strategy import (
    AllOf,
    AnyOf,
    AtrLevel,
    Comparison,
    ExecutionConfig,
    NotOf,
    PercentStop,
    PercentTarget,
    PositionSizing,
    Ref,
    RiskRewardTarget,
    Strategy,
    TimeBasedExits,
)
from engine.core.timeframes import to_ms

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# The fields each model had when this pre-pass was written, i.e. whose rules it knows. A field
# added later (a short side, a trailing stop, a guard) is fine only while it holds its default.
_KNOWN_FIELDS: dict[type[BaseModel], frozenset[str]] = {
    Strategy: frozenset(
        {
            "strategy_id",
            "name",
            "status",
            "assets",
            "timeframe",
            "indicators",
            "entry",
            "exit",
            "execution_config",
        }
    ),
    ExecutionConfig: frozenset(
        {
            "position_sizing",
            "max_open_positions",
            "stop_loss",
            "take_profit",
            "time_based_exits",
            "fee_rate",
            "cooldown_config",
            "cooldown_bars",
            "daily_momentum_limit",
            "weekly_momentum_limit",
        }
    ),
    TimeBasedExits: frozenset({"max_hold_bars"}),
    PositionSizing: frozenset({"type", "value"}),
}
_STOPS = (PercentStop, AtrLevel)
_TARGETS = (PercentTarget, AtrLevel, RiskRewardTarget)
_POSITION_FIELDS = frozenset(
    {
        "position_id",
        "strategy_id",
        "asset",
        "status",
        "entry_time",
        "entry_price",
        "quantity",
        "entry_fee",
        "stop_loss_price",
        "take_profit_price",
        "exit_time",
        "exit_price",
        "exit_fee",
        "exit_reason",
        "pnl",
        # trading breadth: these hold their defaults, or follow the bar-by-bar walk that the
        # evaluated bars still make, unless the strategy shorts, trails or scales out, which
        # `understood` refuses (short_entry/short_exit, trailing stops and target lists are
        # rules this module does not know)
        "side",
        "initial_quantity",
        "realized_pnl",
        "targets_filled",
        "trailing_active",
        "checked_through",
    }
)


def _only_known(model: BaseModel) -> bool:
    """True when every field of `model` this module does not know holds its default."""
    known = _KNOWN_FIELDS[type(model)]
    for name, info in type(model).model_fields.items():
        if name in known:
            continue
        try:
            default = info.get_default(call_default_factory=True)
        except (TypeError, ValueError):  # a default computed from the other fields
            return False
        if getattr(model, name) != default:
            return False
    return True


def understood(strategy: Strategy) -> bool:
    """Whether the pre-pass knows every rule `strategy` uses (else: no pre-pass)."""
    config = strategy.execution_config
    if type(strategy) is not Strategy or type(config) is not ExecutionConfig:
        return False
    if not all(
        _only_known(m) for m in (strategy, config, config.time_based_exits, config.position_sizing)
    ):
        return False
    if config.stop_loss is not None and type(config.stop_loss) not in _STOPS:
        return False
    if config.take_profit is not None and type(config.take_profit) not in _TARGETS:
        return False
    # a position's fields are the rules it carries: new ones (a trailing stop) are unknown
    return set(Position.model_fields) == _POSITION_FIELDS


# --- conditions, vectorized -----------------------------------------------------------------


@dataclass(frozen=True)
class _Vector:
    truth: BoolArray  # the condition's value at every bar
    undefined: BoolArray  # some value it reads is NaN there (or before the first bar)


def _series(operand: Any, frame: Frame, n: int) -> tuple[FloatArray, bool]:
    """The operand's value at every bar (NaN where the scalar getter returns NaN), and whether
    it names a series (constants report nothing when undefined: they never are)."""
    if isinstance(operand, bool):
        raise TypeError("boolean operand")
    if isinstance(operand, int | float):
        return np.full(n, float(operand)), False
    name, shift = (operand.ref, operand.shift) if isinstance(operand, Ref) else (operand, 0)
    values = np.asarray(frame[name], dtype=np.float64)[:n]
    if shift == 0:
        return values, True
    shifted = np.full(n, np.nan)
    if shift < n:
        shifted[shift:] = values[: n - shift]
    return shifted, True


def _previous(values: FloatArray) -> FloatArray:
    out = np.empty_like(values)
    out[:1] = np.nan
    out[1:] = values[:-1]
    return out


_COMPARE: dict[str, Callable[[FloatArray, FloatArray], BoolArray]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


def vector_condition(cond: Any, frame: Frame, n: int) -> _Vector:
    """`cond` at bars 0..n-1 of `frame`, as `engine.core.conditions` decides it bar by bar."""
    if isinstance(cond, AllOf | AnyOf):
        parts = [
            vector_condition(c, frame, n)
            for c in (cond.all if isinstance(cond, AllOf) else cond.any)
        ]
        combine = np.logical_and if isinstance(cond, AllOf) else np.logical_or
        truth = parts[0].truth.copy()
        undefined = parts[0].undefined.copy()
        for part in parts[1:]:
            combine(truth, part.truth, out=truth)
            undefined |= part.undefined
        return _Vector(truth, undefined)
    if isinstance(cond, NotOf):
        inner = vector_condition(cond.not_, frame, n)
        return _Vector(~inner.truth, inner.undefined)
    if not isinstance(cond, Comparison):
        raise TypeError(f"not a condition: {cond!r}")
    left, left_named = _series(cond.left, frame, n)
    right, right_named = _series(cond.right, frame, n)
    named = left_named or right_named
    if cond.op in ("crosses_above", "crosses_below"):
        a0, b0 = _previous(left), _previous(right)
        nan = np.isnan(a0) | np.isnan(b0) | np.isnan(left) | np.isnan(right)
        if cond.op == "crosses_above":
            truth = (a0 <= b0) & (left > right)
        else:
            truth = (a0 >= b0) & (left < right)
        nan[:1] = True  # the scalar rule: no crossing at the first bar, and it warns
    else:
        nan = np.isnan(left) | np.isnan(right)
        truth = _COMPARE[cond.op](left, right)
    truth &= ~nan
    return _Vector(truth, nan if named else np.zeros(n, dtype=bool))


# --- the plan -------------------------------------------------------------------------------

# Bars scanned at a time for a resting fill: most positions close within a few dozen bars.
_SCAN = 64


class Prepass:
    """Where evaluation may act, for one asset's candles (indices into them)."""

    def __init__(
        self,
        asset: str,
        candles: Candles,
        entry_bars: IntArray,
        exit_bars: IntArray | None,
        max_hold_bars: int | None,
    ) -> None:
        self.asset = asset
        self.candles = candles
        # bars where the entry (exit) condition is true or reads an undefined value; None:
        # the strategy has no exit condition. Lists: bisect is cheaper than numpy per call.
        self.entry_bars: list[int] = entry_bars.tolist()
        self.exit_bars: list[int] | None = None if exit_bars is None else exit_bars.tolist()
        self.max_hold_bars = max_hold_bars
        self._starts: dict[str, int] = {}  # position id -> first bar after its entry bar

    def next_event(self, i: int, positions: Sequence[Position]) -> int:
        """The first bar from `i` on at which evaluating may change anything or warn beyond
        what every bar warns, given that `positions` are open and every bar before `i` has been
        evaluated; len(candles) when there is none."""
        n = len(self.candles)
        first = _next_at(self.entry_bars, i, n)
        if not positions:
            return first
        if self.exit_bars is not None:
            first = min(first, _next_at(self.exit_bars, i, n))
        for position in positions:
            if position.asset != self.asset or position.status != "open":
                return i
            start = self._starts.get(position.position_id)
            if start is None:
                entry_ms = to_ms(position.entry_time)
                start = int(self.candles.time.searchsorted(entry_ms, side="right"))
                self._starts[position.position_id] = start
            if self.max_hold_bars is not None:
                first = min(first, max(i, start + self.max_hold_bars - 1))
            first = self._resting_fill(
                max(i, start), first, position.stop_loss_price, position.take_profit_price
            )
        return first

    def _resting_fill(self, i: int, end: int, stop: float | None, target: float | None) -> int:
        """The first bar in [i, end) whose low reaches the stop or high the target; `end` when
        none does."""
        if stop is None and target is None:
            return end
        low, high = self.candles.low, self.candles.high
        size = _SCAN
        while i < end:
            stop_at = min(end, i + size)
            if stop is not None and target is not None:
                hit = (low[i:stop_at] <= stop) | (high[i:stop_at] >= target)
            elif stop is not None:
                hit = low[i:stop_at] <= stop
            elif target is not None:
                hit = high[i:stop_at] >= target
            k = int(hit.argmax())
            if hit[k]:
                return i + k
            i, size = stop_at, size * 2
        return end


def _next_at(bars: list[int], i: int, n: int) -> int:
    k = bisect_left(bars, i)
    return bars[k] if k < len(bars) else n


def plan(compiled: CompiledStrategy, frame: Frame, asset: str, candles: Candles) -> Prepass | None:
    """The pre-pass of a single-asset replay of `candles`; None when the strategy uses a rule
    it does not know (every bar is then evaluated)."""
    strategy = compiled.strategy
    if strategy.assets != [asset] or not understood(strategy):
        return None
    n = len(candles)
    try:
        entry = vector_condition(strategy.entry, frame, n)
        exit_ = vector_condition(strategy.exit, frame, n) if strategy.exit is not None else None
    except (KeyError, TypeError):
        return None
    return Prepass(
        asset=asset,
        candles=candles,
        entry_bars=np.flatnonzero(entry.truth | entry.undefined).astype(np.int64),
        exit_bars=(
            None
            if exit_ is None
            else np.flatnonzero(exit_.truth | exit_.undefined).astype(np.int64)
        ),
        max_hold_bars=strategy.execution_config.time_based_exits.max_hold_bars,
    )
