"""The service layer over in-memory adapters: sharing, isolation, dry runs, conflicts."""

from __future__ import annotations

import gc
import json
import threading
import weakref
from collections.abc import Callable

import numpy as np
import pytest
from engine.core.candles import Candles
from engine.core.strategy import parse_strategy
from engine.service import execution
from engine.service.errors import (
    ConcurrentEvaluation,
    InvalidRequest,
    MarketDataStale,
    StorageUnavailable,
    StrategyNotFound,
)
from engine.service.execution import ExecutionService
from engine.service.results import BulkFailure
from engine.service.schedule import ChunkIncomplete, evaluate_chunk, plan_chunks, run_scheduled_tick

from tests.support.fakes import MemoryMarket, MemoryStates, MemoryStrategies
from tests.support.service import BARS, NOW, H, candles, make_service, strategy


def test_entry_is_committed_once_and_a_retry_creates_nothing() -> None:
    svc, states, _ = make_service(
        [strategy("a")], {("BTC/USDT", "1h"): candles(1, spike_at=BARS - 1)}
    )
    first = svc.evaluate_by_id("a")
    assert first.persisted
    assert [(o.side, o.type, o.status) for o in first.orders] == [
        ("enter_long", "market", "filled"),
        ("exit_long", "stop_loss", "open"),
    ]
    assert states.versions["a"] == 1
    again = svc.evaluate_by_id("a")
    assert states.versions["a"] == 1 and states.commits == 1
    assert {o.order_id for o in again.orders} == {
        o.order_id for o in first.orders if o.status == "open"
    }
    assert len(states.orders) == 2 and len(states.positions) == 1


def test_dry_run_writes_nothing() -> None:
    svc, states, _ = make_service(
        [strategy("a")], {("BTC/USDT", "1h"): candles(1, spike_at=BARS - 1)}
    )
    before = states.snapshot()
    result = svc.evaluate_by_id("a", persist=False)
    assert not result.persisted and result.orders
    assert states.snapshot() == before


def test_unknown_strategy_is_not_found() -> None:
    svc, _, _ = make_service([], {})
    with pytest.raises(StrategyNotFound):
        svc.evaluate_by_id("nope")


class RivalCommitsFirst(MemoryStates):
    """Another evaluation of the same strategy commits between this one's load and commit."""

    def __init__(self, rival: Callable[[], object]) -> None:
        super().__init__()
        self.rival = rival

    def load(self, strategies):  # type: ignore[no-untyped-def]
        loaded = super().load(strategies)
        rival, self.rival = self.rival, lambda: None
        rival()  # once: the rival loads and commits with nothing in its way
        return loaded


def test_an_evaluation_overtaken_by_a_concurrent_commit_is_409_and_writes_nothing() -> None:
    market = {("BTC/USDT", "1h"): candles(1, spike_at=BARS - 1)}
    states = RivalCommitsFirst(lambda: rival.evaluate_by_id("a"))
    rival = ExecutionService(
        MemoryStrategies([strategy("a")]), states, MemoryMarket(market), clock=lambda: NOW
    )
    svc = ExecutionService(
        MemoryStrategies([strategy("a")]), states, MemoryMarket(market), clock=lambda: NOW
    )
    with pytest.raises(ConcurrentEvaluation) as info:
        svc.evaluate_by_id("a")
    assert (info.value.status, info.value.code) == (409, "concurrent_evaluation")
    # only the rival's entry is stored: one position, its entry and stop orders, version 1
    assert states.commits == 1 and states.versions == {"a": 1}
    (position,) = states.positions.values()
    assert sorted((o.type, o.status) for o in states.orders.values()) == [
        ("market", "filled"),
        ("stop_loss", "open"),
    ]
    assert {o.position_id for o in states.orders.values()} == {position.position_id}


