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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import numpy as np

from engine.adapters.marketdata import StalePolicy, load_market
from engine.adapters.marketdata.shared import SharedMarketData
from engine.core.evaluate import evaluate
from engine.core.market import MarketData
from engine.core.state import EvaluationResult, ExecutionState, Position, Warning
from engine.core.strategy import STRATEGY_ID_PATTERN, Strategy, parse_strategy
from engine.core.timeframes import bucket_start, iso, timeframe_ms, to_datetime, to_ms
from engine.service.deadline import has_time_for, in_this_context
from engine.service.errors import (
    OUT_OF_TIME,
    STEP_RESERVE_S,
    EngineError,
    InvalidRequest,
    NotDone,
    StrategyNotFound,
)
from engine.service.ports import (
    EvaluatedBar,
    MarketDataProvider,
    StateRepository,
    StrategyRepository,
)
from engine.service.results import (
    BulkFailure,
    BulkResult,
    BulkSummary,
    ErrorBody,
    LateEvaluation,
    ScheduledResult,
    SkippedStrategy,
)
from engine.service.strategy_cache import STRATEGY_CACHE, StrategyCache

logger = logging.getLogger("engine.service.execution")

MAX_BULK_STRATEGIES = 500
_VALID_ID = re.compile(STRATEGY_ID_PATTERN)
# Strategies read together. DynamoDB's BatchGetItem takes 100 keys, so reading in slices of
# 100 costs no extra request and confines a failed read to the strategies it was for.
READ_SLICE = 100

Clock = Callable[[], int]
T = TypeVar("T")
R = TypeVar("R")


