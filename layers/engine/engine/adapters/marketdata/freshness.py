"""Is the newest closed bar recent enough to decide on?

Definitions (DESIGN §4, §6), with `tf` the timeframe in milliseconds:

- a bar opened at T closes at T + tf; bars whose close is after `now_ms` are still forming
  and ignored here, exactly as the evaluation ignores them;
- the newest closed bar is the last bar with T + tf <= now_ms; its *age* is
  now_ms - (T + tf), the time since it closed;
- the data is **stale** when that age is more than two timeframes: age > 2 * tf. In normal
  operation the age is below one timeframe; an age of exactly 2 * tf is still fresh, one
  millisecond more is stale.

With policy `reject` stale data raises MarketDataStale (HTTP 503, no decision); with `warn`
the caller gets a warning message and proceeds.
"""

from __future__ import annotations

from typing import Final

from engine.core.candles import Candles
from engine.core.timeframes import iso, timeframe_ms
from engine.service.errors import MarketDataStale, MarketDataUnavailable
from engine.settings import STALE_POLICIES, StalePolicy, parse_stale_policy

__all__ = ["MAX_AGE_BARS", "STALE_POLICIES", "StalePolicy", "check_freshness", "parse_stale_policy"]

MAX_AGE_BARS: Final = 2


def _iso(time_ms: int) -> str:
    return iso(time_ms)


def check_freshness(
    candles: Candles,
    timeframe: str,
    now_ms: int,
    policy: StalePolicy | str,
    *,
    asset: str = "?",
) -> list[str]:
    """Warnings about the age of `candles` at `now_ms` (empty when fresh).

    Raises MarketDataUnavailable when no bar has closed by `now_ms`, and MarketDataStale
    when the newest closed bar is stale (see the module docstring) and `policy` is reject.
    """
    checked = parse_stale_policy(policy)
    step = timeframe_ms(timeframe)
    closed = candles.closed_count(timeframe, now_ms)
    if closed == 0:
        raise MarketDataUnavailable(
            f"no closed {timeframe} bar for {asset} at {_iso(now_ms)} "
            f"({len(candles)} bars returned, none closed by then)",
            details=[{"asset": asset, "timeframe": timeframe}],
        )
    last_open = int(candles.time[closed - 1])
    age_ms = now_ms - (last_open + step)
    if age_ms <= MAX_AGE_BARS * step:
        return []
    age_bars = age_ms // step
    message = (
        f"market data for {asset} {timeframe} is stale: the newest closed bar opened at "
        f"{_iso(last_open)} and closed {'' if age_ms % step == 0 else 'more than '}"
        f"{age_bars} bars ({age_ms // 1000} s) before {_iso(now_ms)}; data more than "
        f"{MAX_AGE_BARS} bars old is stale"
    )
    if checked == "reject":
        raise MarketDataStale(
            message,
            details=[
                {
                    "asset": asset,
                    "timeframe": timeframe,
                    "last_bar": _iso(last_open),
                    "age_bars": str(age_bars),
                }
            ],
        )
    return [message]