def test_bulk_shares_market_data_and_indicators() -> None:
    # 6 strategies on 2 markets; RSI(14) twice per market, RSI(7) once, SMA(20) everywhere
    strats = [
        strategy("a1", "BTC/USDT"),
        strategy("a2", "BTC/USDT"),
        strategy("a3", "BTC/USDT", period=7),
        strategy("b1", "ETH/USDT"),
        strategy("b2", "ETH/USDT"),
        strategy("b3", "ETH/USDT"),
    ]
    market = {("BTC/USDT", "1h"): candles(1), ("ETH/USDT", "1h"): candles(2)}
    svc, _, fetcher = make_service(strats, market)
    result = svc.evaluate_bulk([s.strategy_id for s in strats], persist=False)
    summary = result.summary
    assert summary.requested == 6 and summary.succeeded == 6 and summary.failed == 0
    assert summary.pairs == 2 and summary.market_data_fetches == 2
    assert sorted(fetcher.fetches) == [("BTC/USDT", "1h"), ("ETH/USDT", "1h")]
    # BTC: RSI14, RSI7, SMA20 = 3; ETH: RSI14, SMA20 = 2
    assert summary.indicator_computations == 5


def test_bulk_isolates_a_failing_market_and_unknown_ids() -> None:
    strats = [strategy("ok", "BTC/USDT"), strategy("bad", "ETH/USDT")]
    market = {("BTC/USDT", "1h"): candles(1, spike_at=BARS - 1)}
    svc, states, _ = make_service(strats, market)
    result = svc.evaluate_bulk(["ok", "bad", "ghost"])
    by_id = {r.strategy_id: r for r in result.results}
    assert not isinstance(by_id["ok"], BulkFailure) and by_id["ok"].persisted
    assert (
        isinstance(by_id["bad"], BulkFailure)
        and by_id["bad"].error.code == "market_data_unavailable"
    )
    assert (
        isinstance(by_id["ghost"], BulkFailure)
        and by_id["ghost"].error.code == "strategy_not_found"
    )
    assert [r.strategy_id for r in result.results] == ["ok", "bad", "ghost"]
    assert states.versions == {"ok": 1}


def test_bulk_rejects_more_than_500() -> None:
    svc, _, _ = make_service([], {})
    with pytest.raises(InvalidRequest, match="at most 500"):
        svc.evaluate_bulk([f"s{i}" for i in range(501)])


def test_stale_data_is_rejected_or_warned_by_policy() -> None:
    old = candles(1, bars=BARS)
    svc, _, _ = make_service([strategy("a")], {("BTC/USDT", "1h"): old})
    svc.clock = lambda: NOW + 5 * H  # the newest closed bar is now 5 bars old
    # bar 299 opens at 299 h after the epoch (1970-01-13 11:00) and closed 5 h before now
    message = (
        "market data for BTC/USDT 1h is stale: the newest closed bar opened at "
        "1970-01-13T11:00:00Z and closed 5 bars (18000 s) before 1970-01-13T17:00:00Z; "
        "data more than 2 bars old is stale"
    )
    with pytest.raises(MarketDataStale) as info:
        svc.evaluate_by_id("a", persist=False)
    assert (info.value.status, info.value.code, info.value.message) == (
        503,
        "market_data_stale",
        message,
    )
    svc.stale_policy = "warn"
    result = svc.evaluate_by_id("a", persist=False)
    assert [(w.code, w.message) for w in result.warnings] == [("stale_market_data", message)]
    assert result.bar is not None and result.bar.isoformat() == "1970-01-13T11:00:00+00:00"


D = 24 * H


def two_timeframes() -> tuple[ExecutionService, MemoryStates]:
    """An hourly and a daily strategy that never act, a paused one, and 40 days of candles."""
    hourly = strategy("h")
    daily = parse_strategy({**json.loads(strategy("d").canonical_json()), "timeframe": "1d"})  # type: ignore[union-attr]
    paused = parse_strategy({**json.loads(strategy("p").canonical_json()), "status": "paused"})  # type: ignore[union-attr]
    svc, states, _ = make_service([hourly, daily, paused], {})
    svc.market_data = MemoryMarket(
        {("BTC/USDT", "1h"): candles(1, bars=40 * 24), ("BTC/USDT", "1d"): daily_candles(40)}
    )
    return svc, states


