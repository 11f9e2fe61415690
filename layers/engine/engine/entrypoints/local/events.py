"""The local stack's event path (`make dev`): the outbox stream to WEBHOOK_URL, signed.

In AWS the outbox stream feeds the publisher, the bus feeds a queue, and the queue feeds
the delivery function. Locally one thread does the same work in one process: it reads the
outbox stream on moto's server, and POSTs each event to WEBHOOK_URL with the same body, the
same `X-Signature-256` (WEBHOOK_SECRET) and the same retry schedule as the delivery function
(`RetrySchedule`; WEBHOOK_RETRY_BASE_SECONDS shortens it). An event that exhausts its
attempts, or that the webhook refuses (4xx), is printed as dead-lettered and appended to
WEBHOOK_DEAD_LETTER_FILE when set. Events are delivered one at a time, in stream order.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from engine.adapters.events.publisher import events_of_record
from engine.adapters.events.stream import OutboxStream
from engine.adapters.events.webhook import RetrySchedule, WebhookSender
from engine.adapters.events.wire import event_body
from engine.core.events import Event


@dataclass
class LocalRelay:
    stream: OutboxStream
    sender: WebhookSender
    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    sleep: Callable[[float], None] = time.sleep
    out: TextIO = sys.stderr
    dead_letter_file: Path | None = None
    delivered: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)

    def deliver(self, event: Event) -> bool:
        """One event, with every attempt of the schedule; False when it was dead-lettered."""
        data = event.model_dump(mode="json")
        outcome = "retry"
        for attempt in range(1, self.schedule.attempts + 1):
            if attempt > 1:
                self.sleep(self.schedule.delay_before(attempt))
            outcome = self.sender.deliver(data)
            if outcome != "retry":
                break
        if outcome == "delivered":
            self.delivered.append(event.id)
            return True
        self.dead_lettered.append(event.id)
        reason = "refused" if outcome == "refused" else f"{self.schedule.attempts} attempts failed"
        print(f"webhook: event {event.id} ({event.type}) dead-lettered: {reason}", file=self.out)
        if self.dead_letter_file is not None:
            with self.dead_letter_file.open("a", encoding="utf-8") as handle:
                handle.write(event_body(event).decode() + "\n")
        return False

    def run_once(self) -> int:
        """Deliver what the stream holds since the last call; the number of events."""
        count = 0
        for record in self.stream.poll():
            for event in events_of_record(record):
                self.deliver(event)
                count += 1
        return count

    def run(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # keep relaying: the API must not die with its webhook
                print(f"webhook relay: {exc}", file=self.out)
            stop.wait(interval_s)


def relay_from_env(env: Mapping[str, str], endpoint: str, region: str) -> LocalRelay | None:
    """The relay `make dev` starts when WEBHOOK_URL is set (WEBHOOK_SECRET is then required)."""
    url = env.get("WEBHOOK_URL", "").strip()
    if not url:
        return None
    secret = env.get("WEBHOOK_SECRET", "")
    if not secret:
        raise ValueError("WEBHOOK_URL is set but WEBHOOK_SECRET is empty: events must be signed")
    from engine.adapters import aws
    from engine.adapters.dynamodb.models import OutboxModel
    from engine.adapters.events.stream import streams_client

    dynamodb = aws.client("dynamodb", endpoint_url=endpoint, region_name=region)
    stream = OutboxStream.of_table(
        dynamodb, streams_client(endpoint, region), OutboxModel.Meta.table_name, "TRIM_HORIZON"
    )
    base = float(env.get("WEBHOOK_RETRY_BASE_SECONDS", "") or RetrySchedule().base_s)
    dead = env.get("WEBHOOK_DEAD_LETTER_FILE", "").strip()
    return LocalRelay(
        stream,
        WebhookSender(url, secret),
        RetrySchedule(base_s=base),
        dead_letter_file=Path(dead) if dead else None,
    )


def tail(stream: OutboxStream, out: TextIO, stop: threading.Event, interval_s: float) -> None:
    """`events tail`: each event as one JSON line, as the commits that made them arrive."""
    while not stop.is_set():
        for record in stream.poll():
            for event in events_of_record(record):
                out.write(json.dumps(event.model_dump(mode="json"), sort_keys=True) + "\n")
                out.flush()
        stop.wait(interval_s)
