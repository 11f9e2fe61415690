"""The figures of stats.json, each computed as backtesting.py 0.6.6 computes the figure of the
same name (`backtesting/_stats.py: compute_stats`), on the replay's trades and equity curve.

Pure numpy, so the engine needs neither pandas nor backtesting.py; docs/report.md states every
formula and tests/unit/test_report_vs_backtesting.py checks the numbers against backtesting.py
itself. A figure that backtesting.py leaves NaN or infinite (no trades, no losing trade, too
few days) is None here (`null` in JSON).

Conventions of backtesting.py kept on purpose, so that the numbers compare:
- a trade's return is its PnL (fees included) over its entry notional (entry price · quantity);
- "Avg. Trade" is the geometric mean of trade returns, "Expectancy" the arithmetic one;
- daily returns are the last equity of each calendar day (UTC) that has bars, compounded to
  a year of 365 days when weekends carry at least 60 % of their share of bars, else 252
  (weekly bars: 52 weeks);
- durations are rounded up to the resolution of the bars' typical spacing (an hour for hourly
  bars, a day for daily ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.candles import FloatArray, IntArray
from engine.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS, iso

_SECOND_MS = 1000
# Timedelta.resolution_string's units, largest first (pandas ceils to the smallest unit that
# the spacing of the bars has a non-zero component of).
_RESOLUTIONS = (DAY_MS, HOUR_MS, MINUTE_MS, _SECOND_MS, 1)


@dataclass(frozen=True)
class TradeFigures:
    """One closed trade as the statistics see it."""

    entry_ms: int
    exit_ms: int
    pnl: float  # fees included
    return_: float  # pnl / (entry price · quantity), a fraction
    fees: float


def figures(
    time: IntArray,
    equity: FloatArray,
    drawdown: FloatArray,
    in_trade: npt.NDArray[np.bool_],
    trades: Sequence[TradeFigures],
    capital: float,
    buy_and_hold_return_pct: float | None,
) -> dict[str, Any]:
    """Every figure of DESIGN §10 that backtesting.py defines, in stats.json's order."""
    n = len(time)
    period = _bar_period(time)
    resolution = _resolution(period)

    def rounded(ms: float | None) -> str | None:
        if ms is None or not math.isfinite(ms):
            return None
        return iso_duration(_ceil(ms, resolution))

    durations, peaks = drawdown_periods(time, drawdown)
    day_returns, annual_days = daily_returns(time, equity, period)
    gmean_day = geometric_mean(day_returns)
    with np.errstate(all="ignore"):  # numpy's overflow to inf and sqrt(<0) = NaN, as upstream
        growth = np.float64(1 + gmean_day)
        annualized = float(growth**annual_days - 1)
        variance = np.var(day_returns, ddof=1) if len(day_returns) > 1 else np.float64(np.nan)
        volatility = float(
            np.sqrt((variance + growth**2) ** annual_days - growth ** (2 * annual_days))
        )
    downside = (
        math.sqrt(float(np.mean(np.minimum(day_returns, 0.0) ** 2))) * math.sqrt(annual_days)
        if len(day_returns)
        else math.nan
    )
    max_dd = float(np.nan_to_num(drawdown.max())) if n else 0.0

    pnl = np.array([t.pnl for t in trades], dtype=np.float64)
    returns = np.array([t.return_ for t in trades], dtype=np.float64)
    trade_ms = np.array([t.exit_ms - t.entry_ms for t in trades], dtype=np.float64)
    count = len(trades)
    losses = float(abs(returns[returns < 0].sum()))
    pnl_std = float(np.std(pnl, ddof=1)) if count > 1 else math.nan

    return {
        "start": _iso(int(time[0])),
        "end": _iso(int(time[-1])),
        "duration": iso_duration(int(time[-1] - time[0])),
        "bars": n,
        "exposure_time_pct": float(np.mean(in_trade)) * 100 if n else None,
        "equity_final": float(equity[-1]),
        "equity_peak": float(equity.max()),
        "return_pct": (float(equity[-1]) - capital) / capital * 100,
        "buy_and_hold_return_pct": buy_and_hold_return_pct,
        "return_ann_pct": _finite(annualized * 100),
        "volatility_ann_pct": _finite(volatility * 100),
        "sharpe_ratio": _finite(_div(annualized * 100, volatility * 100)),
        "sortino_ratio": _finite(_div(annualized, downside)),
        "calmar_ratio": _finite(_div(annualized, max_dd)),
        "max_drawdown_pct": -max_dd * 100 if max_dd else 0.0,
        "avg_drawdown_pct": _finite(-float(np.mean(peaks)) * 100) if len(peaks) else None,
        "max_drawdown_duration": rounded(float(durations.max())) if len(durations) else None,
        "avg_drawdown_duration": rounded(float(durations.mean())) if len(durations) else None,
        "trades": count,
        "win_rate_pct": float(np.mean(pnl > 0)) * 100 if count else None,
        "best_trade_pct": float(returns.max()) * 100 if count else None,
        "worst_trade_pct": float(returns.min()) * 100 if count else None,
        "avg_trade_pct": _finite(geometric_mean(returns) * 100),
        "max_trade_duration": rounded(float(trade_ms.max())) if count else None,
        "avg_trade_duration": rounded(float(trade_ms.mean())) if count else None,
        "profit_factor": _finite(_div(float(returns[returns > 0].sum()), losses)),
        "expectancy_pct": float(returns.mean()) * 100 if count else None,
        "sqn": _finite(_div(math.sqrt(count) * float(pnl.mean()), pnl_std)) if count else None,
        "fees": float(sum(t.fees for t in trades)),
    }