def daily_candles(days: int) -> Candles:
    c = candles(5, bars=days)
    return Candles(
        time=np.arange(days, dtype=np.int64) * D,
        open=c.open,
        high=c.high,
        low=c.low,
        close=c.close,
        volume=c.volume,
    )


def ids(strategies: object) -> list[str]:
    return [s.strategy_id for s in strategies]  # type: ignore[attr-defined]


def test_due_follows_the_last_evaluated_bar_not_the_tick() -> None:
    svc, states = two_timeframes()
    day30 = 30 * D
    assert ids(svc.due_strategies(day30 + 10 * H + 20_000)) == ["d", "h"]  # never evaluated
    svc.clock = lambda: day30 + 10 * H + 20_000
    run = svc.evaluate_scheduled(["d", "h"])
    bars = {r.strategy_id: r.bar.timestamp() * 1000 for r in run.results}  # type: ignore[union-attr]
    assert bars == {"h": day30 + 9 * H, "d": day30 - D}
    assert states.commits == 0 and states.recorded == 2  # quiet: only the bars are written
    assert ids(svc.due_strategies(day30 + 10 * H + 30 * 60_000)) == []
    assert ids(svc.due_strategies(day30 + 11 * H - 1)) == []
    assert ids(svc.due_strategies(day30 + 11 * H)) == ["h"]  # the 10:00 bar has closed
    assert ids(svc.due_strategies(day30 + D - 1)) == ["h"]
    assert ids(svc.due_strategies(day30 + D)) == ["d", "h"]  # and the day's bar


def test_a_missed_tick_is_made_good_by_the_next_and_bars_passed_over_are_counted() -> None:
    svc, _ = two_timeframes()
    day30 = 30 * D
    svc.clock = lambda: day30 + 10 * H + 20_000
    svc.evaluate_scheduled(["h"])  # at 09:00
    # the 11:00 tick is lost; the 11:01 tick evaluates the 10:00 bar, nothing passed over
    svc.clock = lambda: day30 + 11 * H + 60_000
    assert ids(svc.due_strategies()) == ["d", "h"]  # d was never evaluated
    (first,) = svc.evaluate_scheduled(["h"]).results
    assert first.bar.timestamp() * 1000 == day30 + 10 * H  # type: ignore[union-attr]
    assert first.bars_passed_over == 0  # type: ignore[union-attr]
    # no tick at all from 12:00 to 14:59: the 15:00 tick evaluates 14:00, passing over 3
    svc.clock = lambda: day30 + 15 * H
    assert "h" in ids(svc.due_strategies())
    (late,) = svc.evaluate_scheduled(["h"], scheduled_ms=day30 + 12 * H).results
    assert late.bar.timestamp() * 1000 == day30 + 14 * H  # type: ignore[union-attr]
    assert late.bars_passed_over == 3  # type: ignore[union-attr]  # 11:00, 12:00, 13:00


def test_a_late_chunk_reports_the_scheduled_bar_it_passed_over() -> None:
    svc, _ = two_timeframes()
    day30 = 30 * D
    svc.clock = lambda: day30 + 11 * H + 20_000
    svc.evaluate_scheduled(["h"])  # at 10:00
    body = json.dumps({"strategy_ids": ["h"], "scheduled_time_ms": day30 + 12 * H})
    svc.clock = lambda: day30 + 13 * H + 30 * 60_000  # the 12:00 chunk is processed at 13:30
    result = evaluate_chunk(svc, body)
    (late,) = result.late
    assert late.strategy_id == "h"
    assert late.scheduled_bar.timestamp() * 1000 == day30 + 11 * H
    assert late.bar.timestamp() * 1000 == day30 + 12 * H
    assert late.bars_passed_over == 1  # the 11:00 bar, the tick's own