# One long-lived thread fetches market data while states load (ExecutionService._fetch_early):
# long-lived so that its DynamoDB client (one per thread) is made once per container.
_EARLY_FETCHES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="market-data")


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


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
    # compiled strategies kept by the warm container (engine.service.strategy_cache)
    strategy_cache: StrategyCache = STRATEGY_CACHE

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
                    f"position {position.position_id} enters at {iso(position.entry_time)}, "
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
        with self.strategy_cache.loading():
            result = self._bulk(strategy_ids, persist=persist, scheduled_ms=None)
        return BulkResult(results=result.results, summary=result.summary)

    def evaluate_scheduled(
        self, strategy_ids: Sequence[str], *, scheduled_ms: int | None = None
    ) -> ScheduledResult:
        """The schedule's evaluation of strategies it found due (at a tick, or queued in a
        fan-out chunk), with persist.

        Each strategy is checked again against its item, read strongly consistent: one
        paused since, or already evaluated at the newest closed bar (a duplicated tick or
        chunk, the due index lagging), is skipped and reported, not evaluated. With the tick's
        `scheduled_ms`, an evaluation at a newer bar than the tick's is reported as late.
        """
        with self.strategy_cache.loading():
            return self._bulk(strategy_ids, persist=True, scheduled_ms=scheduled_ms, scheduled=True)

    def _bulk(
        self,
        strategy_ids: Sequence[str],
        *,
        persist: bool,
        scheduled_ms: int | None,
        scheduled: bool = False,
    ) -> ScheduledResult:
        started = time.perf_counter()
        if len(strategy_ids) > self.max_bulk:
            raise InvalidRequest(
                f"strategy_ids has {len(strategy_ids)} entries; at most {self.max_bulk} per request"
            )
        ordered = list(dict.fromkeys(strategy_ids))
        found, unreadable = self._read_strategies(ordered)
        skipped: list[SkippedStrategy] = []
        if scheduled:
            for sid in ordered:
                if sid in found and found[sid].status != "active":
                    skipped.append(SkippedStrategy(strategy_id=sid, reason="paused"))
                    del found[sid]
        outcome = self._evaluate_many(
            [found[i] for i in ordered if i in found], persist=persist, only_due=scheduled
        )
        skipped += [
            SkippedStrategy(strategy_id=sid, reason="already_evaluated") for sid in outcome.skipped
        ]
        left_alone = {s.strategy_id for s in skipped}
        by_id = {r.strategy_id: r for r in outcome.results}
        results: list[EvaluationResult | BulkFailure] = []
        for strategy_id in ordered:
            if strategy_id in left_alone:
                continue
            item = by_id.get(strategy_id)
            if item is None:
                error = unreadable.get(strategy_id) or _missing(strategy_id)
                item = _Failed(strategy_id, error)
            results.append(item.as_failure() if isinstance(item, _Failed) else item)
        failed = sum(1 for r in results if isinstance(r, BulkFailure))
        late: list[LateEvaluation] = []
        if scheduled_ms is not None:
            for r in results:
                if isinstance(r, BulkFailure) or r.bar is None:
                    continue
                timeframe = found[r.strategy_id].timeframe
                tick_bar = bucket_start(scheduled_ms, timeframe) - timeframe_ms(timeframe)
                if to_ms(r.bar) > tick_bar:
                    late.append(
                        LateEvaluation(
                            strategy_id=r.strategy_id,
                            scheduled_bar=to_datetime(tick_bar),
                            bar=r.bar,
                            bars_passed_over=r.bars_passed_over,
                        )
                    )
        return ScheduledResult(
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
            skipped=skipped,
            late=late,
        )

    def due_strategies(self, now_ms: int | None = None) -> list[Strategy]:
        """Active strategies due at `now_ms` (default: the clock), sorted by id: never
        evaluated, or a bar of their timeframe newer than the one they were last evaluated
        at has closed. A missed or failed tick is made good by the next one.

        From the due index: a tick where nothing is due costs one query, however many
        strategies there are. The index lags writes slightly; evaluate_scheduled re-checks.
        """
        now = self.clock() if now_ms is None else now_ms
        return sorted(self.strategies.due(now), key=lambda s: s.strategy_id)

    # --- the shared path ------------------------------------------------------------------

    def _evaluate_many(
        self,
        strategies: Sequence[Strategy],
        *,
        persist: bool,
        states: Mapping[str, ExecutionState] | None = None,
        only_due: bool = False,
    ) -> _Outcome:
        now = self.clock()
        results: list[EvaluationResult | _Failed] = []
        early: tuple[dict[tuple[str, str], int], Future[SharedMarketData]] | None = None
        # A dry run's answer needs no state it was evaluated from: states loaded here are let
        # go one by one as their strategies are evaluated (a bulk run's peak memory).
        released: dict[str, ExecutionState] | None = None
        if states is None:
            if len(strategies) == 1 and not only_due:  # by id: a bulk run fetches once a pair
                early = self._fetch_early(strategies, now)
            loaded_states, unloaded = self._load_states(strategies)
            states = loaded_states
            if not persist:
                released = loaded_states
            results.extend(_Failed(sid, exc) for sid, exc in unloaded.items())
            strategies = [s for s in strategies if s.strategy_id not in unloaded]
        skipped: list[str] = []
        if only_due:
            up_to_date = {
                s.strategy_id for s in strategies if not _due(s, states.get(s.strategy_id), now)
            }
            skipped = [s.strategy_id for s in strategies if s.strategy_id in up_to_date]
            strategies = [s for s in strategies if s.strategy_id not in up_to_date]
        compiled = {s.strategy_id: self.strategy_cache.compile(s) for s in strategies}
        self.strategy_cache.settle()
        bars: dict[tuple[str, str], int] = {}
        for strategy in strategies:
            need = compiled[strategy.strategy_id].history_needed(
                states.get(strategy.strategy_id), now
            )
            for pair in compiled[strategy.strategy_id].pairs:
                bars[pair] = max(bars.get(pair, 0), need)
        if early is None:
            loaded = load_market(list(bars), self.market_data, bars, now, self.stale_policy)
        else:
            loaded = _with_early(early, bars, self.market_data, now, self.stale_policy)
        market = MarketData(loaded.candles)
        evaluated: list[_Evaluated] = []
        for strategy in strategies:
            pairs = compiled[strategy.strategy_id].pairs
            failure = next((loaded.failures[p] for p in pairs if p in loaded.failures), None)
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
            _log_deprecation(strategy.strategy_id, outcome)
            for pair in pairs:
                for message in loaded.warnings.get(pair, []):
                    outcome.warnings.append(Warning(code="stale_market_data", message=message))
            passed_over = bars_passed_over(strategy, state.last_bar, outcome, market)
            if passed_over:  # 0 already: pydantic's attribute assignment is not free
                outcome.bars_passed_over = passed_over
            if released is not None:
                released.pop(strategy.strategy_id, None)
                results.append(outcome)
            else:
                evaluated.append(_Evaluated(strategy, state, outcome))
        if persist:
            results.extend(self._commit_all(evaluated))
        else:
            results.extend(e.result for e in evaluated)
        return _Outcome(results, len(bars), loaded.fetches, market.cache.computations, skipped)

    def _fetch_early(
        self, strategies: Sequence[Strategy], now: int
    ) -> tuple[dict[tuple[str, str], int], Future[SharedMarketData]]:
        """Start fetching market data while the state loads (one strategy: an evaluation by
        id; a bulk run waits for its states, so that it fetches each pair once): as many bars
        as the strategies need without open positions (`history_needed(None, now)`). The states can only ask
        for more (an open position's catch-up); when they do not, this fetch is the very one
        the evaluation would make after them, one round trip sooner."""
        bars: dict[tuple[str, str], int] = {}
        for strategy in strategies:
            compiled = self.strategy_cache.compile(strategy)
            need = compiled.history_needed(None, now)
            for pair in compiled.pairs:
                bars[pair] = max(bars.get(pair, 0), need)
        future = _EARLY_FETCHES.submit(
            load_market, list(bars), self.market_data, bars, now, self.stale_policy
        )
        return bars, future

    def _commit_all(self, evaluated: Sequence[_Evaluated]) -> list[EvaluationResult | _Failed]:
        """Commit each result's changes with its bar (one transaction per strategy), and
        record the bars of the quiet ones together (a few requests for hundreds).

        Strategies are independent, each commit conditioned on its own version, so with
        `commit_workers` > 1 they are sent concurrently: a bar on which hundreds of
        strategies act waits for the slowest few round trips, not the sum of them all.
        """

        def commit(item: _Evaluated) -> EvaluationResult | _Failed:
            result = item.result
            sid = item.strategy.strategy_id
            if not has_time_for(STEP_RESERVE_S):
                return _Failed(sid, NotDone(f"strategy {sid} was not committed: {OUT_OF_TIME}"))

            def write() -> EvaluationResult:
                result.state.version = self.states.commit(item.state, result.changes, item.bar)
                result.state.last_bar = result.bar
                result.persisted = True
                return result

            return _guarded(item.strategy.strategy_id, write)

        changing = [e for e in evaluated if not e.result.changes.empty]
        if self.commit_workers <= 1 or len(changing) <= 1:
            committed = [commit(item) for item in changing]
        else:
            with ThreadPoolExecutor(min(self.commit_workers, len(changing))) as pool:
                committed = list(pool.map(in_this_context(commit), changing))
        done: dict[str, EvaluationResult | _Failed] = {
            e.strategy.strategy_id: r for e, r in zip(changing, committed, strict=True)
        }
        quiet = [e for e in evaluated if e.result.changes.empty]
        # out of time, a quiet bar is not recorded: the strategy stays due for the next tick
        marks = [(e.state, e.bar) for e in quiet if e.bar is not None and e.advances]
        recorded = not marks or has_time_for(STEP_RESERVE_S)
        if not recorded:
            marks = []
        failures: Mapping[str, EngineError] = {}
        if marks:
            try:
                failures = self.states.record_bars(marks)
            except EngineError as exc:
                failures = {state.strategy_id: exc for state, _ in marks}
        for e in quiet:
            sid = e.strategy.strategy_id
            if sid in failures:
                done[sid] = _Failed(sid, failures[sid])
            else:
                if recorded and e.bar is not None and e.advances:
                    e.result.state.last_bar = e.result.bar
                e.result.persisted = True
                done[sid] = e.result
        return [done[e.strategy.strategy_id] for e in evaluated]

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


