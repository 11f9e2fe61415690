"""Order events end to end on moto: a commit writes its events in its own transaction, the
outbox stream feeds the publisher, the bus's rule feeds a queue, the delivery handler POSTs
each event signed. Dry runs and drafts write none; a commit that fails writes none."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import boto3
import pytest
from engine.adapters.dynamodb import DynamoRepositories, dynamo_repositories
from engine.adapters.dynamodb.models import OutboxModel
from engine.adapters.dynamodb.outbox import outbox_events
from engine.adapters.events.publisher import EventBridgeBus, Publisher, handle_stream_batch
from engine.adapters.events.stream import OutboxStream, streams_client
from engine.adapters.events.webhook import (
    RetrySchedule,
    SqsDeliveryQueue,
    WebhookSender,
    handle_delivery_batch,
)
from engine.adapters.events.wire import SIGNATURE_HEADER, verify
from engine.core.candles import Candles
from engine.core.strategy import parse_strategy
from engine.service.errors import ConcurrentEvaluation
from engine.service.execution import ExecutionService

from tests.support.fakes import MemoryMarket

REGION = "us-east-1"
H = 3_600_000
T0 = 1_704_067_200_000
SECRET = "whsec-test"

STRATEGY = {
    "strategy_id": "ev1",
    "name": "events",
    "assets": ["BTC/USDT"],
    "timeframe": "1h",
    "entry": {"left": "volume", "op": ">", "right": 5},
    "execution_config": {
        "stop_loss": {"type": "percent", "value": 0.02},
        "take_profit": {"type": "percent", "value": 0.04},
    },
}
# bar 0 quiet, bar 1 enters at 100 (stop 98, target 104), bar 2 reaches 105: target fills
BARS = [
    (T0, 100.0, 100.0, 100.0, 100.0, 1.0),
    (T0 + H, 100.0, 100.0, 100.0, 100.0, 10.0),
    (T0 + 2 * H, 100.0, 105.0, 100.0, 104.5, 1.0),
]


@pytest.fixture
def repos(aws: None) -> DynamoRepositories:
    return dynamo_repositories()


def _service(repos: DynamoRepositories, now: list[int]) -> ExecutionService:
    market = MemoryMarket({("BTC/USDT", "1h"): Candles.from_rows(BARS)})
    return ExecutionService(repos.strategies, repos.states, market, "warn", lambda: now[0])


def _outbox() -> list[OutboxModel]:
    return list(OutboxModel.scan())


def test_dry_runs_and_drafts_write_no_events_and_a_commit_writes_them_in_its_transaction(
    repos: DynamoRepositories,
) -> None:
    repos.strategies.put(parse_strategy(STRATEGY))
    now = [T0 + 2 * H]
    service = _service(repos, now)
    assert service.evaluate_by_id("ev1", persist=False).orders  # would enter
    assert service.evaluate_draft(STRATEGY).orders
    assert _outbox() == []
    result = service.evaluate_by_id("ev1")
    assert result.persisted
    (item,) = _outbox()
    assert (item.strategy_id, item.state_version) == ("ev1", 1)
    events = outbox_events("ev1")
    assert [e.type for e in events] == [
        "position.opened",
        "order.created",
        "order.filled",
        "order.created",
        "order.created",
    ]
    assert {e.data.get("order_id") for e in events[1:]} == {o.order_id for o in result.orders}
    # evaluated again at the same bar: nothing changes, no commit, no new events
    service.evaluate_by_id("ev1")
    assert len(_outbox()) == 1
    now[0] += H  # bar 2: the target fills, the stop is cancelled, the position closes
    service.evaluate_by_id("ev1")
    assert [e.type for e in outbox_events("ev1", after_version=1)] == [
        "order.filled",
        "order.cancelled",
        "position.closed",
    ]


def test_a_commit_that_loses_to_a_concurrent_one_writes_no_events(
    repos: DynamoRepositories,
) -> None:
    strategy = parse_strategy(STRATEGY)
    repos.strategies.put(strategy)
    now = [T0 + 2 * H]
    service = _service(repos, now)
    stale = repos.states.load([strategy])["ev1"]
    result = service.evaluate_by_id("ev1")  # commits version 1 and its events
    with pytest.raises(ConcurrentEvaluation):
        repos.states.commit(stale, result.changes)  # the same changes on the stale version
    assert [(i.strategy_id, i.state_version) for i in _outbox()] == [("ev1", 1)]


class Subscriber:
    """A webhook that answers from a script of statuses (None: a timeout), then 200."""

    def __init__(self, script: list[int | None]) -> None:
        self.script = list(script)
        self.received: list[tuple[bytes, dict[str, str]]] = []

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> int | None:
        status = self.script.pop(0) if self.script else 200
        if status == 200:
            self.received.append((body, dict(headers)))
        return status


def _receive(sqs: Any, url: str) -> list[dict[str, Any]]:
    answer = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
    )
    return [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
        }
        for m in answer.get("Messages", [])
    ]


def test_committed_events_reach_the_webhook_through_stream_bus_and_queue_signed(
    repos: DynamoRepositories,
) -> None:
    repos.strategies.put(parse_strategy(STRATEGY))
    now = [T0 + 2 * H]
    _service(repos, now).evaluate_by_id("ev1")
    # the stack's bus and its webhook rule, as template.yaml wires them
    events_client = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    events_client.create_event_bus(Name="orders")
    queue_url = sqs.create_queue(QueueName="webhook")["QueueUrl"]
    dead_url = sqs.create_queue(QueueName="webhook-dlq")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events_client.put_rule(
        Name="webhook",
        EventBusName="orders",
        EventPattern=json.dumps({"source": ["execution-engine"]}),
    )
    events_client.put_targets(
        Rule="webhook", EventBusName="orders", Targets=[{"Id": "q", "Arn": queue_arn}]
    )
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    stream = OutboxStream.of_table(
        dynamodb, streams_client(None, REGION), OutboxModel.Meta.table_name, "TRIM_HORIZON"
    )
    publisher = Publisher(EventBridgeBus(events_client, "orders"), sleep=lambda s: None)
    records = stream.poll()
    assert len(records) == 1
    assert handle_stream_batch(records, publisher) == {"batchItemFailures": []}
    # the stream delivers the record again (a retried batch): the same events, the same ids
    handle_stream_batch(records, publisher)
    subscriber = Subscriber([503, None])  # one 5xx and one timeout first
    sender = WebhookSender("https://hooks.example/x", SECRET, post=subscriber)
    delivery = SqsDeliveryQueue(sqs, queue_url, dead_url)
    schedule = RetrySchedule(attempts=8, base_s=0)
    for _ in range(6):
        batch = _receive(sqs, queue_url)
        if not batch:
            break
        answer = handle_delivery_batch(batch, sender, delivery, schedule)
        failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
        for message in batch:  # what Lambda does with the answer
            if message["messageId"] not in failed:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["receiptHandle"])
            else:
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["receiptHandle"], VisibilityTimeout=0
                )
    ids = [json.loads(body)["id"] for body, _ in subscriber.received]
    committed = [e.id for e in outbox_events("ev1")]
    assert sorted(set(ids)) == sorted(committed)  # every event, none other
    assert len(ids) == 2 * len(committed)  # published twice, delivered twice: same ids
    for body, headers in subscriber.received:
        assert verify(body, SECRET, headers[SIGNATURE_HEADER])
        assert headers["X-Event-Id"] == json.loads(body)["id"]
    bodies: dict[str, bytes] = {}
    for body, _ in subscriber.received:
        assert bodies.setdefault(json.loads(body)["id"], body) == body  # byte for byte
    assert sqs.receive_message(QueueUrl=dead_url).get("Messages", []) == []
