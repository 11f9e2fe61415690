"""The account over a replay: equity marked to market at the close of every replayed bar.

equity(t) = capital + realized PnL of the trades closed by t (fees included)
          + Σ over positions open at t's close of ±(close(t) - entry)·quantity - entry fee
            (+ for a long, - for a short; quantity and entry fee of what is still held).

A trade is one fill that closed a quantity (a whole position, or one scale-out target of
it): that quantity was held from the entry to that fill. A position counts as one open
position from its entry to its last fill.

An entry fee is paid when the position opens, so it is in the equity from the entry bar on;
the exit fee with the exit. With several assets the bars are the distinct bar times of all of
them, and a position is marked at its asset's newest close at or before each bar.
Computed after the replay from its trades and the positions left open (difference arrays,
O(bars + trades)), so the replay loop itself carries no cost for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from engine.core.candles import Candles, FloatArray, IntArray
from engine.core.state import ClosedTrade, Position
from engine.core.timeframes import to_ms

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class AccountCurve:
    time: IntArray  # open time (epoch ms, UTC) of every replayed bar
    equity: FloatArray  # at each bar's close
    drawdown: FloatArray  # fraction below the running peak of equity, 0 at a new peak
    open_positions: IntArray  # positions open at each bar's close (after its exits and entries)
    in_trade: BoolArray  # a trade that closed was open during the bar (entry to exit bar)
    marks: dict[str, FloatArray]  # per asset: its newest close at or before each bar


def account_curve(
    times: IntArray,
    candles: Mapping[str, Candles],
    trades: Sequence[ClosedTrade],
    open_positions: Sequence[Position],
    capital: float,
    fee_rate: float,
) -> AccountCurve:
    n = len(times)
    marks: dict[str, FloatArray] = {}
    for asset, history in candles.items():
        at = np.searchsorted(history.time, times, side="right") - 1
        mark = np.where(at >= 0, history.close[np.maximum(at, 0)], np.nan)
        marks[asset] = mark.astype(np.float64)

    def index(value: datetime) -> int:
        return int(np.searchsorted(times, to_ms(value), side="left"))

    realized = np.zeros(n + 1)
    in_trade = np.zeros(n + 1, dtype=np.int64)
    count: dict[str, IntArray] = {a: np.zeros(n + 1, dtype=np.int64) for a in candles}
    quantity: dict[str, FloatArray] = {a: np.zeros(n + 1) for a in candles}
    cost: dict[str, FloatArray] = {a: np.zeros(n + 1) for a in candles}

    def hold(asset: str, entry: int, exit_: int, qty: float, paid: float) -> None:
        """`qty` signed (a short's is negative), `paid` = qty·entry price + entry fee."""
        if exit_ <= entry or asset not in quantity:
            return
        quantity[asset][entry] += qty
        quantity[asset][exit_] -= qty
        cost[asset][entry] += paid
        cost[asset][exit_] -= paid

    def counted(asset: str, entry: int, exit_: int) -> None:
        if exit_ <= entry or asset not in count:
            return
        count[asset][entry] += 1
        count[asset][exit_] -= 1

    # a position's span: its entry to its last fill (several fills when it scaled out)
    spans: dict[str, tuple[str, int, int]] = {}
    for trade in trades:
        entry, exit_ = index(trade.entry_time), index(trade.exit_time)
        realized[exit_] += trade.pnl
        in_trade[entry] += 1
        in_trade[min(exit_ + 1, n)] -= 1
        sign = -1.0 if trade.side == "short" else 1.0
        entry_fee = trade.entry_price * trade.quantity * fee_rate
        signed = sign * trade.quantity
        hold(trade.asset, entry, exit_, signed, signed * trade.entry_price + entry_fee)
        _, _, last = spans.get(trade.position_id, (trade.asset, entry, exit_))
        spans[trade.position_id] = (trade.asset, entry, max(last, exit_))
    for position in open_positions:
        entry = index(position.entry_time)
        sign = -1.0 if position.side == "short" else 1.0
        signed = sign * position.quantity
        fee = position.entry_fee * position.quantity / position.entered_quantity
        hold(position.asset, entry, n, signed, signed * position.entry_price + fee)
        spans.pop(position.position_id, None)  # fills so far: it is still open
        counted(position.asset, entry, n)
    for asset, entry, exit_ in spans.values():
        counted(asset, entry, exit_)

    equity = capital + np.cumsum(realized)[:n]
    total = np.zeros(n, dtype=np.int64)
    for asset in quantity:
        open_here = np.cumsum(count[asset])[:n]
        total += open_here
        held = open_here > 0
        if held.any():
            # mark only where something is held: the running sums of quantities and costs may
            # keep a rounding residue (1e-17) after a position closes
            qty = np.cumsum(quantity[asset])[:n]
            paid = np.cumsum(cost[asset])[:n]
            equity[held] += qty[held] * marks[asset][held] - paid[held]
    peak = np.maximum.accumulate(equity)
    drawdown = 1.0 - equity / peak
    return AccountCurve(
        time=times,
        equity=equity,
        drawdown=drawdown,
        open_positions=total,
        in_trade=np.cumsum(in_trade)[:n] > 0,
        marks=marks,
    )
