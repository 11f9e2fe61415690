"""The small interfaces the service layer needs from the outside world.

Adapters implement them: DynamoDB (PynamoDB) for storage, DynamoDB/ccxt/files for market
data, and in-memory fakes in tests. The core never sees any of them.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.core.candles import Candles
from engine.core.state import Changes, ExecutionState
from engine.core.strategy import Strategy
from engine.service.errors import EngineError


@dataclass(frozen=True)
class EvaluatedBar:
    """The bar an evaluation was at, and when the schedule is to evaluate the strategy next:
    the close of the following bar (by the clock), so that due = a newer bar has closed."""

    bar_ms: int
    next_due_ms: int


class StrategyRepository(Protocol):
    def get(self, strategy_id: str) -> Strategy | None: ...

    def get_many(self, strategy_ids: Sequence[str]) -> dict[str, Strategy]:
        """Batched read; ids that do not exist are simply absent from the answer."""
        ...

    def put(self, strategy: Strategy) -> None: ...

    def list(self, *, status: str | None = None, timeframe: str | None = None) -> list[Strategy]:
        """Strategies with this status (and primary timeframe), sorted by id."""
        ...

    def due(self, now_ms: int) -> builtins.list[Strategy]:
        """Active strategies whose next due time is at or before `now_ms`, sorted by id: those
        never evaluated, and those a newer bar of whose timeframe has closed since the bar
        they were last evaluated at. Found without reading the others."""
        ...


class StateRepository(Protocol):
    """The unit of work over execution state: load many states, commit one atomically."""

    def load(self, strategies: Sequence[Strategy]) -> dict[str, ExecutionState]:
        """States (open positions, their open orders, cooldowns, version) in batched reads."""
        ...

    def commit(
        self, state: ExecutionState, changes: Changes, evaluated: EvaluatedBar | None = None
    ) -> int:
        """Write `changes` in one transaction conditioned on `state.version`, recording the
        `evaluated` bar in the same transaction; return the new version. Raises
        ConcurrentEvaluation when another commit moved the version first. Writes nothing at
        all when `changes` is empty (a quiet evaluation's bar goes to `record_bars`)."""
        ...

    def record_bars(
        self, evaluated: Sequence[tuple[ExecutionState, EvaluatedBar]]
    ) -> Mapping[str, EngineError]:
        """Record the bars of quiet evaluations (no changes), each only while its strategy is
        still at `state.version` and has no newer bar recorded: a state someone else moved
        on stays due. Returns the strategies whose bar could not be written, by id, with why;
        a bar that lost to another evaluation is not a failure."""
        ...


class CandleRepository(Protocol):
    def put(self, asset: str, timeframe: str, candles: Candles) -> int:
        """Upsert candles by open time; returns how many were written."""
        ...

    def latest(
        self, asset: str, timeframe: str, limit: int, *, closed_by_ms: int | None = None
    ) -> Candles:
        """The newest `limit` candles, oldest first; with `closed_by_ms`, the newest that had
        closed by then (what an evaluation at that time could see)."""
        ...


class MarketDataProvider(Protocol):
    """Closed candles for (asset, timeframe): the newest `bars` (or more) closed by `now_ms`,
    fewer only when the source has no more. Never a bar still forming at `now_ms`, nor one
    from after it. Raises MarketDataUnavailable when the source fails.
    """

    def fetch(self, asset: str, timeframe: str, bars: int, now_ms: int) -> Candles: ...