def test_a_chunk_skips_strategies_paused_since_and_those_already_evaluated() -> None:
    svc, _ = two_timeframes()
    day30 = 30 * D
    svc.clock = lambda: day30 + 10 * H + 20_000
    body = json.dumps({"strategy_ids": ["h", "d"], "scheduled_time_ms": day30 + 10 * H})
    first = evaluate_chunk(svc, body)
    assert first.skipped == [] and len(first.results) == 2
    # paused after its chunk was queued: a redelivery leaves it alone and says so
    svc.strategies.put(
        parse_strategy({**json.loads(svc.strategies.get("d").canonical_json()), "status": "paused"})  # type: ignore[union-attr]
    )
    again = evaluate_chunk(svc, body)
    assert [(s.strategy_id, s.reason) for s in again.skipped] == [
        ("d", "paused"),
        ("h", "already_evaluated"),
    ]
    assert again.results == [] and again.summary.requested == 2 and again.summary.failed == 0


def test_plan_chunks_keeps_markets_together_and_loses_nobody() -> None:
    strats = [strategy(f"s{i:02d}", f"A{i % 3}") for i in range(20)]
    chunks = plan_chunks(strats, 8)  # type: ignore[arg-type]
    flat = [i for c in chunks for i in c]
    assert sorted(flat) == sorted(s.strategy_id for s in strats)  # type: ignore[attr-defined]
    assert all(len(c) <= 8 for c in chunks)
    # groups of 7,7,6 fit whole: each market lands in exactly one chunk
    market_of = {s.strategy_id: s.assets[0] for s in strats}  # type: ignore[attr-defined]
    for asset in ("A0", "A1", "A2"):
        assert sum(1 for c in chunks if any(market_of[i] == asset for i in c)) == 1


class RecordingQueue:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, bodies):  # type: ignore[no-untyped-def]
        self.bodies.extend(bodies)


def test_scheduled_tick_fans_out_above_chunk_size_and_each_chunk_evaluates() -> None:
    strats = [strategy(f"s{i:02d}", f"A{i % 4}") for i in range(10)]
    market = {(f"A{i}", "1h"): candles(i, spike_at=BARS - 1) for i in range(4)}
    svc, states, _ = make_service(strats, market)
    queue = RecordingQueue()
    report = run_scheduled_tick(svc, tick_ms=NOW, chunk_size=3, fanout=queue)
    assert report.due == 10 and report.chunks_enqueued == len(queue.bodies) >= 4
    for body in queue.bodies:
        evaluate_chunk(svc, body)
    assert states.versions == {s.strategy_id: 1 for s in strats}  # type: ignore[attr-defined]
    for body in queue.bodies:  # an SQS redelivery of every chunk changes nothing
        assert {s.reason for s in evaluate_chunk(svc, body).skipped} == {"already_evaluated"}
    assert states.versions == {s.strategy_id: 1 for s in strats}  # type: ignore[attr-defined]


def test_chunk_with_a_retryable_failure_raises_for_redelivery() -> None:
    strats = [strategy("ok", "A0"), strategy("down", "A1")]
    svc, states, _ = make_service(strats, {("A0", "1h"): candles(0, spike_at=BARS - 1)})
    with pytest.raises(ChunkIncomplete) as info:
        evaluate_chunk(svc, json.dumps({"strategy_ids": ["ok", "down"]}))
    assert [f.strategy_id for f in info.value.failures] == ["down"]
    assert states.versions == {"ok": 1}


def test_a_position_on_a_removed_asset_is_kept_and_reported() -> None:
    market = {("BTC/USDT", "1h"): candles(1, spike_at=BARS - 2), ("ETH/USDT", "1h"): candles(2)}
    svc, states, _ = make_service([strategy("a", "BTC/USDT")], market)
    svc.clock = lambda: NOW - H  # the spike bar is the newest closed: enter
    entered = svc.evaluate_by_id("a")
    (position,) = entered.positions
    svc.strategies.put(strategy("a", "ETH/USDT"))  # the user drops BTC/USDT
    svc.clock = lambda: NOW
    later = svc.evaluate_by_id("a")
    assert [p.position_id for p in later.positions] == [position.position_id]
    assert {o.type for o in later.orders} == {"stop_loss"}
    assert any(w.code == "untraded_position" for w in later.warnings)
    assert states.versions["a"] == 1  # nothing changed, nothing written