# --- the pieces, each as backtesting.py computes it ----------------------------------------


def drawdown_periods(time: IntArray, drawdown: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Each drawdown's duration (ms) and depth (fraction), as `compute_drawdown_duration_peaks`.

    A drawdown runs from a bar at a peak (drawdown 0) to the next bar at a peak, or to the
    last bar when equity never recovers; its duration is the time between those two bars and
    its depth the largest drawdown between them. When equity falls only on the last bar there
    is no such period; backtesting.py then reports the depths of every bar under water and
    no duration, and so does this.
    """
    n = len(drawdown)
    # the bars at a peak, then the last bar, once: flatnonzero's indices are sorted and below
    # n (np.unique would hash 200,000 indices to learn the same: most of a report's stats)
    peaks = np.flatnonzero(drawdown == 0)
    at_peak = peaks if len(peaks) and peaks[-1] == n - 1 else np.r_[peaks, n - 1]
    prev, cur = at_peak[:-1], at_peak[1:]
    keep = cur > prev + 1
    prev, cur = prev[keep], cur[keep]
    if len(prev) == 0:
        under = drawdown[(drawdown != 0) & ~np.isnan(drawdown)]
        return np.empty(0), under.astype(np.float64)
    durations = (time[cur] - time[prev]).astype(np.float64)
    depths = np.array([drawdown[p : c + 1].max() for p, c in zip(prev, cur, strict=True)])
    return durations, depths


def daily_returns(time: IntArray, equity: FloatArray, period_ms: float) -> tuple[FloatArray, int]:
    """Returns between the last equities of consecutive calendar periods, and periods a year.

    The period is a day (a week for weekly bars, Monday to Sunday); a year is 365 days when
    the bars include weekends (at least 60 % of the 2/7 share a 7-day market has), else 252.
    """
    freq_days = int(period_ms // DAY_MS) if math.isfinite(period_ms) else 0
    days = time // DAY_MS
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    have_weekends = float(np.mean(weekday >= 5)) > 2 / 7 * 0.6
    if freq_days == 7:
        annual, bucket = 52, (days + 3) // 7  # weeks ending on Sunday
    else:
        annual, bucket = (365 if have_weekends else 252), days
    last = np.flatnonzero(np.r_[bucket[1:] != bucket[:-1], True])
    closes = equity[last]
    return closes[1:] / closes[:-1] - 1, annual


def geometric_mean(returns: FloatArray) -> float:
    """exp(mean(log(1 + r))) - 1; 0 when any 1 + r ≤ 0, NaN without returns."""
    if len(returns) == 0:
        return math.nan
    growth = np.nan_to_num(returns, nan=0.0) + 1
    if np.any(growth <= 0):
        return 0.0
    return float(np.exp(np.log(growth).sum() / len(growth)) - 1)


def first_defined_bar(series: Sequence[FloatArray]) -> int:
    """backtesting.py's indicator warm-up: the latest first-defined index among the series
    (a series never defined counts 0, as numpy's argmin of all-True does)."""
    found = 0
    for values in series:
        if len(values):
            found = max(found, int(np.argmin(np.isnan(values))))
    return found


def buy_and_hold_pct(close: FloatArray, first_bar: int) -> float | None:
    """(last close - close at the first bar with every indicator defined) / that close."""
    if len(close) == 0 or first_bar >= len(close):
        return None
    start = float(close[first_bar])
    return _finite((float(close[-1]) - start) / start * 100)


# --- helpers -------------------------------------------------------------------------------


def _bar_period(time: IntArray) -> float:
    """The bars' typical spacing: the median gap over the last 100 bars (backtesting.py's)."""
    gaps = np.diff(time[-100:])
    return float(np.median(gaps)) if len(gaps) else math.nan


def _resolution(period_ms: float) -> int:
    if not math.isfinite(period_ms) or period_ms <= 0:
        return 1
    for unit in _RESOLUTIONS:
        if period_ms % unit == 0:
            return unit
    return 1


def _ceil(ms: float, unit: int) -> int:
    return math.ceil(ms / unit) * unit


def _div(a: float, b: float) -> float:
    """a / (b or NaN): backtesting.py's guard against dividing by zero."""
    if b == 0 or not math.isfinite(b):
        return math.nan if b == 0 or math.isnan(b) else a / b
    return a / b


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _iso(ms: int) -> str:
    return iso(ms)


def iso_duration(ms: int) -> str:
    """ISO 8601 duration in days, hours, minutes and seconds: P3DT4H, PT15M, PT0S."""
    seconds, millis = divmod(int(ms), 1000)
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    out = f"P{days}D" if days else "P"
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if seconds or millis:
        clock += f"{seconds}.{millis:03d}S" if millis else f"{seconds}S"
    if clock:
        out += "T" + clock
    return out if out != "P" else "PT0S"
