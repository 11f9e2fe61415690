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

from typing import Final, Literal, cast

from engine.core.candles import Candles
from engine.core.timeframes import iso, timeframe_ms
from engine.service.errors import MarketDataStale, MarketDataUnavailable

StalePolicy = Literal["reject", "warn"]
STALE_POLICIES: Final[tuple[str, ...]] = ("reject", "warn")
MAX_AGE_BARS: Final = 2


def parse_stale_policy(value: str) -> StalePolicy:
    policy = value.strip().lower()
    if policy not in STALE_POLICIES:
        raise ValueError(
            f"STALE_DATA_POLICY must be one of {', '.join(STALE_POLICIES)}, not {value!r}"
        )
    return cast(StalePolicy, policy)


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