class MeetingStates(MemoryStates):
    """Commits that only go through when `parties` of them are in flight at once (a barrier),
    and that fail for the strategies named in `refuse`."""

    def __init__(self, parties: int, refuse: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.meeting = threading.Barrier(parties, timeout=10)
        self.refuse = refuse
        self.lock = threading.Lock()

    def commit(self, state, changes, evaluated=None):  # type: ignore[no-untyped-def]
        if not changes.empty:
            self.meeting.wait()
            if state.strategy_id in self.refuse:
                raise ConcurrentEvaluation(f"{state.strategy_id}: another commit came first")
        with self.lock:
            return super().commit(state, changes, evaluated)


def test_bulk_commits_are_sent_concurrently_and_answer_as_sequential_ones() -> None:
    ids = [f"s{i}" for i in range(6)]
    strats = [strategy(sid, f"A{i % 2}", period=7 + i) for i, sid in enumerate(ids)]
    quiet = strategy("quiet", "A2")  # no signal: nothing to commit, no commit sent
    market = {
        ("A0", "1h"): candles(1, spike_at=BARS - 1),
        ("A1", "1h"): candles(2, spike_at=BARS - 1),
        ("A2", "1h"): candles(3),
    }
    sequential, _, _ = make_service([*strats, quiet], market)
    expected = sequential.evaluate_bulk([*ids, "quiet"])

    # the six commits meet at a barrier: they pass only if all six are in flight together
    states = MeetingStates(parties=6)
    concurrent = ExecutionService(
        MemoryStrategies([*strats, quiet]),
        states,
        MemoryMarket(market),
        stale_policy="reject",
        clock=lambda: NOW,
        commit_workers=8,
    )
    got = concurrent.evaluate_bulk([*ids, "quiet"])
    assert [r.model_dump() for r in got.results] == [r.model_dump() for r in expected.results]
    assert states.commits == 6 and set(states.versions) == set(ids)


def test_a_refused_concurrent_commit_fails_its_strategy_alone() -> None:
    ids = [f"s{i}" for i in range(4)]
    strats = [strategy(sid, "A0", period=7 + i) for i, sid in enumerate(ids)]
    market = {("A0", "1h"): candles(1, spike_at=BARS - 1)}
    states = MeetingStates(parties=4, refuse=frozenset({"s2"}))
    service = ExecutionService(
        MemoryStrategies(strats),
        states,
        MemoryMarket(market),
        stale_policy="reject",
        clock=lambda: NOW,
        commit_workers=4,
    )
    got = {r.strategy_id: r for r in service.evaluate_bulk(ids).results}
    assert isinstance(got["s2"], BulkFailure)
    assert got["s2"].error.code == "concurrent_evaluation"
    assert all(got[sid].persisted for sid in ids if sid != "s2")  # type: ignore[union-attr]
    assert set(states.versions) == {"s0", "s1", "s3"}


class FailingBars(MemoryStates):
    """Commits of `conflict` lose to another evaluation; bars of `unrecorded` cannot be
    written (DynamoDB failing)."""

    def __init__(self, schedule: MemoryStrategies, conflict: str, unrecorded: str) -> None:
        super().__init__(schedule)
        self.conflict, self.unrecorded = conflict, unrecorded

    def commit(self, state, changes, evaluated=None):  # type: ignore[no-untyped-def]
        if state.strategy_id == self.conflict:
            raise ConcurrentEvaluation(f"{state.strategy_id}: another evaluation came first")
        return super().commit(state, changes, evaluated)

    def record_bars(self, evaluated):  # type: ignore[no-untyped-def]
        failed = {s.strategy_id for s, _ in evaluated} & {self.unrecorded}
        super().record_bars([(s, b) for s, b in evaluated if s.strategy_id not in failed])
        return {sid: StorageUnavailable("DynamoDB kept throttling") for sid in failed}


def test_scheduled_failures_are_logged_with_their_reason_per_strategy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    market = {
        ("A0", "1h"): candles(0, spike_at=BARS - 1),  # acts: a commit
        ("A2", "1h"): candles(2),  # quiet: only its bar to record
        ("A3", "1h"): candles(3),
    }
    strats = [strategy("clash", "A0"), strategy("nodata", "A1"), strategy("throttled", "A2")]
    strats.append(strategy("fine", "A3"))
    repo = MemoryStrategies(strats)
    states = FailingBars(repo, conflict="clash", unrecorded="throttled")
    svc = ExecutionService(repo, states, MemoryMarket(market), clock=lambda: NOW)
    report = run_scheduled_tick(svc, tick_ms=NOW, chunk_size=10, fanout=None)
    assert report.due == 4 and report.evaluated == 1
    reasons = {
        r.__dict__["strategy_id"]: (r.__dict__["reason"], r.__dict__["code"])
        for r in caplog.records
        if r.name == "engine.service.schedule" and "failed" in r.getMessage()
    }
    assert reasons == {
        "clash": ("conflict", "concurrent_evaluation"),
        "nodata": ("market_data", "market_data_unavailable"),
        "throttled": ("storage", "storage_unavailable"),
    }
    # the fan-out worker's error (what SQS and the logs show) names them too
    with pytest.raises(ChunkIncomplete) as info:
        evaluate_chunk(svc, json.dumps({"strategy_ids": ["clash", "nodata", "throttled"]}))
    assert str(info.value) == (
        "3 strategies must be retried: clash (conflict: concurrent_evaluation), "
        "nodata (market_data: market_data_unavailable), "
        "throttled (storage: storage_unavailable)"
    )
    # none of them had its bar recorded: the next tick tries them again
    assert ids(svc.due_strategies()) == ["clash", "nodata", "throttled"]


def test_the_service_logs_deprecated_cooldown_keys_with_the_strategy_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    legacy = strategy("legacy", "A0", cooldown_bars=5, daily_momentum_limit=2)
    modern = strategy("modern", "A1")
    svc, _, _ = make_service([legacy, modern], {("A0", "1h"): candles(0), ("A1", "1h"): candles(1)})
    with caplog.at_level("WARNING", logger="engine.service.execution"):
        svc.evaluate_bulk(["legacy", "modern"], persist=False)
    logged = [r.getMessage() for r in caplog.records if r.name == "engine.service.execution"]
    assert len(logged) == 1
    assert logged[0].startswith("strategy legacy: ") and "daily_momentum_limit" in logged[0]


@pytest.mark.parametrize("persist", [False, True])
def test_a_dry_bulk_run_lets_each_loaded_state_go_once_evaluated(
    persist: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run answers without the states it evaluated from, so it holds at most one at a
    time (a 50,000-strategy run's peak memory); a persisting run needs all of them until it
    commits."""
    strats = [strategy(f"s{i}") for i in range(5)]
    svc, states, _ = make_service(strats, {("BTC/USDT", "1h"): candles(1)})
    loaded: dict[str, weakref.ref[object]] = {}
    real_load = states.load

    def load(strategies: object) -> dict[str, object]:
        found = real_load(strategies)
        loaded.update({sid: weakref.ref(state) for sid, state in found.items()})
        return found

    alive: list[str] = []
    real_evaluate = execution.evaluate

    def evaluate(compiled: object, state: object, market: object, now: int) -> object:
        if state.strategy_id == "s4":  # the last: which loaded states are still held?
            gc.collect()
            alive.extend(sid for sid, ref in loaded.items() if ref() is not None)
        return real_evaluate(compiled, state, market, now)

    monkeypatch.setattr(states, "load", load)
    monkeypatch.setattr(execution, "evaluate", evaluate)
    result = svc.evaluate_bulk([s.strategy_id for s in strats], persist=persist)
    assert result.summary.succeeded == 5
    assert alive == (["s0", "s1", "s2", "s3", "s4"] if persist else ["s4"])
