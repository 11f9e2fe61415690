"""The order events' Lambda handlers (functions/publish_events, deliver_webhook,
notify_telegram) on moto: configuration from the environment, secrets from SSM, answers in
the ReportBatchItemFailures shape; and the local relay on the outbox stream."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from engine.adapters.dynamodb.models import OutboxModel
from engine.adapters.dynamodb.outbox import outbox_item
from engine.adapters.events.publisher import Publisher, batches, handle_stream_batch
from engine.adapters.events.stream import OutboxStream, streams_client
from engine.adapters.events.telegram import TelegramNotifier, message
from engine.adapters.events.webhook import RetrySchedule, WebhookSender
from engine.adapters.events.wire import SIGNATURE_HEADER, event_body, verify
from engine.core.events import Event, derive_events
from engine.core.state import Changes, CooldownState, ExecutionState
from engine.entrypoints.local.events import LocalRelay, relay_from_env
from engine.entrypoints.local.template import load_function_module
from engine.settings import settings

from tests.support.handlers import Context
from tests.support.template_tables import ROOT

REGION = "us-east-1"
T0 = 1_704_067_200_000


@pytest.fixture(autouse=True)
def settings_read_afresh() -> Any:
    """The handlers read `engine.settings.settings()`, once per process: these tests set the
    environment first, and leave no settings of theirs to later tests."""
    settings.cache_clear()
    yield
    settings.cache_clear()


def _handler(folder: str) -> Any:
    module = load_function_module(ROOT / "functions" / folder, "app", f"Test{folder}")
    return module


def _trip_events(version: int, assets: str = "ABC") -> list[Event]:
    trips = [
        CooldownState(asset=a, tripped_at=T0 + version * 3_600_000, blocked_bars=2, tier="short")  # type: ignore[arg-type]
        for a in assets
    ]
    return derive_events(
        ExecutionState(strategy_id="s1"), Changes(cooldowns=trips), version=version, committed_ms=T0
    )


def _record(events: list[Event], n: int) -> dict[str, Any]:
    return {
        "eventName": "INSERT",
        "dynamodb": {
            "SequenceNumber": str(n),
            "NewImage": {"events": {"S": json.dumps([e.model_dump(mode="json") for e in events])}},
        },
    }


class BusIntoQueue:
    """An EventBridge bus (moto) whose rule sends every engine event to an SQS queue."""

    def __init__(self, name: str) -> None:
        events_client = boto3.client("events", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        events_client.create_event_bus(Name=name)
        self.url = self.sqs.create_queue(QueueName=f"{name}-all")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        pattern = json.dumps({"source": ["execution-engine"]})
        events_client.put_rule(Name="all", EventBusName=name, EventPattern=pattern)
        events_client.put_targets(Rule="all", EventBusName=name, Targets=[{"Id": "q", "Arn": arn}])

    def received(self) -> list[dict[str, Any]]:
        """Every body the queue holds, taken off it."""
        bodies = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10)
            if not got.get("Messages"):
                return bodies
            for m in got["Messages"]:
                bodies.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])


def test_the_publisher_handler_puts_each_event_on_the_bus_with_its_type(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = BusIntoQueue("orders")
    monkeypatch.setenv("EVENT_BUS_NAME", "orders")
    module = _handler("publish_events")
    module.publisher.cache_clear()
    first, second = _trip_events(1), _trip_events(2, "D")
    removal = {"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "9"}}  # a TTL expiry
    answer = module.lambda_handler(
        {"Records": [_record(first, 1), removal, _record(second, 2)]}, Context()
    )
    assert answer == {"batchItemFailures": []}
    bodies = bus.received()
    assert sorted(b["detail"]["id"] for b in bodies) == sorted(e.id for e in first + second)
    assert {b["detail-type"] for b in bodies} == {"cooldown.tripped"}
    assert {b["source"] for b in bodies} == {"execution-engine"}
    module.publisher.cache_clear()


def test_republish_puts_a_strategys_outbox_events_on_the_bus_again(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m engine events republish`: what the publisher gave up on, from the outbox,
    with the same ids; --after-version picks the commits, --dry-run only lists them."""
    from engine.entrypoints.cli.main import main

    bus = BusIntoQueue("orders")
    first, second = _trip_events(1), _trip_events(2, "DE")
    outbox_item("s1", 1, first, T0).save()
    outbox_item("s1", 2, second, T0 + 3_600_000).save()
    outbox_item("s2", 1, _trip_events(1, "F"), T0).save()  # another strategy's: left alone

    assert main(["events", "republish", "s1", "--dry-run", "--aws"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == [e.id for e in first + second]

    assert (
        main(["events", "republish", "s1", "--after-version", "1", "--bus", "orders", "--aws"]) == 0
    )
    assert "2 events of s1 put on orders again" in capsys.readouterr().err
    bodies = bus.received()
    assert sorted(b["detail"]["id"] for b in bodies) == sorted(e.id for e in second)

    assert main(["events", "republish", "s1", "--aws"]) == 2  # no bus named anywhere
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: which bus? give --bus NAME or set EVENT_BUS_NAME"
    )


class FlakyBus:
    def __init__(self, refuse: list[set[int]]) -> None:
        self.refuse = refuse
        self.calls: list[list[str]] = []

    def put(self, events: list[Event]) -> list[int]:
        self.calls.append([e.id for e in events])
        return sorted(self.refuse.pop(0)) if self.refuse else []


def test_the_publisher_retries_only_what_the_bus_refused_then_reports_the_record() -> None:
    events = _trip_events(1, "ABCDEFGHIJKL")  # 12 events: two PutEvents calls of 10 and 2
    assert [len(b) for b in batches(events)] == [10, 2]
    sleeps: list[float] = []
    bus = FlakyBus([{3, 7}, set()])
    Publisher(bus, sleep=sleeps.append).publish(events)
    assert bus.calls[1] == [events[3].id, events[7].id]  # only the refused ones again
    assert sleeps == [0.2]
    always = FlakyBus([{0}] * 10)
    answer = handle_stream_batch(
        [_record(_trip_events(1, "A"), 5), _record(_trip_events(2, "B"), 6)],
        Publisher(always, sleep=sleeps.append),
    )
    # the first record failed: it and everything after it are retried by the mapping
    assert answer == {"batchItemFailures": [{"itemIdentifier": "5"}]}
    assert len(always.calls) == 4  # the publisher's attempts on the first record only


def test_the_delivery_handler_signs_with_the_ssm_secret_and_backs_off_on_5xx(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/engine/webhook", Value="ssm-secret", Type="SecureString")
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="webhook")["QueueUrl"]
    dead = sqs.create_queue(QueueName="webhook-dlq")["QueueUrl"]
    for key, value in {
        "WEBHOOK_URL": "https://hooks.example/in",
        "WEBHOOK_SECRET_PARAMETER": "/engine/webhook",
        "WEBHOOK_QUEUE_URL": queue,
        "WEBHOOK_DEAD_LETTER_QUEUE_URL": dead,
    }.items():
        monkeypatch.setenv(key, value)
    module = _handler("deliver_webhook")
    module._secret.cache_clear()
    module._queue.cache_clear()
    answers = {"A": 200, "B": 503, "C": 400}
    posted: list[tuple[bytes, Mapping[str, str]]] = []

    def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int | None:
        posted.append((body, headers))
        return answers[json.loads(body)["asset"]]

    # the network is the subscriber's: the handler's sender posts through `post`
    monkeypatch.setattr(module, "WebhookSender", functools.partial(WebhookSender, post=post))
    events = _trip_events(1)
    for e in events:
        sqs.send_message(
            QueueUrl=queue, MessageBody=json.dumps({"detail": e.model_dump(mode="json")})
        )
    received = sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    records = [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m["Attributes"],
        }
        for m in received
    ]
    answer = module.lambda_handler({"Records": records}, Context())
    by_asset = {json.loads(m["Body"])["detail"]["asset"]: m["MessageId"] for m in received}
    assert answer == {"batchItemFailures": [{"itemIdentifier": by_asset["B"]}]}  # retried
    for body, headers in posted:
        assert verify(body, "ssm-secret", headers[SIGNATURE_HEADER])
        assert body == event_body(json.loads(body))
    # the 5xx one waits out its backoff (10 s); the 400 one is in the DLQ at once
    assert sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages", []) == []
    (parked,) = sqs.receive_message(
        QueueUrl=dead, MessageAttributeNames=["All"], WaitTimeSeconds=0
    )["Messages"]
    assert json.loads(parked["Body"])["detail"]["asset"] == "C"
    assert "refused" in parked["MessageAttributes"]["reason"]["StringValue"]


