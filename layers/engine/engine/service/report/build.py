"""The replay report as a service over a replay's output: stats.json, equity.csv and the data
the HTML rendering and the terminal table read. Pure: numpy over `ReplayResult`, plus two
writers that take a path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import numpy as np
from pydantic_core import to_json

from engine.core.candles import Candles, FloatArray, IntArray
from engine.core.indicators import function_info
from engine.core.state import ExitReason, Position
from engine.core.timeframes import to_ms
from engine.service.replay import ReplayResult
from engine.service.report.account import AccountCurve, account_curve
from engine.service.report.stats import (
    TradeFigures,
    buy_and_hold_pct,
    figures,
    first_defined_bar,
)

DEFAULT_CAPITAL = 10_000.0
EQUITY_COLUMNS = ("time", "equity", "drawdown_pct", "open_positions")


@dataclass(frozen=True)
class Report:
    stats: dict[str, Any]  # stats.json, in its order
    curve: AccountCurve
    indicators: dict[str, dict[str, FloatArray]]  # per asset: "name" or "name.output" -> values
    first_bar: dict[str, int]  # per asset: index of its first replayed candle


def build_report(result: ReplayResult, capital: float = DEFAULT_CAPITAL) -> Report:
    """Everything stats.json reports, and the curves behind it, for one replay."""
    if not math.isfinite(capital) or capital <= 0:
        raise ValueError(f"capital must be a positive amount, got {capital}")
    compiled = result.compiled
    if compiled is None or result.market is None:
        raise ValueError("the replay result carries no strategy or market (not from replay())")
    strategy = compiled.strategy
    config = strategy.execution_config
    times = _replayed_times(result)
    curve = account_curve(
        times, result.candles, result.trades, result.open_positions, capital, config.fee_rate
    )

    first_bar: dict[str, int] = {}
    indicators: dict[str, dict[str, FloatArray]] = {}
    holds: list[float] = []
    for asset, history in result.candles.items():
        start = int(np.searchsorted(history.time, result.start_ms, side="left"))
        first_bar[asset] = start
        frame = result.market.frame(strategy, asset)
        series: dict[str, FloatArray] = {}
        for name, ind in strategy.indicators.items():
            outputs = function_info(ind.fn).outputs
            for out in outputs:
                series[name if len(outputs) == 1 else f"{name}.{out}"] = frame[f"{name}.{out}"]
        indicators[asset] = series
        warmup = first_defined_bar([values[start:] for values in series.values()])
        hold = buy_and_hold_pct(history.close[start:], warmup)
        if hold is not None:
            holds.append(hold)

    trades = [
        TradeFigures(
            entry_ms=to_ms(t.entry_time),
            exit_ms=to_ms(t.exit_time),
            pnl=t.pnl,
            return_=t.pnl / (t.entry_price * t.quantity),
            fees=t.fees,
        )
        for t in result.trades
    ]
    stats: dict[str, Any] = {"capital": capital}
    stats |= figures(
        curve.time,
        curve.equity,
        curve.drawdown,
        curve.in_trade,
        trades,
        capital,
        float(np.mean(holds)) if holds else None,
    )

    reasons: dict[str, dict[str, Any]] = {
        r: {"trades": 0, "pnl": 0.0} for r in get_args(ExitReason)
    }
    for t in result.trades:
        entry = reasons.setdefault(t.exit_reason, {"trades": 0, "pnl": 0.0})
        entry["trades"] += 1
        entry["pnl"] += t.pnl
    stats["by_exit_reason"] = reasons

    trips: dict[str, int] = dict.fromkeys(result.candles, 0)
    for trip in result.cooldown_trips:
        trips[trip.asset] = trips.get(trip.asset, 0) + 1
    blocked = {asset: _entries_blocked(result, asset, first_bar[asset]) for asset in result.candles}
    by_asset: dict[str, dict[str, Any]] = {}
    for asset in result.candles:
        pnl = [t.pnl for t in result.trades if t.asset == asset]
        by_asset[asset] = {
            "trades": len(pnl),
            "pnl": float(sum(pnl)),
            "win_rate_pct": sum(1 for p in pnl if p > 0) / len(pnl) * 100 if pnl else None,
            "cooldown_trips": trips.get(asset, 0),
            "entries_blocked_by_cooldown": blocked[asset],
        }
    stats["by_asset"] = by_asset
    stats["cooldown_trips"] = len(result.cooldown_trips)
    stats["entries_blocked_by_cooldown"] = sum(blocked.values())
    stats["open_positions"] = [
        _open_position(p, result.candles[p.asset]) for p in result.open_positions
    ]
    stats["unrealized_pnl"] = float(sum(p["unrealized_pnl"] for p in stats["open_positions"]))
    return Report(stats=stats, curve=curve, indicators=indicators, first_bar=first_bar)


def _replayed_times(result: ReplayResult) -> IntArray:
    histories = list(result.candles.values())
    times: IntArray = (
        histories[0].time
        if len(histories) == 1
        else np.unique(np.concatenate([h.time for h in histories]))
    )
    return times[int(np.searchsorted(times, result.start_ms, side="left")) :]


def _open_position(position: Position, history: Candles) -> dict[str, Any]:
    """A position still open after the last bar, marked at its asset's last close."""
    mark = float(history.close[-1])
    sign = -1.0 if position.side == "short" else 1.0
    fee = position.entry_fee * position.quantity / position.entered_quantity
    unrealized = sign * (mark - position.entry_price) * position.quantity - fee
    return {
        "position_id": position.position_id,
        "asset": position.asset,
        "side": position.side,
        "entry_time": position.model_dump(mode="json")["entry_time"],
        "entry_price": position.entry_price,
        "quantity": position.quantity,
        "stop_loss_price": position.stop_loss_price,
        "take_profit_price": position.take_profit_price,
        "mark_price": mark,
        "unrealized_pnl": unrealized,
    }