def _with_early(
    early: tuple[dict[tuple[str, str], int], Future[SharedMarketData]],
    bars: dict[tuple[str, str], int],
    provider: MarketDataProvider,
    now: int,
    policy: StalePolicy,
) -> SharedMarketData:
    """The early fetch's answer for each pair it asked exactly as many bars of as the states
    need; the other pairs (an open position's catch-up needs more) fetched again."""
    asked, future = early
    first = future.result()
    again = {p: n for p, n in bars.items() if asked.get(p) != n}
    second = load_market(list(again), provider, again, now, policy) if again else None
    candles, failures, warnings = {}, {}, {}
    for pair in bars:
        source = first if second is None or pair not in again else second
        if pair in source.candles:
            candles[pair] = source.candles[pair]
        if pair in source.failures:
            failures[pair] = source.failures[pair]
        if pair in source.warnings:
            warnings[pair] = source.warnings[pair]
    fetches = first.fetches + (second.fetches if second is not None else 0)
    return SharedMarketData(candles, failures, warnings, fetches)


def _due(strategy: Strategy, state: ExecutionState | None, now_ms: int) -> bool:
    """Whether the newest bar closed by the clock is after the bar last evaluated."""
    if state is None or state.last_bar is None:
        return True
    step = timeframe_ms(strategy.timeframe)
    return to_ms(state.last_bar) < bucket_start(now_ms, strategy.timeframe) - step