def test_telegram_messages_name_the_fill_and_the_trip() -> None:
    (trip,) = _trip_events(1, "A")
    text = message(trip.model_dump(mode="json"))
    assert text is not None and "cooldown tripped (short tier)" in text and "s1 A" in text
    sent: list[tuple[str, bytes]] = []

    def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int | None:
        sent.append((url, body))
        return 200

    notifier = TelegramNotifier("123:abc", "-42", post=post)
    assert notifier.notify(trip.model_dump(mode="json"))
    (url, body) = sent[0]
    assert url == "https://api.telegram.org/bot123:abc/sendMessage"
    assert json.loads(body) == {"chat_id": "-42", "text": text}
    assert message({"type": "order.created", "data": {}}) is None


def test_the_local_relay_delivers_committed_events_signed_with_the_same_retries(
    aws: None, tmp_path: Path
) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    stream = OutboxStream.of_table(
        dynamodb, streams_client(None, REGION), OutboxModel.Meta.table_name, "TRIM_HORIZON"
    )
    events = _trip_events(1, "AB")
    outbox_item("s1", 1, events, T0).save()
    statuses = {events[0].id: [503, None, 200], events[1].id: [404]}
    got: list[bytes] = []

    def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int | None:
        assert verify(body, "local", headers[SIGNATURE_HEADER])
        got.append(body)
        return statuses[json.loads(body)["id"]].pop(0)

    sleeps: list[float] = []
    dead = tmp_path / "dead.jsonl"
    relay = LocalRelay(
        stream,
        WebhookSender("http://127.0.0.1:9/", "local", post=post),
        RetrySchedule(attempts=8, base_s=1),
        sleep=sleeps.append,
        dead_letter_file=dead,
    )
    assert relay.run_once() == 2
    assert relay.delivered == [events[0].id] and relay.dead_lettered == [events[1].id]
    assert sleeps == [1, 2]  # the delivery function's schedule
    assert json.loads(dead.read_text())["id"] == events[1].id
    assert relay.run_once() == 0  # nothing new


def test_the_local_relay_needs_a_secret_with_its_url() -> None:
    assert relay_from_env({}, "http://127.0.0.1:8000", REGION) is None
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        relay_from_env({"WEBHOOK_URL": "http://x/"}, "http://127.0.0.1:8000", REGION)