def _entries_blocked(result: ReplayResult, asset: str, first: int) -> int:
    """Bars at which the asset was in cooldown, the entry condition held and the asset had
    room for another position: entries the cooldown prevented.

    A trip at bar b blocking W bars blocks b..b+W (DESIGN §5); a later trip only extends
    that, so the blocked bars are the union of the trips' windows.
    """
    assert result.compiled is not None and result.market is not None
    history = result.candles[asset]
    n = len(history)
    blocked = np.zeros(n + 1, dtype=np.int64)
    for trip in result.cooldown_trips:
        if trip.asset != asset:
            continue
        b = int(np.searchsorted(history.time, trip.bar_ms, side="left"))
        blocked[b] += 1
        blocked[min(b + trip.blocked_bars + 1, n)] -= 1
    mask = np.cumsum(blocked)[:n] > 0
    mask[:first] = False
    if not mask.any():
        return 0
    # positions open at bar t after t's exits: entered before t, exiting after t (or never)
    held = np.zeros(n + 1, dtype=np.int64)
    # one span per position: a scale-out position is several trades, held to its last fill
    last_fill: dict[str, tuple[datetime, datetime | None]] = {}
    for t in result.trades:
        if t.asset == asset:
            _, seen = last_fill.get(t.position_id, (t.entry_time, t.exit_time))
            last_fill[t.position_id] = (t.entry_time, max(seen or t.exit_time, t.exit_time))
    for p in result.open_positions:
        if p.asset == asset:
            last_fill[p.position_id] = (p.entry_time, None)
    for entry_time, exit_time in last_fill.values():
        e = int(np.searchsorted(history.time, to_ms(entry_time), side="left")) + 1
        x = n if exit_time is None else int(np.searchsorted(history.time, to_ms(exit_time)))
        if x > e:
            held[e] += 1
            held[x] -= 1
    open_count = np.cumsum(held)[:n]
    strategy = result.compiled.strategy
    frame = result.market.frame(strategy, asset)
    limit = strategy.execution_config.max_open_positions
    sides = [p for p in (result.compiled.entry, result.compiled.short_entry) if p is not None]
    return sum(
        1
        for t in np.flatnonzero(mask).tolist()
        if open_count[t] < limit and any(entry(frame, t, set()) for entry in sides)
    )


# --- files ---------------------------------------------------------------------------------


def write_stats(path: Path, stats: dict[str, Any]) -> None:
    path.write_text(json.dumps(stats, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_equity_csv(path: Path, curve: AccountCurve) -> None:
    """time (bar open, ISO UTC), equity at its close, drawdown_pct (≤ 0), open_positions.

    Column by column rather than cell by cell: formatting 600,000 values one by one in
    Python was most of a long replay's report.
    """
    columns = zip(
        _iso_seconds(curve.time),
        _numbers(curve.equity),
        _numbers(-curve.drawdown * 100),
        map(str, curve.open_positions.tolist()),
        strict=True,
    )
    lines = [",".join(EQUITY_COLUMNS), *map(",".join, columns)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _numbers(values: FloatArray) -> list[str]:
    """Each value in its shortest round-trip form (-0.0 as 0.0), written by pydantic's
    serializer from the whole column at once."""
    if len(values) == 0:
        return []
    text = to_json((values + 0.0).tolist(), inf_nan_mode="constants").decode()
    return text[1:-1].split(",")


def _iso_seconds(times: IntArray) -> list[str]:
    """`YYYY-MM-DDTHH:MM:SSZ` of each millisecond time: each distinct day and time of day
    formatted once (a day of hourly bars shares one date, every day the same 24 times)."""
    day_ms = 86_400_000
    days, day_of = np.unique(times // day_ms, return_inverse=True)
    clocks, clock_of = np.unique(times % day_ms // 1000, return_inverse=True)
    dates = np.array(np.datetime_as_string(days.astype("datetime64[D]")).tolist(), dtype=object)
    hms = np.array(
        [f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in clocks.tolist()],
        dtype=object,
    )
    return list(dates[day_of.reshape(-1)] + hms[clock_of.reshape(-1)])
