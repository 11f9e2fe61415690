"""The service layer over in-memory adapters: sharing, isolation, dry runs, conflicts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import numpy as np
import pytest
from engine.core.candles import Candles
from engine.core.strategy import parse_strategy
from engine.errors import (
    ConcurrentEvaluation,
    InvalidRequest,
    MarketDataStale,
    StrategyNotFound,
)
from engine.schedule import ChunkIncomplete, evaluate_chunk, plan_chunks, run_scheduled_tick
from engine.service import BulkFailure, ExecutionService

from tests.fakes import MemoryMarket, MemoryStates, MemoryStrategies

H = 3_600_000
BARS = 300


def candles(seed: int, bars: int = BARS, spike_at: int | None = None) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
    open_ = np.r_[close[0], close[:-1]]
    volume = np.full(bars, 1.0)
    if spike_at is not None:
        volume[spike_at] = 10.0
    return Candles(
        time=np.arange(bars, dtype=np.int64) * H,
        open=open_,
        high=np.maximum(open_, close) * 1.001,
        low=np.minimum(open_, close) * 0.999,
        close=close,
        volume=volume,
    )


def strategy(sid: str, asset: str = "BTC/USDT", period: int = 14, **config: object) -> object:
    return parse_strategy(
        {
            "strategy_id": sid,
            "name": sid,
            "assets": [asset],
            "timeframe": "1h",
            "indicators": {
                "rsi": {"fn": "RSI", "params": {"timeperiod": period}},
                "sma": {"fn": "SMA", "params": {"timeperiod": 20}},
            },
            "entry": {"left": "volume", "op": ">", "right": 5},
            "execution_config": {"stop_loss": {"type": "percent", "value": 0.5}, **config},
        }
    )


NOW = BARS * H  # every bar closed


def make_service(strats, market_candles, failing=frozenset()):
    states = MemoryStates()
    market = MemoryMarket(market_candles, set(failing))
    svc = ExecutionService(
        MemoryStrategies(strats), states, market, stale_policy="reject", clock=lambda: NOW
    )
    return svc, states, market


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
        "at most 2 bars are allowed"
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


def test_due_strategies_follow_the_clock() -> None:
    hourly = strategy("h")
    daily = parse_strategy({**json.loads(strategy("d").canonical_json()), "timeframe": "1d"})  # type: ignore[union-attr]
    paused = parse_strategy({**json.loads(strategy("p").canonical_json()), "status": "paused"})  # type: ignore[union-attr]
    svc, _, _ = make_service([hourly, daily, paused], {})
    minute = 60_000
    assert [s.strategy_id for s in svc.due_strategies(10 * H, minute)] == ["h"]
    assert [s.strategy_id for s in svc.due_strategies(10 * H + minute, minute)] == []
    assert {s.strategy_id for s in svc.due_strategies(24 * H, minute)} == {"h", "d"}


def test_due_strategies_ask_only_for_the_timeframes_that_closed_a_bar() -> None:
    svc, _, _ = make_service([strategy("h")], {})
    minute = 60_000
    svc.due_strategies(10 * H + 7 * minute, minute)
    svc.due_strategies(10 * H, minute)
    svc.due_strategies(10 * H, 5 * minute)  # a 5-minute schedule: same bars closed
    assert svc.strategies.list_calls == [  # type: ignore[attr-defined]
        ("active", "1m"),
        *[("active", tf) for tf in ("1m", "5m", "15m", "30m", "1h", "2h")],
        *[("active", tf) for tf in ("1m", "5m", "15m", "30m", "1h", "2h")],
    ]


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
    report = run_scheduled_tick(svc, tick_ms=NOW, interval_ms=60_000, chunk_size=3, fanout=queue)
    assert report.due == 10 and report.chunks_enqueued == len(queue.bodies) >= 4
    for body in queue.bodies:
        evaluate_chunk(svc, body)
    assert states.versions == {s.strategy_id: 1 for s in strats}  # type: ignore[attr-defined]
    for body in queue.bodies:  # an SQS redelivery of every chunk changes nothing
        evaluate_chunk(svc, body)
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

    def commit(self, state, changes):  # type: ignore[no-untyped-def]
        if not changes.empty:
            self.meeting.wait()
            if state.strategy_id in self.refuse:
                raise ConcurrentEvaluation(f"{state.strategy_id}: another commit came first")
        with self.lock:
            return super().commit(state, changes)


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