def bars_passed_over(
    strategy: Strategy, last_bar: datetime | None, result: EvaluationResult, market: MarketData
) -> int:
    """Bars after `last_bar` and before the evaluated one, never evaluated: counted in the
    candles as the market data has them (a closed market adds none), and by the clock
    before the oldest candle fetched. The most over the strategy's assets."""
    if last_bar is None or result.bar is None:
        return 0
    last, bar = to_ms(last_bar), to_ms(result.bar)
    if bar <= last:
        return 0
    step = timeframe_ms(strategy.timeframe)
    most = 0
    for asset in strategy.assets:
        candles = market.get(asset, strategy.timeframe)
        if candles is None or len(candles) == 0:
            continue
        times = candles.time
        between = int(np.searchsorted(times, bar, "left") - np.searchsorted(times, last, "right"))
        first = int(times[0])
        before = max(0, (min(first, bar) - last) // step - 1) if last < first else 0
        most = max(most, max(0, between) + before)
    return most


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
    skipped: list[str] = field(default_factory=list)  # already evaluated at the newest bar


@dataclass
class _Evaluated:
    strategy: Strategy
    state: ExecutionState  # as loaded: the commit's condition
    result: EvaluationResult

    @property
    def bar(self) -> EvaluatedBar | None:
        """The bar evaluated, and the close of the bar after it: when it is next due."""
        if self.result.bar is None:
            return None
        bar_ms = to_ms(self.result.bar)
        return EvaluatedBar(bar_ms, bar_ms + 2 * timeframe_ms(self.strategy.timeframe))

    @property
    def advances(self) -> bool:
        """Whether the bar is newer than the one recorded (a quiet rerun records nothing)."""
        last = self.state.last_bar
        return self.result.bar is not None and (last is None or self.result.bar > last)


def _log_deprecation(strategy_id: str, result: EvaluationResult) -> None:
    """The core only reports deprecated keys in the result; operators see them in the log."""
    for warning in result.warnings:
        if warning.code == "deprecated_cooldown_keys":
            logger.warning("strategy %s: %s", strategy_id, warning.message)
