"""Resting orders of one open position, bar by bar (DESIGN §4 step 1 and §11).

A long's stop rests below and its targets above; a short's mirror that. Per bar b, with the
stop S and the open targets (nearest first):

- a gap through the stop (long: open <= S) fills the whole remainder at the open;
- every target the open gapped through fills at the open;
- then the stop, if the bar reaches it, fills the remainder at S (it wins a bar it touches);
- else every target the bar reaches fills at its own price.

After that bar's fills, if the position lives on: the break-even move (once
`break_even_after` targets filled, the stop goes to the entry price, never looser) and the
trailing ratchet at the bar's close. Both apply from the next bar.

Pure: the walk reads candles and indicator values and returns what happened; the caller
turns it into orders, trades and state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.core.candles import Candles
from engine.core.conditions import Frame
from engine.core.rounding import round_price
from engine.core.strategy import TrailingAtrStop, TrailingPercentStop

Trailing = TrailingPercentStop | TrailingAtrStop


@dataclass(frozen=True, slots=True)
class Target:
    order_id: str
    price: float
    quantity: float


@dataclass(frozen=True, slots=True)
class Fill:
    index: int  # bar index
    price: float
    quantity: float
    reason: str  # stop_loss | take_profit
    order_id: str | None  # the target's order; None for the stop


@dataclass(slots=True)
class Walk:
    """What happened to one position over bars [start, end]."""

    fills: list[Fill] = field(default_factory=list)
    closed: bool = False
    stop: float | None = None
    targets: list[Target] = field(default_factory=list)  # still open, nearest first
    remaining: float = 0.0
    targets_filled: int = 0
    trailing_active: bool = False
    stop_moved: bool = False  # the stop level or the activation changed


def walk(
    candles: Candles,
    frame: Frame,
    start: int,
    end: int,
    *,
    short: bool,
    entry_price: float,
    remaining: float,
    stop: float | None,
    targets: list[Target],
    targets_filled: int,
    trailing: Trailing | None,
    trailing_active: bool,
    break_even_after: int | None,
    tick: float | None = None,
) -> Walk:
    """Walk bars start..end (inclusive) for one position; stops at the bar that closes it.
    A trailing level is rounded to `tick` before it may tighten the stop."""
    sign = -1.0 if short else 1.0
    out = Walk(
        stop=stop,
        targets=sorted(targets, key=lambda x: sign * x.price),
        remaining=remaining,
        targets_filled=targets_filled,
        trailing_active=trailing_active,
    )
    if start > end:
        return out
    i = start
    while i <= end:
        if trailing is None:
            # Nothing moves between fills: jump to the first bar that touches anything.
            i = _first_touch(candles, i, end, sign, out.stop, out.targets)
            if i > end:
                break
        if _bar(candles, i, sign, out):
            out.closed = True
            return out
        _after_bar(candles, frame, i, sign, entry_price, trailing, break_even_after, out, tick)
        i += 1
    return out


def _first_touch(
    candles: Candles, start: int, end: int, sign: float, stop: float | None, targets: list[Target]
) -> int:
    """The first bar in [start, end] that reaches the stop or the nearest target; end + 1 if none."""
    if stop is None and not targets:
        return end + 1
    highs = candles.high[start : end + 1]
    lows = candles.low[start : end + 1]
    hit = np.zeros(len(highs), dtype=bool)
    # long: stop below (low reaches it), targets above (high); short: mirrored
    if stop is not None:
        hit |= (lows <= stop) if sign > 0 else (highs >= stop)
    if targets:
        nearest = targets[0].price
        hit |= (highs >= nearest) if sign > 0 else (lows <= nearest)
    if not hit.any():
        return end + 1
    return start + int(np.argmax(hit))


def _bar(candles: Candles, i: int, sign: float, out: Walk) -> bool:
    """The fills of bar i; True when they close the position."""
    open_ = float(candles.open[i])
    # how far the bar reaches towards the stop (long: its low) and towards the targets
    to_stop = float(candles.low[i]) if sign > 0 else float(candles.high[i])
    to_target = float(candles.high[i]) if sign > 0 else float(candles.low[i])
    stop = out.stop

    def reaches_target(price: float, level: float) -> bool:  # long: price >= level
        return sign * (price - level) >= 0

    def reaches_stop(price: float) -> bool:  # long: price <= stop
        return stop is not None and sign * (price - stop) <= 0

    if reaches_stop(open_):
        out.fills.append(Fill(i, open_, out.remaining, "stop_loss", None))
        out.remaining = 0.0
        return True
    for target in [x for x in out.targets if reaches_target(open_, x.price)]:
        if _fill_target(out, i, target, open_):
            return True
    if reaches_stop(to_stop):
        assert stop is not None
        out.fills.append(Fill(i, stop, out.remaining, "stop_loss", None))
        out.remaining = 0.0
        return True
    for target in [x for x in out.targets if reaches_target(to_target, x.price)]:
        if _fill_target(out, i, target, target.price):
            return True
    return False


def _fill_target(out: Walk, i: int, target: Target, price: float) -> bool:
    out.targets = [x for x in out.targets if x.order_id != target.order_id]
    last = not out.targets
    quantity = out.remaining if last else min(target.quantity, out.remaining)
    out.fills.append(Fill(i, price, quantity, "take_profit", target.order_id))
    out.remaining = 0.0 if last else out.remaining - quantity
    out.targets_filled += 1
    return last


def _after_bar(
    candles: Candles,
    frame: Frame,
    i: int,
    sign: float,
    entry_price: float,
    trailing: Trailing | None,
    break_even_after: int | None,
    out: Walk,
    tick: float | None = None,
) -> None:
    """Break-even move and trailing ratchet at bar i's close; they apply from bar i + 1."""
    stop = out.stop
    if stop is None:
        return
    new = stop
    if break_even_after is not None and out.targets_filled >= break_even_after:
        new = _tighter(new, entry_price, sign)
    if trailing is not None:
        close = float(candles.close[i])
        active = out.trailing_active or trailing.activation is None
        if not active and sign * (close - entry_price) >= trailing.activation * entry_price:  # type: ignore[operator]
            active = True
            out.trailing_active = True
            out.stop_moved = True
        if active:
            if isinstance(trailing, TrailingPercentStop):
                level = close * (1 - sign * trailing.value)
            else:
                level = close - sign * trailing.multiplier * float(frame[trailing.indicator][i])
            if math.isfinite(level) and level > 0:
                new = _tighter(new, round_price(level, tick), sign)
    if new != stop:
        out.stop = new
        out.stop_moved = True


def _tighter(stop: float, level: float, sign: float) -> float:
    """The level nearer the price: a long's stop only rises, a short's only falls."""
    return max(stop, level) if sign > 0 else min(stop, level)
