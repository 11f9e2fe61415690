"""The idempotency trials' machinery (tests/integration/test_idempotency.py runs them;
bench/soak.py runs the same loop for longer).

Idempotency under every delivery pattern, on the real DynamoDB adapters (moto in-process).

A *trial* is one delivery of one evaluation at one bar, in one of five patterns:

- ``repeat``: the same bar evaluated ten times in a row;
- ``concurrent``: eight threads evaluate the strategy at once (half the time all eight load
  their state before any of them commits, the worst case for the version condition);
- ``crash``: the first attempt dies between computing and committing, or just after
  committing (its answer lost), or computes and drops its result; then a retry;
- ``eventbridge``: the scheduled event delivered twice: one after the other to the bulk
  function's own ``lambda_handler``, or both at once to two "containers" running its job;
- ``sqs``: a fan-out chunk redelivered, one after the other through the same handler, or
  both at once to two "containers".

Two deliveries at once run the handler's job, not the whole handler, in two threads:
Powertools' logger and metrics are per container, and Lambda never gives one container two
invocations at once (sharing them between threads raced in Powertools' metric flush).

Each run stores a random strategy twice: the *trial* strategy (active), which receives its
evaluations through the pattern under test, and a *reference* strategy (a fresh id, paused so
that the schedule never picks it) evaluated exactly once per bar through
``ExecutionService.evaluate_by_id``. After every trial both strategies' items are read back
raw from the tables and compared: no duplicate position or order, at most one ``enter_long``
per (strategy, asset, bar), and the trial strategy's positions, orders, cooldowns and state
version equal the reference's (ids, which embed the strategy id, are replaced by what they
stand for). Runs go on for several bars so that positions, catch-up fills, time exits and
cooldowns carry over from one trial to the next.

A last test loses a commit's answer after DynamoDB applied it (a read timeout, a 500): the
retry must be the very same request, which DynamoDB answers from its idempotency window.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from engine.adapters import dynamodb
from engine.adapters.dynamodb import RetryPolicy, dynamo_repositories
from engine.adapters.dynamodb.models import (
    CooldownModel,
    OrderModel,
    OutboxModel,
    PositionModel,
    StrategyModel,
)
from engine.core.candles import Candles
from engine.core.evaluate import evaluate
from engine.core.market import MarketData
from engine.core.state import Changes, EvaluationResult, ExecutionState
from engine.core.strategy import Strategy, parse_strategy
from engine.entrypoints.local.template import load_function_module
from engine.service.errors import ConcurrentEvaluation, EngineError
from engine.service.execution import ExecutionService
from engine.service.ports import EvaluatedBar
from engine.service.schedule import ChunkIncomplete, evaluate_chunk, run_scheduled_tick
from engine.settings import Settings
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.model_instances import reset_model_data
from moto.dynamodb.models import dynamodb_backends

from tests.support.aws import REGION, fake_aws_env, models_restored, moto_requests_atomic
from tests.support.fakes import MemoryMarket

REPO = Path(__file__).resolve().parents[2]
H = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEED = 20_261_124
PATTERNS = ("repeat", "concurrent", "crash", "eventbridge", "sqs")
ASSETS = ("AAA/USD", "BBB/USD", "CCC/USD")
THREADS = 8
REPEATS = 10


# --- moto ---------------------------------------------------------------------------------


@contextmanager
def moto_tables() -> Iterator[None]:
    """moto's DynamoDB with the models' tables, each request atomic (threads race here as
    in AWS: between requests); environment and models restored afterwards."""
    with fake_aws_env(), models_restored(), moto_requests_atomic(), mock_aws():
        dynamodb.bind(host=None, region=REGION)
        dynamodb.create_tables(wait=True)
        yield


STATE_MODELS = (StrategyModel, PositionModel, OrderModel, CooldownModel)


def moto_table(model: Any) -> Any:
    """moto's own table behind a model. Used for the tests' bookkeeping only (emptying the
    tables between runs, reading them back): every request the engine makes goes through
    the DynamoDB API. moto spends most of each request serializing its answer; reading its
    tables directly keeps a thousand trials within a minute."""
    return dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(model.Meta.table_name)


def clear_state_tables() -> None:
    """Empty the strategy, state and outbox tables (moto copies a whole table once per item
    of a transaction that writes to it, and scans it in every query: small tables keep the
    trials fast; an outbox left to grow over a module's runs made them quadratic)."""
    for model in (*STATE_MODELS, OutboxModel):
        moto_table(model).items.clear()
    # moto keeps every model object it ever made (for its dashboard), the copies of the
    # tables each transaction takes included: drop them, as moto's own reset does
    reset_model_data()


def _plain(value: Any) -> Any:
    """A stored attribute value as plain data (numbers stay the strings DynamoDB keeps)."""
    if value.type == "M":
        return {k: _plain(v) for k, v in sorted(value.value.items())}
    if value.type == "L":
        return [_plain(v) for v in value.value]
    if value.type in ("SS", "NS"):
        return sorted(value.value)
    if value.type == "NULL":
        return None
    return value.value


def table_items(model: Any) -> list[dict[str, Any]]:
    """Every item of the model's table, raw: attribute names and values as stored."""
    return [
        {name: _plain(value) for name, value in item.attrs.items()}
        for item in moto_table(model).all_items()
    ]


# --- market data --------------------------------------------------------------------------


def make_candles(rng: np.random.Generator, bars: int, dropped: set[int]) -> Candles:
    """An hourly random walk with wicks, occasional gaps at the open, and some bars missing."""
    sigma = rng.uniform(0.004, 0.02)
    close = 100 * np.exp(np.cumsum(rng.normal(0, sigma, bars)))
    previous = np.r_[close[0], close[:-1]]
    gaps = np.where(rng.random(bars) < 0.15, rng.normal(0, 2 * sigma, bars), 0.0)
    open_ = previous * np.exp(gaps)
    wicks = np.abs(rng.normal(0, sigma, (2, bars)))
    keep = np.array([i not in dropped for i in range(bars)])
    return Candles(
        time=(T0 + np.arange(bars, dtype=np.int64) * H)[keep],
        open=open_[keep],
        high=(np.maximum(open_, close) * (1 + wicks[0]))[keep],
        low=(np.minimum(open_, close) * (1 - wicks[1]))[keep],
        close=close[keep],
        volume=rng.uniform(0, 10, bars)[keep],
    )


# --- scenarios ----------------------------------------------------------------------------


def random_condition(rng: random.Random) -> dict[str, Any]:
    return rng.choice(
        [
            {"left": "close", "op": ">", "right": "sma"},
            {"left": "close", "op": "crosses_above", "right": "sma"},
            {"left": "rsi", "op": "<", "right": rng.choice([40, 50, 60])},
            {"left": "volume", "op": ">", "right": rng.choice([3, 5, 7])},
            {"left": "close", "op": ">", "right": {"ref": "close", "shift": 1}},
        ]
    )


def random_strategy(rng: random.Random) -> dict[str, Any]:
    """A small random strategy document (no id, no status): short warm-ups, frequent
    entries, stops and targets near the price, optional time exits and cooldowns."""
    kind = rng.random()
    if kind < 0.4:
        entry: dict[str, Any] = random_condition(rng)
    elif kind < 0.6:
        entry = {"any": [random_condition(rng), random_condition(rng)]}
    elif kind < 0.85:
        entry = {"all": [random_condition(rng), random_condition(rng)]}
    else:
        entry = {"not": random_condition(rng)}
    config: dict[str, Any] = {
        "position_sizing": rng.choice(
            [
                {"type": "fixed_notional", "value": 1000},
                {"type": "fixed_quantity", "value": rng.choice([0.5, 1, 3])},
            ]
        ),
        "max_open_positions": rng.randint(1, 3),
        "fee_rate": rng.choice([0, 0.001]),
    }
    stop = rng.choice(
        [
            None,
            {"type": "percent", "value": rng.choice([0.005, 0.01, 0.02])},
            {"type": "atr", "indicator": "atr", "multiplier": rng.choice([0.5, 1, 2])},
        ]
    )
    if stop is not None:
        config["stop_loss"] = stop
    targets: list[dict[str, Any] | None] = [
        None,
        {"type": "percent", "value": rng.choice([0.01, 0.02, 0.04])},
        {"type": "atr", "indicator": "atr", "multiplier": rng.choice([1, 2])},
    ]
    if stop is not None:
        targets.append({"type": "risk_reward", "ratio": rng.choice([1, 1.5, 3])})
    target = rng.choice(targets)
    if target is not None:
        config["take_profit"] = target
    if rng.random() < 0.5:
        config["time_based_exits"] = {"max_hold_bars": rng.randint(1, 6)}
    if rng.random() < 0.6:
        config["cooldown_config"] = {
            "1h": {
                "short_loss_limit": rng.randint(1, 2),
                "short_window_bars": rng.randint(1, 5),
                "long_loss_limit": rng.choice([0, 2, 3]),
                "long_window_bars": rng.randint(5, 12),
            }
        }
    doc: dict[str, Any] = {
        "name": "idempotency trial",
        "assets": rng.sample(ASSETS, rng.choice([1, 1, 2])),
        "timeframe": "1h",
        "indicators": {
            "sma": {"fn": "SMA", "params": {"timeperiod": rng.randint(2, 6)}},
            "rsi": {"fn": "RSI", "params": {"timeperiod": rng.randint(2, 5)}},
            "atr": {"fn": "ATR", "params": {"timeperiod": rng.randint(2, 4)}},
        },
        "entry": entry,
        "execution_config": config,
    }
    if rng.random() < 0.6:
        doc["exit"] = rng.choice(
            [
                {"left": "close", "op": "crosses_below", "right": "sma"},
                {"left": "rsi", "op": ">", "right": 70},
                {"left": "volume", "op": "<", "right": 1},
            ]
        )
    return doc


@dataclass
class Scenario:
    """One run: a strategy, its candles, and the evaluation times of its bars."""

    number: int
    doc: dict[str, Any]
    candles: dict[tuple[str, str], Candles]
    times: list[int]  # now (ms) of each step: the close of its bar plus a few seconds
    patterns: list[str]

    @property
    def trial_id(self) -> str:
        return f"run{self.number:06d}"

    @property
    def reference_id(self) -> str:
        return f"run{self.number:06d}-ref"

    def strategy(self, strategy_id: str, status: str) -> Strategy:
        return parse_strategy({**self.doc, "strategy_id": strategy_id, "status": status})


def make_scenario(rng: random.Random, number: int, steps: int, patterns: Sequence[str]) -> Scenario:
    doc = random_strategy(rng)
    bars_at: list[int] = []
    bar = rng.randint(2, 7)
    for _ in range(steps):
        bars_at.append(bar)
        bar += rng.choice([1, 1, 1, 2, 3])  # more than one: catch-up over missed bars
    total = bars_at[-1] + 2
    np_rng = np.random.default_rng(rng.getrandbits(32))
    candles = {}
    for asset in doc["assets"]:
        # markets close now and then: bars missing, but never the bar a step evaluates
        dropped = {i for i in range(1, total) if i not in bars_at and rng.random() < 0.05}
        candles[(asset, "1h")] = make_candles(np_rng, total, dropped)
    times = [T0 + (b + 1) * H + rng.randint(0, 59) * 1000 for b in bars_at]
    return Scenario(number, doc, candles, times, [rng.choice(patterns) for _ in bars_at])


# --- stored state, read back raw ------------------------------------------------------------


def _sorted(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda i: json.dumps(i, sort_keys=True))


@dataclass
class StoredState:
    """One strategy's items, with ids replaced by what they stand for."""

    head: dict[str, Any]
    positions: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    cooldowns: list[dict[str, Any]]
    duplicates: list[str]

    def comparable(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "positions": self.positions,
            "orders": self.orders,
            "cooldowns": self.cooldowns,
        }


def stored_state(tables: dict[str, list[dict[str, Any]]], strategy_id: str) -> StoredState:
    def mine(model: Any) -> list[dict[str, Any]]:
        return [row for row in tables[model.Meta.table_name] if row["strategy_id"] == strategy_id]

    duplicates: list[str] = []
    heads = mine(StrategyModel)
    head = (
        {
            "state_version": heads[0].get("state_version"),
            "cooldowns": heads[0].get("cooldown_assets"),
        }
        if heads
        else {}
    )
    raw_positions = mine(PositionModel)
    key_of = {p["position_id"]: f"{p['asset']}@{p['entry_time']}" for p in raw_positions}
    for key, n in Counter(key_of.values()).items():
        if n > 1:
            duplicates.append(f"{strategy_id}: {n} positions entered at {key}")
    positions = []
    for p in raw_positions:
        item = {k: v for k, v in p.items() if k not in ("strategy_id", "position_id")}
        item["open_shard"] = "open_shard" in p
        positions.append(item)
    raw_orders = mine(OrderModel)
    entries = Counter(
        f"{o['asset']}@{o['created_at']}" for o in raw_orders if o["side"] == "enter_long"
    )
    for key, n in entries.items():
        if n > 1:
            duplicates.append(f"{strategy_id}: {n} enter_long orders at {key}")
    kinds = Counter((o["position_id"], o["side"], o["type"]) for o in raw_orders)
    for (position, side, kind), n in kinds.items():
        # one entry, one stop, one target per position; a market exit at most once too
        if n > 1:
            duplicates.append(f"{strategy_id}: {n} {side}/{kind} orders of {position}")
    fills = Counter(
        o["position_id"] for o in raw_orders if o["side"] == "exit_long" and o["status"] == "filled"
    )
    for position, n in fills.items():
        if n > 1:
            duplicates.append(f"{strategy_id}: position {position} exited {n} times")
    orders = []
    for o in raw_orders:
        item = {k: v for k, v in o.items() if k not in ("strategy_id", "order_id", "position_id")}
        item["position"] = key_of.get(o["position_id"], f"missing {o['position_id']}")
        item["open_shard"] = "open_shard" in o
        orders.append(item)
    cooldowns = []
    for c in mine(CooldownModel):
        item = {k: v for k, v in c.items() if k != "strategy_id"}
        # losses exiting on the same bar are listed in no particular order
        item["losses"] = _sorted(
            [
                {"exit_time": loss["exit_time"], "position": key_of.get(loss["position_id"], "?")}
                for loss in c.get("losses") or []
            ]
        )
        cooldowns.append(item)
    return StoredState(head, _sorted(positions), _sorted(orders), _sorted(cooldowns), duplicates)


# --- the recording state repository ------------------------------------------------------


class Crash(BaseException):
    """The process dies: not an Exception, so nothing in the engine catches it."""


@dataclass(frozen=True)
class Commit:
    strategy_id: str
    read_version: int
    wrote: bool  # committed a non-empty change
    outcome: str  # "ok" or the error code


class RecordingStates:
    """The real DynamoStateRepository with a log of commits, and hooks that run just before
    and just after a commit (crashes, barriers, delays). Hooks apply to one strategy."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.log: list[Commit] = []
        self.before: Callable[[ExecutionState], None] | None = None
        self.after: Callable[[ExecutionState], None] | None = None
        self.hooked: str | None = None
        self._lock = threading.Lock()

    def load(self, strategies: Sequence[Strategy]) -> dict[str, ExecutionState]:
        loaded: dict[str, ExecutionState] = self.inner.load(strategies)
        return loaded

    def commit(
        self, state: ExecutionState, changes: Changes, evaluated: EvaluatedBar | None = None
    ) -> int:
        hooked = state.strategy_id == self.hooked
        if hooked and self.before is not None:
            self.before(state)
        try:
            version: int = self.inner.commit(state, changes, evaluated)
        except EngineError as exc:
            self._record(Commit(state.strategy_id, state.version, False, exc.code))
            raise
        self._record(Commit(state.strategy_id, state.version, not changes.empty, "ok"))
        if hooked and self.after is not None:
            self.after(state)
        return version

    def record_bars(
        self, evaluated: Sequence[tuple[ExecutionState, EvaluatedBar]]
    ) -> Mapping[str, EngineError]:
        """Quiet evaluations' bars: logged as commits that wrote no change; the hooks run
        for the hooked strategy as they do around a commit."""
        hooked = next((state for state, _ in evaluated if state.strategy_id == self.hooked), None)
        if hooked is not None and self.before is not None:
            self.before(hooked)
        failures: Mapping[str, EngineError] = self.inner.record_bars(evaluated)
        for state, _ in evaluated:
            error = failures.get(state.strategy_id)
            outcome = "ok" if error is None else error.code
            self._record(Commit(state.strategy_id, state.version, False, outcome))
        if hooked is not None and self.after is not None:
            self.after(hooked)
        return failures

    def _record(self, commit: Commit) -> None:
        with self._lock:
            self.log.append(commit)

    def unhook(self) -> None:
        self.before = self.after = None
        self.hooked = None


# --- the bulk function's handler ---------------------------------------------------------


class LambdaContext:
    """The parts of a Lambda context that Powertools reads."""

    function_name = "EvaluateBulkFunction"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:EvaluateBulkFunction"
    memory_limit_in_mb = 1024
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/EvaluateBulkFunction"
    log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def bulk_handler_module() -> ModuleType:
    return load_function_module(REPO / "functions" / "evaluate_bulk", "app", "evaluate_bulk")


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_event(now_ms: int) -> dict[str, Any]:
    """events/schedule.json at another time."""
    event: dict[str, Any] = json.loads((REPO / "events" / "schedule.json").read_text())
    event["time"] = iso(now_ms)
    event["id"] = f"tick-{now_ms}"
    return event


def sqs_record(body: str, message_id: str, receive_count: int = 1) -> dict[str, Any]:
    """One record shaped like events/sqs_fanout.json's."""
    template: dict[str, Any] = json.loads((REPO / "events" / "sqs_fanout.json").read_text())
    record: dict[str, Any] = copy.deepcopy(template["Records"][0])
    record.update(
        messageId=message_id,
        receiptHandle=f"{message_id}-receipt-{receive_count}",
        body=body,
    )
    record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    record.pop("md5OfBody", None)
    return record


@contextmanager
def patched(module: ModuleType, **values: Any) -> Iterator[None]:
    saved = {name: getattr(module, name) for name in values}
    try:
        for name, value in values.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


# --- trials --------------------------------------------------------------------------------


@dataclass
class Tally:
    trials: int = 0
    by_pattern: Counter[str] = field(default_factory=Counter)
    changed: int = 0  # trials whose bar changed something (the reference committed)
    conflicts: int = 0  # ConcurrentEvaluation answers seen
    duplicates: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "by_pattern": dict(sorted(self.by_pattern.items())),
            "changed": self.changed,
            "conflicts": self.conflicts,
            "duplicates": len(self.duplicates),
            "mismatches": len(self.mismatches),
        }


