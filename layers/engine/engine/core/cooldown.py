"""Loss-streak cooldowns (DESIGN §5): tiers, the legacy flat keys, and their bookkeeping.

Distances are counted in candles of the primary timeframe, by index into the candles the
market data has, so closed markets add no bars and missed evaluations lose none.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from engine.core.candles import IntArray
from engine.core.state import CooldownState, CooldownStatus, LossRecord, assemble
from engine.core.strategy import ExecutionConfig
from engine.core.timeframes import DAY_MS, WEEK_MS, bars_in, timeframe_ms, to_datetime, to_ms

DEPRECATED_COOLDOWN_KEYS = ("cooldown_bars", "daily_momentum_limit", "weekly_momentum_limit")


@dataclass(frozen=True, slots=True)
class Tier:
    name: Literal["short", "long"]
    loss_limit: int
    window_bars: int
    block_bars: int  # entries blocked at the tripping bar and this many bars after it


@dataclass(frozen=True, slots=True)
class CooldownRules:
    tiers: tuple[Tier, ...]
    legacy: bool

    @property
    def longest_window(self) -> int:
        return max((max(t.window_bars, t.block_bars) for t in self.tiers), default=0)


def cooldown_rules(config: ExecutionConfig, timeframe: str) -> CooldownRules:
    """The tiers that apply on `timeframe`: cooldown_config first, else the legacy keys."""
    entry = (config.cooldown_config or {}).get(timeframe)  # type: ignore[call-overload]
    if entry is not None:
        tiers = [
            Tier("short", entry.short_loss_limit, entry.short_window_bars, entry.short_window_bars),
            Tier("long", entry.long_loss_limit, entry.long_window_bars, entry.long_window_bars),
        ]
        return CooldownRules(
            tuple(t for t in tiers if t.loss_limit > 0 and t.window_bars > 0), False
        )

    legacy = any(getattr(config, key) is not None for key in DEPRECATED_COOLDOWN_KEYS)
    if not legacy:
        return CooldownRules((), False)
    day = bars_in(DAY_MS, timeframe)
    week = bars_in(WEEK_MS, timeframe)
    block = config.cooldown_bars
    tiers = []
    if config.daily_momentum_limit is not None:
        tiers.append(Tier("short", config.daily_momentum_limit, day, block or day))
    if config.weekly_momentum_limit is not None:
        tiers.append(Tier("long", config.weekly_momentum_limit, week, block or week))
    if not tiers and block is not None:
        tiers.append(Tier("short", 1, block, block))  # a pause after every loss
    return CooldownRules(tuple(tiers), True)


def deprecation_message(config: ExecutionConfig, timeframe: str) -> str:
    used = [key for key in DEPRECATED_COOLDOWN_KEYS if getattr(config, key) is not None]
    return (
        f"execution_config uses the deprecated flat cooldown keys {', '.join(used)}; "
        f"move them to execution_config.cooldown_config[{timeframe!r}] "
        "(short_loss_limit, short_window_bars, long_loss_limit, long_window_bars)"
    )


def bar_index(times: IntArray, time_ms: int) -> int | None:
    """Index of the candle that opened at `time_ms`; None when it lies before the first one.

    A time between two candles (a bar the data no longer has) maps to the candle before it.
    The service fetches every cooldown window's worth of bars before the earliest bar an
    evaluation processes, so a loss or a trip before the first candle is outside every
    window and past every block, whatever length of history the provider returned.
    """
    pos = int(times.searchsorted(time_ms, side="right")) - 1
    return pos if pos >= 0 else None


def _blocked_until(state: CooldownState, times: IntArray) -> int | None:
    """Bar index up to which the state's trip blocks entries; None when nothing blocks."""
    if state.tripped_at is None:
        return None
    tripped = bar_index(times, to_ms(state.tripped_at))
    return None if tripped is None else tripped + state.blocked_bars


def record_losses(
    state: CooldownState,
    rules: CooldownRules,
    times: IntArray,
    losses: list[tuple[int, str]],
    t: int,
) -> CooldownState:
    """Add losing exits (bar index, position id), checking the tiers at each, in time order."""
    records = list(state.losses)
    tripped_at, blocked, tier_name = state.tripped_at, state.blocked_bars, state.tier
    until = _blocked_until(state, times)
    for exit_index, position_id in sorted(losses):
        records.append(
            LossRecord(exit_time=to_datetime(int(times[exit_index])), position_id=position_id)
        )
        loss_indices = [bar_index(times, to_ms(r.exit_time)) for r in records]
        for tier in rules.tiers:
            lower = exit_index - tier.window_bars
            count = sum(1 for i in loss_indices if i is not None and lower < i <= exit_index)
            if count < tier.loss_limit:
                continue
            candidate = exit_index + tier.block_bars
            if until is None or candidate > until or (candidate == until and tier.name == "long"):
                until = candidate
                tripped_at = to_datetime(int(times[exit_index]))
                blocked, tier_name = tier.block_bars, tier.name
    keep_after = t - max(rules.longest_window, 1)
    records = [
        r
        for r in records
        if (i := bar_index(times, to_ms(r.exit_time))) is not None and i > keep_after
    ]
    return CooldownState(
        asset=state.asset,
        losses=records,
        tripped_at=tripped_at,
        blocked_bars=blocked,
        tier=tier_name,
    )


@lru_cache(maxsize=1024)  # bounded: assets come from users
def _inactive(asset: str) -> CooldownStatus:
    """The status of an asset with no cooldown: one (frozen) object however many evaluations
    report it, a bulk run's thousands included."""
    return assemble(CooldownStatus, asset=asset, active=False)


def status_at(
    state: CooldownState | None, asset: str, times: IntArray, t: int, timeframe: str
) -> CooldownStatus:
    """Whether entries are blocked at bar index t, and until which bar."""
    until_index = None if state is None else _blocked_until(state, times)
    if state is None or until_index is None or t > until_index:
        return _inactive(asset)
    # Bars after t are not known yet (and must not be looked at): project on the clock.
    until_ms = int(times[t]) + (until_index - t) * timeframe_ms(timeframe)
    return CooldownStatus(
        asset=asset,
        active=True,
        tier=state.tier,
        until=to_datetime(until_ms),
        remaining_bars=until_index - t + 1,
    )
