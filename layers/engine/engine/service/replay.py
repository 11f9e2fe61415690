"""Replay: the live evaluation run bar by bar over history, from an empty execution state.

Nothing here decides anything: each bar is one call of `engine.core.evaluate.evaluate`, the
very function the Lambdas call, with the clock set to the moment that bar closed and the
state the previous call left. One `MarketData` holds the whole history, so every indicator
is computed once; that is sound because indicators are causal and `evaluate` reads values
only up to the newest closed bar (the tests check this against growing `Candles.head`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from engine.core.candles import Candles
from engine.core.evaluate import CompiledStrategy, compile_strategy, evaluate
from engine.core.market import MarketData
from engine.core.prepass import Prepass, plan
from engine.core.state import (
    ClosedTrade,
    EvaluationResult,
    ExecutionState,
    Order,
    Position,
    Warning,
)
from engine.core.strategy import Strategy
from engine.core.timeframes import iso, open_offset_ms, timeframe_ms, to_ms

# The fields of a closed trade a replay reports (DIR/trades.json), in this order.
TRADE_FIELDS: tuple[str, ...] = (
    "asset",
    "side",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "quantity",
    "pnl",
    "exit_reason",
)
_TRADE_INCLUDE = set(TRADE_FIELDS)
# the serializer writes fields in the model's order: TRADE_FIELDS must follow it
assert [f for f in ClosedTrade.model_fields if f in _TRADE_INCLUDE] == list(TRADE_FIELDS)

# A progress bar appears only once a run has taken this long, so short runs print nothing.
PROGRESS_DELAY_S = 1.0


@dataclass(frozen=True)
class CooldownTrip:
    """A cooldown tier tripped on `asset` at bar `bar_ms`: entries blocked there and for
    `blocked_bars` bars after it (of the asset's candles)."""

    asset: str
    bar_ms: int
    blocked_bars: int
    tier: str | None


@dataclass
class ReplayResult:
    strategy_id: str
    asset: str  # the asset replayed; several joined by ", " for an account of several
    timeframe: str
    bars: int  # bars replayed: distinct bar times within the window, over every asset
    trades: list[ClosedTrade] = field(default_factory=list)  # in the order they closed
    orders: list[Order] = field(default_factory=list)  # each in its final status, by creation
    open_positions: list[Position] = field(default_factory=list)  # still open after the last bar
    warnings: list[Warning] = field(default_factory=list)  # distinct, in order of first sight
    warning_counts: dict[str, int] = field(default_factory=dict)  # per code, over all bars
    final_state: ExecutionState | None = None
    elapsed_s: float = 0.0
    # What a report needs besides the trades: each asset's candles up to the window's end
    # (warm-up bars included), the first replayed bar's time, the market the strategy was
    # evaluated on (its indicator frames) and the cooldown trips in the order they happened.
    assets: list[str] = field(default_factory=list)
    candles: dict[str, Candles] = field(default_factory=dict)
    start_ms: int = 0
    compiled: CompiledStrategy | None = None
    market: MarketData | None = None
    cooldown_trips: list[CooldownTrip] = field(default_factory=list)
    # every position of the replay in its last version (closed ones keep their stop/target)
    positions: dict[str, Position] = field(default_factory=dict)
    # log records of the engine during the replay, counted instead of emitted bar after bar
    # (their facts also arrive as `warnings`): (logger, level, message) -> times
    log_counts: dict[tuple[str, int, str], int] = field(default_factory=dict)

    @property
    def total_pnl(self) -> float:
        return float(sum(trade.pnl for trade in self.trades))

    def trade_lines(self) -> list[str]:
        """Each closed trade as one JSON object of exactly TRADE_FIELDS, in that order (times
        ISO UTC). pydantic's serializer writes it straight from the model: dumping to dicts
        and then through `json` took five times as long, a tenth of a long replay's run."""
        serialize = ClosedTrade.__pydantic_serializer__.to_json
        return [serialize(t, include=_TRADE_INCLUDE).decode() for t in self.trades]

    def order_lines(self) -> list[str]:
        """Each order as one JSON object, every field (times ISO UTC)."""
        serialize = Order.__pydantic_serializer__.to_json
        return [serialize(order).decode() for order in self.orders]


def replay(
    strategy: Strategy,
    candles: Candles | Mapping[str, Candles],
    asset: str | None = None,
    progress: bool = True,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    skip_quiet: bool = True,
) -> ReplayResult:
    """Evaluate `strategy` at every bar of `candles`, in time order, from an empty state.

    `candles` is one asset's history (`asset` names it; it may be omitted when the strategy
    has a single asset) or a mapping asset -> history holding every asset of the strategy,
    replayed as one account: the strategy is evaluated at the close of every bar of any
    asset. `start_ms` and `end_ms` bound the replayed bars by open time (inclusive); bars
    before `start_ms` still feed the indicators (warm-up), bars after `end_ms` are dropped.
    The candles must be of the strategy's timeframe (gaps are fine: a closed market simply
    has no bars). With `skip_quiet`, bars that `engine.core.prepass` proves quiet are passed
    over (their warnings counted as every quiet bar's); without, every bar is evaluated.
    """
    if isinstance(candles, Candles):
        chosen = pick_asset(strategy, asset)
        histories = {chosen: candles}
        # Evaluate the chosen asset only: the history holds no other asset's candles.
        single = (
            strategy
            if strategy.assets == [chosen]
            else strategy.model_copy(update={"assets": [chosen]})
        )
    else:
        missing = [a for a in strategy.assets if a not in candles]
        if missing:
            raise ValueError(f"no candles for {', '.join(missing)}")
        histories = {a: candles[a] for a in strategy.assets}
        single = strategy
    step = timeframe_ms(strategy.timeframe)
    for name, history in list(histories.items()):
        if end_ms is not None:
            history = history.head(int(np.searchsorted(history.time, end_ms, side="right")))
            histories[name] = history
        if len(history) == 0:
            raise ValueError(f"no candles to replay{_for(name, histories)}")
        _check_spacing(history, strategy.timeframe, _for(name, histories))
    if len(histories) == 1:  # increasing already (the spacing check)
        times = next(iter(histories.values())).time
    else:
        times = np.unique(np.concatenate([h.time for h in histories.values()]))
    if start_ms is not None:
        times = times[times >= start_ms]
    if len(times) == 0:
        raise ValueError("no candles between --from and --to")

    compiled: CompiledStrategy = compile_strategy(single)
    market = MarketData({(a, strategy.timeframe): h for a, h in histories.items()})
    state = ExecutionState(strategy_id=strategy.strategy_id)

    trades: list[ClosedTrade] = []
    orders: dict[str, Order] = {}
    warnings: dict[tuple[str, str], Warning] = {}
    counts: dict[str, int] = {}
    trips: list[CooldownTrip] = []
    positions: dict[str, Position] = {}
    label = ", ".join(histories)
    started = time.perf_counter()
    closes = times + step  # the moment each bar closes: evaluate sees it as bar t
    with (
        _counted_logs() as log_counts,
        tqdm(
            total=len(times),
            disable=not progress,
            delay=PROGRESS_DELAY_S,
            file=sys.stderr,
            unit="bar",
            desc=f"replay {strategy.strategy_id} {label}",
            mininterval=0.25,
            leave=True,
        ) as bar,
    ):
        prepass = _prepass(compiled, market, histories, times) if skip_quiet else None
        # What a quiet bar warns and logs, with and without open positions: taken from the
        # first quiet bar evaluated, then counted once more for each quiet bar passed over.
        quiet: dict[bool, tuple[list[Warning], dict[tuple[str, int, str], int]]] = {}
        k, total = 0, len(closes)
        while k < total:
            logged: dict[tuple[str, int, str], int] | None = None  # set: k is a quiet bar
            held = bool(state.positions)
            if prepass is not None:
                plan_, offset = prepass
                upto = min(plan_.next_event(k + offset, state.positions) - offset, total)
                if upto > k and held in quiet:
                    _count_quiet(quiet[held], upto - k, warnings, counts, log_counts)
                    bar.update(upto - k)
                    k = upto
                    continue
                if upto > k:
                    logged = dict(log_counts)
            result = evaluate(compiled, state, market, int(closes[k]))
            if logged is not None:
                quiet[held] = (
                    list(result.warnings),
                    {key: c - logged.get(key, 0) for key, c in log_counts.items()},
                )
            state = result.state
            trades.extend(result.closed_trades)
            for order in result.orders:
                orders[order.order_id] = order  # first sight fixes the place, last version wins
            for warning in result.warnings:
                warnings.setdefault((warning.code, warning.message), warning)
                counts[warning.code] = counts.get(warning.code, 0) + 1
            for position in result.changes.positions:
                positions[position.position_id] = position
            if result.changes.cooldowns:
                trips.extend(_trips(result))
            bar.update()
            k += 1

    return ReplayResult(
        strategy_id=strategy.strategy_id,
        asset=label,
        timeframe=strategy.timeframe,
        bars=len(times),
        trades=trades,
        orders=list(orders.values()),
        open_positions=list(state.positions),
        warnings=list(warnings.values()),
        warning_counts=counts,
        final_state=state,
        elapsed_s=time.perf_counter() - started,
        assets=list(histories),
        candles=histories,
        start_ms=int(times[0]),
        compiled=compiled,
        market=market,
        cooldown_trips=trips,
        positions=positions,
        log_counts=log_counts,
    )


def _count_quiet(
    template: tuple[list[Warning], dict[tuple[str, int, str], int]],
    bars: int,
    warnings: dict[tuple[str, str], Warning],
    counts: dict[str, int],
    log_counts: dict[tuple[str, int, str], int],
) -> None:
    """Account for `bars` quiet bars passed over: each warns and logs what `template` did."""
    raised, logs = template
    for warning in raised:
        warnings.setdefault((warning.code, warning.message), warning)
        counts[warning.code] = counts.get(warning.code, 0) + bars
    for key, times in logs.items():
        if times:
            log_counts[key] = log_counts.get(key, 0) + times * bars


def _prepass(
    compiled: CompiledStrategy,
    market: MarketData,
    histories: Mapping[str, Candles],
    times: np.ndarray,
) -> tuple[Prepass, int] | None:
    """The pre-pass of a single-asset replay and the index of its first replayed bar."""
    if len(histories) != 1:
        return None
    ((asset, candles),) = histories.items()
    found = plan(compiled, market.frame(compiled.strategy, asset), asset, candles)
    if found is None:
        return None
    return found, int(np.searchsorted(candles.time, int(times[0])))


class _CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[tuple[str, int, str], int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = (record.name, record.levelno, record.getMessage())
        self.counts[key] = self.counts.get(key, 0) + 1


@contextmanager
def _counted_logs() -> Iterator[dict[tuple[str, int, str], int]]:
    """Count the engine's log records instead of letting each bar print its own copy (a
    deprecation warning would otherwise appear once per bar)."""
    logger = logging.getLogger("engine")
    handler = _CountingHandler()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.counts
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _trips(result: EvaluationResult) -> list[CooldownTrip]:
    """Cooldowns this evaluation tripped: a changed cooldown whose trip is at one of its exits
    (the same rule as the CooldownTrips metric)."""
    exits = {(t.asset, t.exit_time) for t in result.closed_trades}
    return [
        CooldownTrip(c.asset, to_ms(c.tripped_at), c.blocked_bars, c.tier)
        for c in result.changes.cooldowns
        if c.tripped_at is not None and (c.asset, c.tripped_at) in exits
    ]


def _for(asset: str, histories: Mapping[str, Candles]) -> str:
    return f" for {asset}" if len(histories) > 1 else ""


def pick_asset(strategy: Strategy, asset: str | None) -> str:
    """The asset a single-asset history belongs to; a ValueError explains a wrong choice."""
    if asset is None:
        if len(strategy.assets) == 1:
            return strategy.assets[0]
        raise ValueError(
            f"strategy {strategy.strategy_id} has several assets ({', '.join(strategy.assets)}): "
            "choose the one the candles hold (--asset)"
        )
    if asset not in strategy.assets:
        raise ValueError(
            f"asset {asset!r} is not one of strategy {strategy.strategy_id}'s assets "
            f"({', '.join(strategy.assets)})"
        )
    return asset


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _check_spacing(history: Candles, timeframe: str, where: str) -> None:
    """Candles of exactly the strategy's timeframe: every time opens one of its bars, and the
    closest two are one bar apart. Finer bars would overlap; coarser ones would silently
    stretch every bar-counted rule (max_hold_bars, cooldown windows) by the ratio."""
    step = timeframe_ms(timeframe)
    misaligned = (history.time - open_offset_ms(timeframe)) % step != 0
    if misaligned.any():
        when = iso(int(history.time[int(np.argmax(misaligned))]))
        raise ValueError(
            f"a candle{where} opens at {when}, which is not the open of a {timeframe} bar: "
            f"replay needs {timeframe} candles"
        )
    if len(history) > 1:
        spacing = int(np.diff(history.time).min())
        if spacing != step:
            kind, place = (
                ("finer", "somewhere") if spacing < step else ("coarser", "at the closest")
            )
            raise ValueError(
                f"candles{where} are {_duration(spacing)} apart {place}, {kind} than the "
                f"strategy's timeframe {timeframe}: replay needs {timeframe} candles"
            )
