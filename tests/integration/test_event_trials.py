"""Seeded randomized trials of the order events path (issue 13): nothing committed is lost,
nothing uncommitted is sent, a duplicate is the same event.

Each trial evaluates a strategy bar by bar on random candles (the real core), committing
through a store that, like DynamoStateRepository, writes the commit's events into the outbox
in the same atomic step, with faults: commits refused (nothing written), commits whose answer
is lost (written, reported failed), ticks missed (catch-up) and repeated. The outbox's
stream feeds the real publisher (engine.adapters.events.publisher) under a simulated event source
mapping: random batch sizes, the function crashing mid-batch after putting some events (the
crash between commit and publish), the bus refusing entries, stream records delivered twice.
What the bus accepts goes (sometimes twice) to a simulated SQS queue with visibility
timeouts, receive counts and a redrive to a DLQ after 8 receipts, drained by the real
delivery handler (engine.adapters.events.webhook) with the real signer, posting to a subscriber that
answers 5xx or times out at random (at most 5 times in a row for one event).

What must hold, stated from the committed data and the subscriber's side alone:

- the ids the subscriber accepted are exactly the ids of the committed changes (every
  position opened or closed, order created, filled or cancelled, cooldown trip that was
  committed, computed from the committed items, not from the outbox): at least once each,
  none for a change that was never committed;
- every body carries a valid signature, and every copy of an event id is the same bytes;
- nothing is left in the dead-letter queue;
- the bus first received each strategy's events commit by commit (a subscriber restores the
  order within a commit, and across EventBridge's unordered delivery, by `sequence`).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from engine.adapters.events.publisher import Publisher, handle_stream_batch
from engine.adapters.events.webhook import RetrySchedule, WebhookSender, handle_delivery_batch
from engine.adapters.events.wire import SIGNATURE_HEADER, event_body, events_json, verify
from engine.core.candles import Candles
from engine.core.evaluate import compile_strategy, evaluate
from engine.core.events import SEQUENCE_STRIDE, Event, derive_events, event_id
from engine.core.market import MarketData
from engine.core.state import Changes, CooldownState, ExecutionState, Order, Position
from engine.core.strategy import Strategy, parse_strategy
from engine.core.timeframes import to_ms

TRIALS = 500  # about 10 s; `make test-fast` runs 40 of them (slow marker)
H = 3_600_000
T0 = 1_704_067_200_000
BARS = 16
SECRET = "trial-secret"
VISIBILITY_S = 360


class Crash(BaseException):
    """The publisher function dies (timeout, out of memory): nothing it caught or reported."""


# --- the committing side -------------------------------------------------------------------


@dataclass
class Store:
    """Committed state with its outbox, written together or not at all."""

    strategy: Strategy
    state: ExecutionState
    outbox: list[tuple[int, str]] = field(default_factory=list)  # (version, events JSON)
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    trips: set[str] = field(default_factory=set)  # oracle ids of committed cooldown trips
    last_trip: dict[str, tuple[Any, int, Any]] = field(default_factory=dict)

    def commit(
        self, read: ExecutionState, after: ExecutionState, changes: Changes, now: int
    ) -> None:
        assert read.version == self.state.version, "a stale commit would be refused"
        version = read.version + 1
        events = derive_events(read, changes, version=version, committed_ms=now)
        if events:
            self.outbox.append((version, events_json(events)))
        self.state = after.model_copy(update={"version": version})
        for p in changes.positions:
            self.positions[p.position_id] = p
        for o in changes.orders:
            self.orders[o.order_id] = o
        for c in changes.cooldowns:
            self._record_trip(c)

    def _record_trip(self, c: CooldownState) -> None:
        trip = (c.tripped_at, c.blocked_bars, c.tier)
        if c.tripped_at is not None and self.last_trip.get(c.asset) != trip:
            tripped = to_ms(c.tripped_at)
            sid = self.strategy.strategy_id
            self.trips.add(
                event_id(sid, "cooldown.tripped", c.asset, tripped, c.tier, c.blocked_bars)
            )
        self.last_trip[c.asset] = trip

    def committed_ids(self) -> set[str]:
        """What the committed items say must have been announced."""
        sid = self.strategy.strategy_id
        ids = set(self.trips)
        for p in self.positions.values():
            ids.add(event_id(sid, "position.opened", p.position_id))
            if p.status == "closed":
                ids.add(event_id(sid, "position.closed", p.position_id))
        for o in self.orders.values():
            ids.add(event_id(sid, "order.created", o.order_id))
            if o.status in ("filled", "cancelled"):
                ids.add(event_id(sid, f"order.{o.status}", o.order_id))
        return ids


def _strategy(rng: random.Random, n: int) -> Strategy:
    config: dict[str, Any] = {"max_open_positions": rng.choice([1, 2])}
    if rng.random() < 0.7:
        config["stop_loss"] = {"type": "percent", "value": rng.choice([0.01, 0.03])}
        config["take_profit"] = {"type": "percent", "value": rng.choice([0.01, 0.05])}
    doc: dict[str, Any] = {
        "strategy_id": f"trial-{n}",
        "name": "trial",
        "assets": ["AAA/USD", "BBB/USD"][: rng.choice([1, 2])],
        "timeframe": "1h",
        "entry": {"left": "volume", "op": ">", "right": 5},
        "exit": {"left": "volume", "op": "<", "right": 0.5},
        "execution_config": {
            **config,
            "cooldown_config": {"1h": {"short_loss_limit": 1, "short_window_bars": 2}},
        },
    }
    return parse_strategy(doc)


def _candles(rng: random.Random) -> Candles:
    rows = []
    price = 100.0
    for i in range(BARS):
        move = rng.uniform(-0.04, 0.04)
        open_ = price
        close = max(1.0, price * (1 + move))
        high = max(open_, close) * (1 + rng.uniform(0, 0.03))
        low = min(open_, close) * (1 - rng.uniform(0, 0.03))
        volume = rng.choice([0.1, 1.0, 1.0, 10.0])
        rows.append((T0 + i * H, open_, high, low, close, volume))
        price = close
    return Candles.from_rows(rows)


@dataclass
class Faults:
    counts: Counter[str] = field(default_factory=Counter)


def _evaluate_all(rng: random.Random, store: Store, faults: Faults) -> None:
    strategy = store.strategy
    compiled = compile_strategy(strategy)
    market = MarketData({(a, "1h"): _candles(rng) for a in strategy.assets})
    for bar in range(1, BARS):
        if rng.random() < 0.15:
            faults.counts["tick missed"] += 1
            continue
        for _ in range(2 if rng.random() < 0.1 else 1):  # a repeated tick
            read = store.state
            result = evaluate(compiled, read, market, T0 + (bar + 1) * H)
            if result.changes.empty:
                continue
            roll = rng.random()
            if roll < 0.15:
                faults.counts["commit refused"] += 1  # nothing written; the next tick retries
                continue
            store.commit(read, result.state, result.changes, T0 + (bar + 1) * H + 5)
            if roll < 0.3:
                faults.counts["commit answer lost"] += 1  # written; the caller retries


# --- the delivery side ---------------------------------------------------------------------


@dataclass
class Bus:
    """EventBridge: refuses entries at random; what it accepts goes to the webhook queue."""

    rng: random.Random
    queue: Queue
    faults: Faults
    first_put: list[Event] = field(default_factory=list)
    crash_after: int | None = None
    outage: int = 0  # calls still to refuse whole
    _seen: set[str] = field(default_factory=set)

    def put(self, events: Sequence[Event]) -> list[int]:
        if self.outage > 0:
            self.outage -= 1
            self.faults.counts["bus outage call"] += 1
            if self.rng.random() < 0.5:
                raise ConnectionError("EventBridge unavailable")
            return list(range(len(events)))
        refused = []
        for i, event in enumerate(events):
            if self.crash_after is not None:
                if self.crash_after == 0:
                    self.crash_after = None
                    self.faults.counts["publisher crashed"] += 1
                    raise Crash
                self.crash_after -= 1
            if self.rng.random() < 0.1:
                refused.append(i)
                self.faults.counts["entry refused"] += 1
                continue
            if event.id not in self._seen:
                self._seen.add(event.id)
                self.first_put.append(event)
            envelope = json.dumps(
                {"detail-type": event.type, "detail": event.model_dump(mode="json")}
            )
            self.queue.send(envelope)
            if self.rng.random() < 0.05:
                self.faults.counts["bus delivered twice"] += 1
                self.queue.send(envelope)
        return refused


@dataclass
class Message:
    message_id: str
    body: str
    visible_at: float = 0.0
    received: int = 0


@dataclass
class Queue:
    """SQS with a visibility timeout and a redrive policy (maxReceiveCount)."""

    max_receives: int
    now: float = 0.0
    messages: dict[str, Message] = field(default_factory=dict)
    dead: list[str] = field(default_factory=list)
    _next: int = 0

    def send(self, body: str) -> None:
        self._next += 1
        mid = f"m{self._next}"
        self.messages[mid] = Message(mid, body, self.now)

    def receive(self, limit: int) -> list[dict[str, Any]]:
        batch = []
        for message in sorted(self.messages.values(), key=lambda m: (m.visible_at, m.message_id)):
            if len(batch) == limit or message.visible_at > self.now:
                break
            if message.received >= self.max_receives:  # the redrive
                del self.messages[message.message_id]
                self.dead.append(message.body)
                continue
            message.received += 1
            message.visible_at = self.now + VISIBILITY_S
            batch.append(
                {
                    "messageId": message.message_id,
                    "receiptHandle": message.message_id,
                    "body": message.body,
                    "attributes": {"ApproximateReceiveCount": str(message.received)},
                }
            )
        return batch

    def delay(self, receipt_handle: str, seconds: int) -> None:
        self.messages[receipt_handle].visible_at = self.now + seconds

    def dead_letter(self, body: str, reason: str) -> None:
        self.dead.append(body)

    def delete(self, message_id: str) -> None:
        del self.messages[message_id]

    def next_visible(self) -> float | None:
        return min((m.visible_at for m in self.messages.values()), default=None)


@dataclass
class Subscriber:
    rng: random.Random
    faults: Faults
    accepted: dict[str, list[bytes]] = field(default_factory=dict)
    bad_signatures: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> int | None:
        if not verify(body, SECRET, headers[SIGNATURE_HEADER]):
            self.bad_signatures += 1
            return 401
        eid = json.loads(body)["id"]
        if self.failures[eid] < 5 and self.rng.random() < 0.3:
            self.failures[eid] += 1
            if self.rng.random() < 0.5:
                self.faults.counts["subscriber 5xx"] += 1
                return self.rng.choice([500, 502, 503])
            self.faults.counts["subscriber timeout"] += 1
            return None
        self.accepted.setdefault(eid, []).append(body)
        return 200


def _publish_all(rng: random.Random, store: Store, bus: Bus, faults: Faults) -> None:
    """The event source mapping over the outbox stream (records in write order)."""
    records = [
        {
            "eventName": "INSERT",
            "dynamodb": {
                "SequenceNumber": str(n),
                "NewImage": {"state_version": {"N": str(v)}, "events": {"S": text}},
            },
        }
        for n, (v, text) in enumerate(store.outbox)
    ]
    publisher = Publisher(bus, attempts=3, sleep=lambda s: None)
    position = 0
    while position < len(records):
        batch = records[position : position + rng.randint(1, 4)]
        if rng.random() < 0.05 and position > 0:  # a record the stream delivers again
            faults.counts["stream record twice"] += 1
            batch = [records[position - 1], *batch]
        if rng.random() < 0.15:
            bus.crash_after = rng.randint(0, 6)
        if rng.random() < 0.1:
            bus.outage = rng.randint(1, 6)  # longer than the publisher's 3 attempts, at times
        try:
            answer = handle_stream_batch(batch, publisher)
        except Crash:
            continue  # the mapping retries the whole batch
        finally:
            bus.crash_after = None
        failures = answer["batchItemFailures"]
        if failures:
            faults.counts["record reported failed"] += 1
            failed = failures[0]["itemIdentifier"]
            position = next(
                int(r["dynamodb"]["SequenceNumber"])
                for r in batch
                if r["dynamodb"]["SequenceNumber"] == failed
            )
        else:
            position = int(batch[-1]["dynamodb"]["SequenceNumber"]) + 1


def _deliver_all(rng: random.Random, queue: Queue, subscriber: Subscriber) -> None:
    sender = WebhookSender("https://subscriber.example/hook", SECRET, post=subscriber)
    schedule = RetrySchedule(attempts=queue.max_receives)
    while queue.messages:
        batch = queue.receive(rng.randint(1, 5))
        if not batch:
            upcoming = queue.next_visible()
            assert upcoming is not None
            queue.now = max(queue.now + 1, upcoming)
            continue
        answer = handle_delivery_batch(batch, sender, queue, schedule)
        failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
        for message in batch:
            if message["messageId"] not in failed:
                queue.delete(message["messageId"])


def run_trial(seed: int, faults: Faults) -> None:
    rng = random.Random(seed)
    store = Store(_strategy(rng, seed), ExecutionState(strategy_id=f"trial-{seed}"))
    _evaluate_all(rng, store, faults)
    queue = Queue(max_receives=RetrySchedule().attempts)
    bus = Bus(rng, queue, faults)
    _publish_all(rng, store, bus, faults)
    subscriber = Subscriber(rng, faults)
    _deliver_all(rng, queue, subscriber)

    committed = store.committed_ids()
    assert set(subscriber.accepted) == committed, seed
    assert subscriber.bad_signatures == 0, seed
    assert queue.dead == [], seed
    for eid, bodies in subscriber.accepted.items():
        assert len(set(bodies)) == 1, (seed, eid)  # every copy the same bytes
        assert json.loads(bodies[0])["id"] == eid
        faults.counts["duplicates received"] += len(bodies) - 1
    # commit after commit: no event of a commit before every event of the previous one
    # (within a commit, an entry the bus refused is put again after the others)
    commits = [e.sequence // SEQUENCE_STRIDE for e in bus.first_put]
    assert commits == sorted(commits), seed
    faults.counts["events"] += len(committed)
    faults.counts["commits"] += len(store.outbox)
    assert all(event_body(e) for e in bus.first_put)


@pytest.mark.slow
def test_every_committed_change_reaches_the_subscriber_and_nothing_else() -> None:
    faults = Faults()
    started = time.perf_counter()
    for seed in range(TRIALS):
        run_trial(seed, faults)
    elapsed = time.perf_counter() - started
    counts = faults.counts
    # the trials exercised what they claim to
    for fault in (
        "commit refused",
        "commit answer lost",
        "tick missed",
        "publisher crashed",
        "entry refused",
        "record reported failed",
        "bus outage call",
        "stream record twice",
        "bus delivered twice",
        "subscriber 5xx",
        "subscriber timeout",
        "duplicates received",
    ):
        assert counts[fault] > 0, fault
    assert counts["events"] > 20 * TRIALS
    print(f"{TRIALS} trials in {elapsed:.1f} s: {dict(counts)}")


def test_a_few_trials_for_make_test_fast() -> None:
    faults = Faults()
    for seed in range(10_000, 10_040):
        run_trial(seed, faults)
    assert faults.counts["duplicates received"] > 0


@pytest.mark.parametrize("answers", [[503] * 8, [None] * 8, [404]])
def test_an_event_the_subscriber_never_takes_ends_in_the_dead_letter_queue(
    answers: list[int | None],
) -> None:
    queue = Queue(max_receives=8)
    script = list(answers)
    calls: list[bytes] = []

    def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int | None:
        calls.append(body)
        return script.pop(0) if script else 200

    state = ExecutionState(strategy_id="s")
    trip = CooldownState(asset="A", tripped_at=T0, blocked_bars=3, tier="short")  # type: ignore[arg-type]
    (event,) = derive_events(state, Changes(cooldowns=[trip]), version=1, committed_ms=T0)
    queue.send(json.dumps({"detail": event.model_dump(mode="json")}))
    sender = WebhookSender("https://x.example", SECRET, post=post)
    schedule = RetrySchedule(attempts=8, base_s=10, cap_s=900)
    delays = []
    while queue.messages:
        batch = queue.receive(1)
        if not batch:
            upcoming = queue.next_visible()
            if upcoming is None:
                break  # redriven to the dead-letter queue
            delays.append(upcoming - queue.now)
            queue.now = upcoming
            continue
        answer = handle_delivery_batch(batch, sender, queue, schedule)
        if not answer["batchItemFailures"]:
            queue.delete(batch[0]["messageId"])
    assert len(queue.dead) == 1 and json.loads(queue.dead[0])["detail"]["id"] == event.id
    if answers == [404]:
        assert len(calls) == 1  # a refusal is not retried
    else:
        assert len(calls) == 8  # eight deliveries, then the DLQ
        # exponential backoff between them: 10, 20, 40, ... s; the last waits out the timeout
        assert delays == [10, 20, 40, 80, 160, 320, 640, VISIBILITY_S]


def test_the_retry_schedule_doubles_up_to_its_cap() -> None:
    schedule = RetrySchedule(attempts=8, base_s=10, cap_s=300)
    assert [schedule.delay_before(n) for n in range(2, 9)] == [10, 20, 40, 80, 160, 300, 300]
