"""Timeframes as the design fixes them, and conversions between bars and milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

Timeframe = Literal["1m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w"]

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
WEEK_MS: Final = 7 * DAY_MS

TIMEFRAME_MS: Final[dict[str, int]] = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "1w": WEEK_MS,
}

# Weekly bars open on Monday 00:00 UTC, as exchanges publish them; the epoch was a Thursday.
_WEEK_OFFSET_MS: Final = 4 * DAY_MS


def timeframe_ms(timeframe: str) -> int:
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise ValueError(
            f"unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAME_MS)}"
        ) from None


def open_offset_ms(timeframe: str) -> int:
    """Where bars of `timeframe` open relative to the epoch: weeks open on Monday."""
    return _WEEK_OFFSET_MS if timeframe == "1w" else 0


def bucket_start(time_ms: int, timeframe: str) -> int:
    """Open time of the `timeframe` bar that contains `time_ms`."""
    step = timeframe_ms(timeframe)
    offset = open_offset_ms(timeframe)
    return ((time_ms - offset) // step) * step + offset


def bars_in(span_ms: int, timeframe: str) -> int:
    """Whole bars of `timeframe` in a span, at least one (legacy cooldown windows)."""
    return max(1, span_ms // timeframe_ms(timeframe))


def to_datetime(time_ms: int) -> datetime:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC)


def iso(value: int | datetime, *, millis: bool = False) -> str:
    """A time as the engine writes it everywhere (messages, logs, files): ISO 8601, UTC, `Z`.
    With `millis`, always three decimals of seconds (the order events' fixed format)."""
    moment = to_datetime(value) if isinstance(value, int) else value.astimezone(UTC)
    if millis:
        ms = value % 1000 if isinstance(value, int) else moment.microsecond // 1000
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms:03d}Z"
    return moment.isoformat().replace("+00:00", "Z")


def to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)
