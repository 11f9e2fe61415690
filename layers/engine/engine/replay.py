"""Replay: the live evaluation run bar by bar over history, from an empty execution state.

Nothing here decides anything: each bar is one call of `engine.core.evaluate.evaluate`, the
very function the Lambdas call, with the clock set to the moment that bar closed and the
state the previous call left. One `MarketData` holds the whole history, so every indicator
is computed once; that is sound because indicators are causal and `evaluate` reads values
only up to the newest closed bar (the tests check this against growing `Candles.head`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from engine.core.candles import Candles
from engine.core.evaluate import CompiledStrategy, compile_strategy, evaluate
from engine.core.market import MarketData
from engine.core.state import ClosedTrade, ExecutionState, Order, Position, Warning
from engine.core.strategy import Strategy
from engine.core.timeframes import open_offset_ms, timeframe_ms, to_datetime

# The fields of a closed trade a replay reports (DIR/trades.json), in this order.
TRADE_FIELDS: tuple[str, ...] = (
    "asset",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "quantity",
    "pnl",
    "exit_reason",
)

# A progress bar appears only once a run has taken this long, so short runs print nothing.
PROGRESS_DELAY_S = 1.0


@dataclass
class ReplayResult:
    strategy_id: str
    asset: str
    timeframe: str
    bars: int
    trades: list[ClosedTrade] = field(default_factory=list)  # in the order they closed
    orders: list[Order] = field(default_factory=list)  # each in its final status, by creation
    open_positions: list[Position] = field(default_factory=list)  # still open after the last bar
    warnings: list[Warning] = field(default_factory=list)  # distinct, in order of first sight
    warning_counts: dict[str, int] = field(default_factory=dict)  # per code, over all bars
    final_state: ExecutionState | None = None
    elapsed_s: float = 0.0

    @property
    def total_pnl(self) -> float:
        return float(sum(trade.pnl for trade in self.trades))

    def trade_records(self) -> list[dict[str, Any]]:
        """One JSON-ready object per closed trade with exactly TRADE_FIELDS (times ISO UTC)."""
        include = set(TRADE_FIELDS)
        records = []
        for trade in self.trades:
            dumped = trade.model_dump(mode="json", include=include)
            records.append({key: dumped[key] for key in TRADE_FIELDS})
        return records

    def order_records(self) -> list[dict[str, Any]]:
        return [order.model_dump(mode="json") for order in self.orders]


def replay(
    strategy: Strategy,
    candles: Candles,
    asset: str | None = None,
    progress: bool = True,
) -> ReplayResult:
    """Evaluate `strategy` at every bar of `candles` (one asset's history), in time order.

    `asset` names the asset the candles belong to; it may be omitted when the strategy has a
    single asset. The candles must be of the strategy's timeframe (gaps are fine: a closed
    market simply has no bars).
    """
    chosen = pick_asset(strategy, asset)
    if len(candles) == 0:
        raise ValueError("no candles to replay")
    step = timeframe_ms(strategy.timeframe)
    misaligned = (candles.time - open_offset_ms(strategy.timeframe)) % step != 0
    if misaligned.any():
        when = to_datetime(int(candles.time[int(np.argmax(misaligned))])).isoformat()
        raise ValueError(
            f"a candle opens at {when}, which is not the open of a {strategy.timeframe} bar: "
            f"replay needs {strategy.timeframe} candles"
        )
    if len(candles) > 1:
        spacing = int(np.diff(candles.time).min())
        if spacing != step:
            # finer: bars would overlap; coarser: every bar-counted rule (max_hold_bars,
            # cooldown windows) would silently stretch by the ratio
            kind = "finer" if spacing < step else "coarser"
            raise ValueError(
                f"candles are {_duration(spacing)} apart {'somewhere' if kind == 'finer' else 'at the closest'}, "
                f"{kind} than the strategy's timeframe {strategy.timeframe}: replay needs "
                f"{strategy.timeframe} candles"
            )
    # Evaluate the chosen asset only: the history holds no other asset's candles.
    single = (
        strategy
        if strategy.assets == [chosen]
        else strategy.model_copy(update={"assets": [chosen]})
    )
    compiled: CompiledStrategy = compile_strategy(single)
    market = MarketData({(chosen, strategy.timeframe): candles})
    state = ExecutionState(strategy_id=strategy.strategy_id)

    trades: list[ClosedTrade] = []
    orders: dict[str, Order] = {}
    warnings: dict[tuple[str, str], Warning] = {}
    counts: dict[str, int] = {}
    started = time.perf_counter()
    closes = candles.time + step  # the moment each bar closes: evaluate sees it as bar t
    with tqdm(
        total=len(candles),
        disable=not progress,
        delay=PROGRESS_DELAY_S,
        file=sys.stderr,
        unit="bar",
        desc=f"replay {strategy.strategy_id} {chosen}",
        mininterval=0.25,
        leave=False,
    ) as bar:
        for now_ms in closes.tolist():
            result = evaluate(compiled, state, market, now_ms)
            state = result.state
            trades.extend(result.closed_trades)
            for order in result.orders:
                orders[order.order_id] = order  # first sight fixes the place, last version wins
            for warning in result.warnings:
                warnings.setdefault((warning.code, warning.message), warning)
                counts[warning.code] = counts.get(warning.code, 0) + 1
            bar.update()

    return ReplayResult(
        strategy_id=strategy.strategy_id,
        asset=chosen,
        timeframe=strategy.timeframe,
        bars=len(candles),
        trades=trades,
        orders=list(orders.values()),
        open_positions=list(state.positions),
        warnings=list(warnings.values()),
        warning_counts=counts,
        final_state=state,
        elapsed_s=time.perf_counter() - started,
    )


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
