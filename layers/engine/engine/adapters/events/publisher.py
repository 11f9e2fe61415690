"""The outbox stream to the EventBridge bus: each committed commit's events, in order.

The publisher Lambda receives batches of the outbox table's stream records (DynamoDB Streams
keep one strategy's items in write order, and Lambda reads a shard in order). For each record
in turn it puts the events of the commit on the bus, `detail-type` = the event type. When a
put keeps failing it stops at that record and reports it (and so every later record of the
batch) as failed: Lambda retries from there, so nothing is skipped and one strategy's events
reach the bus in commit order. A retry may put some events twice; they carry the same id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from engine.adapters.events.wire import event_body, parse_events
from engine.core.events import Event

# PutEvents takes at most 10 entries and 256 KB per request.
MAX_ENTRIES: Final = 10
MAX_REQUEST_BYTES: Final = 256 * 1024
DEFAULT_SOURCE: Final = "execution-engine"


class EventBus(Protocol):
    """Puts entries on a bus; returns the indexes of those it did not accept."""

    def put(self, events: Sequence[Event]) -> list[int]: ...


@dataclass
class EventBridgeBus:
    """engine.adapters.events.publisher.EventBus on an EventBridge bus (a botocore `events` client)."""

    client: Any
    bus_name: str
    source: str = DEFAULT_SOURCE

    def put(self, events: Sequence[Event]) -> list[int]:
        entries = [
            {
                "Source": self.source,
                "DetailType": e.type,
                "Detail": event_body(e).decode(),
                "EventBusName": self.bus_name,
            }
            for e in events
        ]
        answer = self.client.put_events(Entries=entries)
        return [i for i, entry in enumerate(answer.get("Entries", [])) if entry.get("ErrorCode")]


def batches(events: Sequence[Event]) -> Iterable[list[Event]]:
    """PutEvents-sized groups, in order."""
    group: list[Event] = []
    size = 0
    for event in events:
        n = len(event_body(event)) + len(event.type) + 64
        if group and (len(group) == MAX_ENTRIES or size + n > MAX_REQUEST_BYTES):
            yield group
            group, size = [], 0
        group.append(event)
        size += n
    if group:
        yield group


@dataclass
class Publisher:
    """Puts each commit's events on `bus`, retrying what it refused with exponential backoff."""

    bus: EventBus
    attempts: int = 4
    base_delay_s: float = 0.2
    sleep: Callable[[float], None] = time.sleep

    def publish(self, events: Sequence[Event]) -> None:
        """Raises PublishFailed when some events could not be put after every attempt."""
        for group in batches(events):
            pending = list(group)
            for attempt in range(self.attempts):
                try:
                    refused = set(self.bus.put(pending))
                except Exception as exc:  # the bus call itself failed: retry the whole group
                    if attempt == self.attempts - 1:
                        raise PublishFailed(f"PutEvents failed: {exc}") from exc
                    refused = set(range(len(pending)))
                pending = [e for i, e in enumerate(pending) if i in refused]
                if not pending:
                    break
                if attempt < self.attempts - 1:
                    self.sleep(self.base_delay_s * 2**attempt)
            if pending:
                raise PublishFailed(
                    f"{len(pending)} events refused by the bus, e.g. {pending[0].id}"
                )


class PublishFailed(Exception):
    """The bus kept refusing events: the stream record is reported and retried."""


def events_of_record(record: Mapping[str, Any]) -> list[Event]:
    """The events of one outbox stream record; none for a deletion (TTL) or another item."""
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return []
    image = record.get("dynamodb", {}).get("NewImage") or {}
    text = image.get("events", {}).get("S")
    return parse_events(text) if text else []


def handle_stream_batch(
    records: Sequence[Mapping[str, Any]], publisher: Publisher
) -> dict[str, list[dict[str, str]]]:
    """The publisher Lambda's work: its answer in the ReportBatchItemFailures shape."""
    for record in records:
        try:
            publisher.publish(events_of_record(record))
        except PublishFailed:
            sequence = str(record.get("dynamodb", {}).get("SequenceNumber", ""))
            return {"batchItemFailures": [{"itemIdentifier": sequence}]}
    return {"batchItemFailures": []}
