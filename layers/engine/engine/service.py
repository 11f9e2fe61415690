"""The service layer: what the Lambda handlers and the CLI call.

It loads strategies and state through the repositories, fetches market data once per
(asset, timeframe), runs the pure core, and commits each strategy's changes atomically.
Failures are per strategy: one strategy's error never costs another its result.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from engine.core.cooldown import CooldownRules
from engine.core.evaluate import compile_strategy, evaluate
from engine.core.market import MarketData
from engine.core.state import EvaluationResult, ExecutionState, Position, Warning
from engine.core.strategy import STRATEGY_ID_PATTERN, Strategy, parse_strategy
from engine.core.timeframes import TIMEFRAME_MS, bucket_start, timeframe_ms, to_ms
from engine.deadline import has_time_for, in_this_context
from engine.errors import (
    OUT_OF_TIME,
    STEP_RESERVE_S,
    EngineError,
    InvalidRequest,
    NotDone,
    StrategyNotFound,
)
from engine.marketdata import StalePolicy, load_market
from engine.ports import MarketDataProvider, StateRepository, StrategyRepository, unique_pairs

logger = logging.getLogger("engine.service")

MAX_BULK_STRATEGIES = 500
_VALID_ID = re.compile(STRATEGY_ID_PATTERN)
# Strategies read together. DynamoDB's BatchGetItem takes 100 keys, so reading in slices of
# 100 costs no extra request and confines a failed read to the strategies it was for.
READ_SLICE = 100

Clock = Callable[[], int]
T = TypeVar("T")
R = TypeVar("R")


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, str]] = Field(default_factory=list)


class BulkFailure(BaseModel):
    strategy_id: str
    error: ErrorBody


class BulkSummary(BaseModel):
    requested: int
    succeeded: int
    failed: int
    pairs: int
    market_data_fetches: int
    indicator_computations: int
    duration_ms: int


class BulkResult(BaseModel):
    results: list[EvaluationResult | BulkFailure]
    summary: BulkSummary


@dataclass
class ExecutionService:
    strategies: StrategyRepository
    states: StateRepository
    market_data: MarketDataProvider
    stale_policy: StalePolicy = "reject"
    clock: Clock = wall_clock_ms
    max_bulk: int = MAX_BULK_STRATEGIES
    read_slice: int = READ_SLICE
    commit_workers: int = 1
    _history_margin: int = field(default=2, repr=False)

    # --- single evaluations ---------------------------------------------------------------

    def evaluate_by_id(self, strategy_id: str, *, persist: bool = True) -> EvaluationResult:
        strategy = self.strategies.get(strategy_id)
        if strategy is None:
            raise StrategyNotFound(f"no strategy with id {strategy_id!r}")
        return self._evaluate_one(strategy, persist=persist)

    def evaluate_draft(
        self, strategy: Strategy | Mapping[str, Any], positions: Sequence[Position] = ()
    ) -> EvaluationResult:
        """Evaluate a strategy object with optional open positions; never writes anything."""
        if not isinstance(strategy, Strategy):
            strategy = parse_strategy(strategy)
        now = self.clock()
        for position in positions:
            if position.asset not in strategy.assets:
                raise InvalidRequest(
                    f"position {position.position_id} is on {position.asset}, "
                    f"which the strategy does not trade"
                )
            if to_ms(position.entry_time) > now:
                raise InvalidRequest(
                    f"position {position.position_id} enters at {position.entry_time.isoformat()}, "
                    "after now: a position's entry_time is the open time of a past bar"
                )
        state = ExecutionState(
            strategy_id=strategy.strategy_id,
            positions=[p for p in positions if p.status == "open"],
        )
        return self._evaluate_one(strategy, persist=False, state=state)

    def _evaluate_one(
        self, strategy: Strategy, *, persist: bool, state: ExecutionState | None = None
    ) -> EvaluationResult:
        """The bulk path for one strategy, its failure raised rather than reported."""
        states = None if state is None else {strategy.strategy_id: state}
        result = self._evaluate_many([strategy], persist=persist, states=states).results[0]
        if isinstance(result, _Failed):
            raise result.error
        return result

    # --- bulk -----------------------------------------------------------------------------

    def evaluate_bulk(self, strategy_ids: Sequence[str], *, persist: bool = True) -> BulkResult:
        started = time.perf_counter()
        if len(strategy_ids) > self.max_bulk:
            raise InvalidRequest(
                f"strategy_ids has {len(strategy_ids)} entries; at most {self.max_bulk} per request"
            )
        ordered = list(dict.fromkeys(strategy_ids))
        found, unreadable = self._read_strategies(ordered)
        outcome = self._evaluate_many([found[i] for i in ordered if i in found], persist=persist)
        by_id = {r.strategy_id: r for r in outcome.results}
        results: list[EvaluationResult | BulkFailure] = []
        for strategy_id in ordered:
            item = by_id.get(strategy_id)
            if item is None:
                error = unreadable.get(strategy_id) or _missing(strategy_id)
                item = _Failed(strategy_id, error)
            results.append(item.as_failure() if isinstance(item, _Failed) else item)
        failed = sum(1 for r in results if isinstance(r, BulkFailure))
        return BulkResult(
            results=results,
            summary=BulkSummary(
                requested=len(ordered),
                succeeded=len(results) - failed,
                failed=failed,
                pairs=outcome.pairs,
                market_data_fetches=outcome.fetches,
                indicator_computations=outcome.computations,
                duration_ms=int((time.perf_counter() - started) * 1000),
            ),
        )

    def due_strategies(self, tick_ms: int, interval_ms: int) -> list[Strategy]:
        """Active strategies whose primary timeframe closed a bar in (tick - interval, tick],
        sorted by id.

        Derived from the clock, not from per-strategy bookkeeping, so a quiet tick writes
        nothing and a duplicated delivery of the same tick selects the same strategies. Only
        the timeframes that closed a bar are read (the status index is keyed by timeframe):
        a minute tick reads the 1m strategies, not every hourly and daily one.
        """
        due: list[Strategy] = []
        for timeframe in TIMEFRAME_MS:
            if bucket_start(tick_ms, timeframe) > bucket_start(tick_ms - interval_ms, timeframe):
                due.extend(self.strategies.list(status="active", timeframe=timeframe))
        return sorted(due, key=lambda s: s.strategy_id)

    # --- the shared path ------------------------------------------------------------------

    def _evaluate_many(
        self,
        strategies: Sequence[Strategy],
        *,
        persist: bool,
        states: Mapping[str, ExecutionState] | None = None,
    ) -> _Outcome:
        now = self.clock()
        results: list[EvaluationResult | _Failed] = []
        if states is None:
            states, unloaded = self._load_states(strategies)
            results.extend(_Failed(sid, exc) for sid, exc in unloaded.items())
            strategies = [s for s in strategies if s.strategy_id not in unloaded]
        compiled = {s.strategy_id: compile_strategy(s) for s in strategies}
        bars: dict[tuple[str, str], int] = {}
        for strategy in strategies:
            rules = compiled[strategy.strategy_id].cooldown
            need = self._history_needed(strategy, rules, states.get(strategy.strategy_id), now)
            for pair in unique_pairs([strategy]):
                bars[pair] = max(bars.get(pair, 0), need)
        loaded = load_market(list(bars), self.market_data, bars, now, self.stale_policy)
        market = MarketData(loaded.candles)
        evaluated: list[tuple[ExecutionState, EvaluationResult]] = []
        for strategy in strategies:
            failure = next(
                (loaded.failures[p] for p in unique_pairs([strategy]) if p in loaded.failures), None
            )
            if failure is not None:
                results.append(_Failed(strategy.strategy_id, failure))
                continue
            state = states.get(strategy.strategy_id) or ExecutionState(
                strategy_id=strategy.strategy_id
            )
            work = partial(evaluate, compiled[strategy.strategy_id], state, market, now)
            outcome = _guarded(strategy.strategy_id, work)
            if isinstance(outcome, _Failed):
                results.append(outcome)
                continue
            for pair in unique_pairs([strategy]):
                for message in loaded.warnings.get(pair, []):
                    outcome.warnings.append(Warning(code="stale_market_data", message=message))
            evaluated.append((state, outcome))
        if persist:
            results.extend(self._commit_all(evaluated))
        else:
            results.extend(result for _, result in evaluated)
        return _Outcome(results, len(bars), loaded.fetches, market.cache.computations)

    def _commit_all(
        self, evaluated: Sequence[tuple[ExecutionState, EvaluationResult]]
    ) -> list[EvaluationResult | _Failed]:
        """Commit each result's changes (one transaction per strategy; none for a quiet one).

        Strategies are independent, each commit conditioned on its own version, so with
        `commit_workers` > 1 they are sent concurrently: a bar on which hundreds of
        strategies act waits for the slowest few round trips, not the sum of them all.
        """

        def commit(item: tuple[ExecutionState, EvaluationResult]) -> EvaluationResult | _Failed:
            state, result = item
            if not result.changes.empty and not has_time_for(STEP_RESERVE_S):
                return _Failed(
                    state.strategy_id,
                    NotDone(f"strategy {state.strategy_id} was not committed: {OUT_OF_TIME}"),
                )

            def write() -> EvaluationResult:
                result.state.version = self.states.commit(state, result.changes)
                result.persisted = True
                return result

            return _guarded(state.strategy_id, write)

        writes = sum(1 for _, result in evaluated if not result.changes.empty)
        if self.commit_workers <= 1 or writes <= 1:
            return [commit(item) for item in evaluated]
        with ThreadPoolExecutor(min(self.commit_workers, writes)) as pool:
            return list(pool.map(in_this_context(commit), evaluated))

    def _read_strategies(
        self, ids: Sequence[str]
    ) -> tuple[dict[str, Strategy], dict[str, EngineError]]:
        """The stored strategies among `ids`, and the ids whose slice could not be read."""
        return _read_in_slices(ids, self.read_slice, self.strategies.get_many, lambda i: i)

    def _load_states(
        self, strategies: Sequence[Strategy]
    ) -> tuple[dict[str, ExecutionState], dict[str, EngineError]]:
        """Every state in one load (its index queries serve many strategies per request);
        if that fails, slice by slice, so that a read that keeps failing fails only the
        strategies it was for."""
        try:
            return dict(self.states.load(strategies)), {}
        except EngineError as exc:
            if len(strategies) <= self.read_slice:
                return {}, {s.strategy_id: exc for s in strategies}
            logger.warning(
                "loading %d states failed, retrying in slices: %s", len(strategies), exc.message
            )
        return _read_in_slices(
            strategies, self.read_slice, self.states.load, lambda s: s.strategy_id
        )

    def _history_needed(
        self, strategy: Strategy, rules: CooldownRules, state: ExecutionState | None, now: int
    ) -> int:
        """Bars to fetch: indicator warm-up, the cooldown windows, and back to the oldest
        open position's entry so catch-up and bars-held see every bar since."""
        need = strategy.warmup_bars
        need = max(need, rules.longest_window + self._history_margin)
        if state is not None and state.positions:
            oldest = min(to_ms(p.entry_time) for p in state.positions)
            step = timeframe_ms(strategy.timeframe)
            need = max(need, (now - oldest) // step + self._history_margin)
        return int(need)


def _missing(strategy_id: str) -> EngineError:
    """Why a requested id has no result: malformed (no strategy can have it), or unknown."""
    if _VALID_ID.match(strategy_id) is None:
        return InvalidRequest(
            f"strategy id {strategy_id!r} is malformed: ids match {STRATEGY_ID_PATTERN}"
        )
    return StrategyNotFound(f"no strategy with id {strategy_id!r}")


def _guarded(strategy_id: str, work: Callable[[], EvaluationResult]) -> EvaluationResult | _Failed:
    """Run one strategy's work; its failure becomes its result, never another's."""
    try:
        return work()
    except EngineError as exc:
        return _Failed(strategy_id, exc)
    except Exception as exc:  # one strategy's bug must not sink the others
        logger.exception("evaluation of %s failed", strategy_id)
        return _Failed(
            strategy_id,
            EngineError(f"internal error evaluating {strategy_id}: {type(exc).__name__}"),
        )


def _read_in_slices(
    items: Sequence[T],
    size: int,
    read: Callable[[Sequence[T]], Mapping[str, R]],
    strategy_id: Callable[[T], str],
) -> tuple[dict[str, R], dict[str, EngineError]]:
    """`read` slice by slice: what was read, and the strategy ids of the slices that failed."""
    found: dict[str, R] = {}
    failed: dict[str, EngineError] = {}
    for start in range(0, len(items), size):
        part = items[start : start + size]
        try:
            found.update(read(part))
        except EngineError as exc:
            logger.warning("reading %d strategies' data failed: %s", len(part), exc.message)
            failed.update({strategy_id(item): exc for item in part})
    return found, failed


@dataclass
class _Failed:
    strategy_id: str
    error: EngineError

    def as_failure(self) -> BulkFailure:
        return BulkFailure(
            strategy_id=self.strategy_id,
            error=ErrorBody(
                code=self.error.code, message=self.error.message, details=self.error.details
            ),
        )


@dataclass
class _Outcome:
    results: list[EvaluationResult | _Failed]
    pairs: int
    fetches: int
    computations: int