class IdempotencyTrials:
    """Runs scenarios on one moto table set; use inside `moto_tables()`."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        repos = dynamo_repositories(retry=RetryPolicy(attempts=4, sleep=lambda _: None))
        self.strategies = repos.strategies
        self.states = RecordingStates(repos.states)
        self.market = MemoryMarket()
        self.now = T0
        self.service = ExecutionService(
            strategies=repos.strategies,
            states=self.states,  # type: ignore[arg-type]
            market_data=self.market,
            stale_policy="reject",
            clock=lambda: self.now,
        )
        self.handler = bulk_handler_module()
        self.context = LambdaContext()
        self.pool = ThreadPoolExecutor(max_workers=THREADS)
        self.tally = Tally()
        self.runs = 0

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    @contextmanager
    def handler_wired(self) -> Iterator[None]:
        """The bulk handler on this service, with the schedule's production settings."""
        with patched(
            self.handler,
            service=lambda: self.service,
            settings=lambda: Settings(schedule_interval_ms=60_000, bulk_chunk_size=200),
        ):
            yield

    # --- a run -----------------------------------------------------------------------

    def run(self, patterns: Sequence[str] = PATTERNS, steps: int = 6) -> None:
        """One scenario: a fresh strategy pair, then `steps` bars, one trial each."""
        scenario = make_scenario(self.rng, self.runs, steps, patterns)
        self.runs += 1
        clear_state_tables()
        self.market.candles = scenario.candles
        self.strategies.put(scenario.strategy(scenario.trial_id, "active"))
        self.strategies.put(scenario.strategy(scenario.reference_id, "paused"))
        with self.handler_wired():
            for step, (now, pattern) in enumerate(
                zip(scenario.times, scenario.patterns, strict=True)
            ):
                self.trial(scenario, step, now, pattern)

    def trial(self, scenario: Scenario, step: int, now: int, pattern: str) -> None:
        self.now = now
        label = f"run {scenario.number} step {step} ({pattern}, bar closing {iso(now)})"
        tally = self.tally
        tally.trials += 1
        tally.by_pattern[pattern] += 1
        # the reference: one clean evaluation of the same bar
        try:
            self.service.evaluate_by_id(scenario.reference_id)
        except EngineError as exc:
            tally.mismatches.append(f"{label}: the reference evaluation failed: {exc.message}")
            self.states.log.clear()
            return
        reference_commits = [c for c in self.states.log if c.strategy_id == scenario.reference_id]
        expected_writes = int(bool(reference_commits) and reference_commits[-1].wrote)
        tally.changed += expected_writes
        self.states.log.clear()
        problems: list[str] = []
        try:
            getattr(self, f"deliver_{pattern}")(scenario.trial_id, problems)
        except Exception as exc:
            problems.append(f"delivery failed: {type(exc).__name__}: {exc}")
        finally:
            self.states.unhook()
        commits = [c for c in self.states.log if c.strategy_id == scenario.trial_id]
        writes = sum(c.wrote for c in commits)
        tally.conflicts += sum(c.outcome == "concurrent_evaluation" for c in commits)
        if writes != expected_writes:
            problems.append(f"{writes} commits wrote changes, the reference {expected_writes}")
        self.states.log.clear()
        tables = {m.Meta.table_name: table_items(m) for m in STATE_MODELS}
        trial = stored_state(tables, scenario.trial_id)
        reference = stored_state(tables, scenario.reference_id)
        tally.duplicates += [f"{label}: {d}" for d in trial.duplicates + reference.duplicates]
        if trial.comparable() != reference.comparable():
            problems.append(
                "stored state differs from a single clean evaluation: "
                + _difference(trial.comparable(), reference.comparable())
            )
        tally.mismatches += [f"{label}: {p}" for p in problems]

    # --- the delivery patterns ---------------------------------------------------------

    def deliver_repeat(self, sid: str, problems: list[str]) -> None:
        """The same bar evaluated ten times in a row."""
        results = [self.service.evaluate_by_id(sid) for _ in range(REPEATS)]
        first = results[0]
        for n, again in enumerate(results[1:], start=2):
            if not again.changes.empty:
                problems.append(f"evaluation {n} of the same bar changed {again.changes}")
            if _state(again) != _state(first) or again.bar != first.bar:
                problems.append(f"evaluation {n} of the same bar answered another state")

    def deliver_concurrent(self, sid: str, problems: list[str]) -> None:
        """Eight evaluations at once; with the barrier, all load before any commits."""
        lined_up = self.rng.random() < 0.5
        if lined_up:
            barrier = threading.Barrier(THREADS, timeout=30)

            def line_up(_state: ExecutionState) -> None:
                barrier.wait()

            self.states.before = line_up
        else:
            delays = [self.rng.uniform(0, 0.002) for _ in range(THREADS)]
            self.states.before = lambda _state: time.sleep(delays.pop())
        self.states.hooked = sid
        futures = [self.pool.submit(self.service.evaluate_by_id, sid) for _ in range(THREADS)]
        outcomes: list[Any] = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=60))
            except ConcurrentEvaluation as exc:
                outcomes.append(exc)
            except Exception as exc:
                problems.append(f"a concurrent evaluation failed: {type(exc).__name__}: {exc}")
        winners = [o for o in outcomes if not isinstance(o, Exception) and not o.changes.empty]
        losers = [o for o in outcomes if isinstance(o, ConcurrentEvaluation)]
        if len(winners) > 1:
            problems.append(f"{len(winners)} concurrent evaluations committed changes")
        if lined_up and winners and len(losers) != THREADS - 1:
            problems.append(f"lined up: 1 winner but {len(losers)} answered 409, not 7")
        if not winners and losers:
            problems.append("some evaluations answered 409 but none committed")

    def deliver_crash(self, sid: str, problems: list[str]) -> None:
        """The first attempt dies before or after its commit, or drops what it computed;
        the retry must leave the store as one clean evaluation would."""
        how = self.rng.choice(["before_commit", "after_commit", "dry_run", "computed_only"])
        if how in ("before_commit", "after_commit"):

            def die(_state: ExecutionState) -> None:
                self.states.unhook()  # only the first attempt dies
                raise Crash(how)

            setattr(self.states, "before" if how == "before_commit" else "after", die)
            self.states.hooked = sid
            try:
                self.service.evaluate_by_id(sid)
                problems.append("the crash did not happen")
            except Crash:
                pass
        elif how == "dry_run":
            self.service.evaluate_by_id(sid, persist=False)
        else:
            strategy = self.strategies.get(sid)
            assert strategy is not None
            state = self.states.load([strategy])[sid]
            market = MarketData(
                {
                    (asset, strategy.timeframe): self.market.fetch(
                        asset, strategy.timeframe, 10_000, self.now
                    )
                    for asset in strategy.assets
                }
            )
            evaluate(strategy, state, market, self.now)  # computed, never committed
        retry = self.service.evaluate_by_id(sid)
        if how == "after_commit" and not retry.changes.empty:
            problems.append(f"the retry after a lost answer changed {retry.changes}")

    def deliver_sqs(self, sid: str, problems: list[str]) -> None:
        """One fan-out chunk delivered twice: redelivered to the bulk handler after the first
        delivery, or handed to two consumers at once (each runs the handler's own job,
        engine.service.schedule.evaluate_chunk: the handler's batch processor is per container)."""
        body = json.dumps({"strategy_ids": [sid], "scheduled_time_ms": self.now})
        if self.rng.random() < 0.5:
            message_id = f"msg-{sid}-{self.now}"
            for receive_count in (1, 2):
                event = {"Records": [sqs_record(body, message_id, receive_count)]}
                answer = self.handler.lambda_handler(event, self.context)
                if answer != {"batchItemFailures": []}:
                    problems.append(f"SQS delivery {receive_count} answered {answer}")
            return

        def consume() -> None:
            for _ in range(3):  # a consumer that lost the race: SQS redelivers
                try:
                    evaluate_chunk(self.service, body)
                    return
                except ChunkIncomplete:
                    continue
            evaluate_chunk(self.service, body)

        for future in [self.pool.submit(consume) for _ in range(2)]:
            future.result(timeout=60)

    def deliver_eventbridge(self, sid: str, problems: list[str]) -> None:
        """The scheduled event twice: one after the other to the bulk handler, or both at
        once to two containers, each running the tick's job (engine.service.schedule's
        run_scheduled_tick, what the handler runs: Powertools' logger and metrics belong to
        one container, which Lambda never gives two invocations at once). A delivery that
        failed is run again, as Lambda's asynchronous retry does."""
        event = scheduled_event(self.now)

        def deliver() -> dict[str, Any]:
            answer: dict[str, Any] = self.handler.lambda_handler(copy.deepcopy(event), self.context)
            return answer

        def tick() -> dict[str, Any]:
            report = run_scheduled_tick(self.service, tick_ms=self.now, chunk_size=200, fanout=None)
            if report.failures:
                raise RuntimeError(f"{len(report.failures)} due strategies failed")
            return {"due": report.due, "evaluated": report.evaluated, "chunks": 0}

        if self.rng.random() < 0.5:
            # one after the other: the first evaluates the bar, the second finds nothing due
            answers = [deliver(), deliver()]
            seen = [(a["due"], a["evaluated"], a["chunks"]) for a in answers]
            if seen != [(1, 1, 0), (0, 0, 0)]:
                problems.append(f"scheduled deliveries answered {answers}")
        else:

            def with_retries() -> dict[str, Any]:
                for _ in range(3):
                    try:
                        return tick()
                    except RuntimeError:
                        continue
                return tick()

            # at once: both may find it due and evaluate it (one commit wins, the other loses
            # the version race and, retried, finds it evaluated), at least one does
            answers = [
                f.result(timeout=60) for f in [self.pool.submit(with_retries) for _ in range(2)]
            ]
            if not all(a["evaluated"] <= a["due"] <= 1 for a in answers) or not any(
                a["evaluated"] for a in answers
            ):
                problems.append(f"concurrent scheduled deliveries answered {answers}")


def _state(result: EvaluationResult) -> dict[str, Any]:
    """What an answer says about the state after it, in no particular order."""
    state = result.state
    return {
        "version": state.version,
        "positions": sorted(p.model_dump_json() for p in state.positions),
        "orders": sorted(o.model_dump_json() for o in state.orders),
        "cooldowns": {a: c.model_dump_json() for a, c in state.cooldowns.items()},
        "answered": sorted(p.model_dump_json() for p in result.positions),
        "cooldown_status": sorted(c.model_dump_json() for c in result.cooldowns),
    }


def _difference(trial: dict[str, Any], reference: dict[str, Any]) -> str:
    parts = []
    for key in reference:
        if trial.get(key) != reference[key]:
            parts.append(f"{key}: trial {trial.get(key)} != reference {reference[key]}")
    return "; ".join(parts)[:2000]


# --- running the trials ---------------------------------------------------------------------

STEPS_PER_RUN = 6
# Runs of six bars per pattern: 1,008 trials in all. The patterns that evaluate eight or ten
# times per trial get fewer of them. The bulk handler's two patterns are in
# test_idempotency_handlers.py, so that pytest-xdist runs the two halves side by side.
RUNS = {"repeat": 17, "concurrent": 17, "crash": 45, "eventbridge": 44, "sqs": 45}


def trial_runner() -> Iterator[IdempotencyTrials]:
    """A module-scoped fixture's body: one moto table set and one runner for the module."""
    with moto_tables():
        runner = IdempotencyTrials(SEED)
        try:
            yield runner
        finally:
            runner.close()


def run_pattern(trials: IdempotencyTrials, pattern: str) -> None:
    trials.rng.seed(f"{SEED}-{pattern}")  # each pattern's trials are the same however run
    tally = trials.tally = Tally()
    for _ in range(RUNS[pattern]):
        trials.run([pattern], STEPS_PER_RUN)
    assert tally.trials == RUNS[pattern] * STEPS_PER_RUN
    assert tally.duplicates == []
    assert tally.mismatches == []
    # the trials did exercise something: bars that enter, exit, fill or trip cooldowns
    assert tally.changed >= tally.trials // 4
    if pattern == "concurrent":
        assert tally.conflicts > 0
