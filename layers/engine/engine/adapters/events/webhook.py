"""Webhook delivery: one POST per event, signed, retried with exponential backoff.

Why a delivery function and not EventBridge API destinations: an API destination sends the
event with static headers or a connection's auth (API key, basic, OAuth); it cannot compute
an HMAC of each body, which is what `X-Signature-256` is. So a rule sends the bus's events to
an SQS queue, and the delivery function POSTs each one with its signature. The queue gives
the retries: a 5xx, 408, 429, timeout or connection failure leaves the message on the queue
with its visibility pushed out to the next backoff delay; after `RetrySchedule.attempts`
receipts the queue's redrive policy moves it to the dead-letter queue, which an alarm
watches. Any other 4xx is the subscriber refusing the event: retrying cannot help, so it goes
to the dead-letter queue at once. Locally (`make dev`) the same schedule drives a thread.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from engine.adapters.events.wire import ID_HEADER, SIGNATURE_HEADER, TYPE_HEADER, event_body, sign

Outcome = Literal["delivered", "retry", "refused"]
RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})
DEFAULT_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class RetrySchedule:
    """Attempts in all (the first included) and the delay before attempt n >= 2:
    base * 2^(n-2), capped. The template's webhook queue has maxReceiveCount = attempts."""

    attempts: int = 8
    base_s: float = 10.0
    cap_s: float = 900.0

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt` (2 for the first retry)."""
        return float(min(self.cap_s, self.base_s * 2 ** max(0, attempt - 2)))


def classify(status: int | None) -> Outcome:
    """What a delivery's answer means: `None` is a timeout or a failed connection."""
    if status is None or status >= 500 or status in RETRYABLE_STATUSES:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    return "refused"


Post = Callable[[str, bytes, Mapping[str, str], float], int | None]


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int | None:
    """POST with the standard library; the status, or None on a timeout or network error."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, TimeoutError, OSError):
        return None


@dataclass
class WebhookSender:
    """Signs and POSTs one event's body; the body is the event's canonical JSON."""

    url: str
    secret: str
    post: Post = http_post
    timeout_s: float = DEFAULT_TIMEOUT_S

    def headers(self, event: Mapping[str, Any], body: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": "execution-engine-webhook/1",
            SIGNATURE_HEADER: sign(body, self.secret),
            ID_HEADER: str(event.get("id", "")),
            TYPE_HEADER: str(event.get("type", "")),
        }

    def deliver(self, event: Mapping[str, Any]) -> Outcome:
        body = event_body(dict(event))
        return classify(self.post(self.url, body, self.headers(event, body), self.timeout_s))


def event_of_message(body: str) -> dict[str, Any]:
    """The engine event in an SQS message from the bus's rule: the EventBridge envelope's
    `detail` (or the event itself, as the local relay sends it)."""
    envelope = json.loads(body)
    if not isinstance(envelope, dict):
        raise ValueError("an event message is a JSON object")
    detail = envelope.get("detail", envelope)
    if not isinstance(detail, dict) or "id" not in detail or "type" not in detail:
        raise ValueError("the message holds no engine event (no id and type)")
    return detail


class DeliveryQueue(Protocol):
    """What the delivery function does to its queue besides answering batch failures."""

    def delay(self, receipt_handle: str, seconds: int) -> None: ...

    def dead_letter(self, body: str, reason: str) -> None: ...


@dataclass
class SqsDeliveryQueue:
    """engine.adapters.events.webhook.DeliveryQueue on SQS (a botocore `sqs` client)."""

    client: Any
    queue_url: str
    dead_letter_url: str

    def delay(self, receipt_handle: str, seconds: int) -> None:
        self.client.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )

    def dead_letter(self, body: str, reason: str) -> None:
        self.client.send_message(
            QueueUrl=self.dead_letter_url,
            MessageBody=body,
            MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:256]}},
        )


def handle_delivery_batch(
    records: Sequence[Mapping[str, Any]],
    sender: WebhookSender,
    queue: DeliveryQueue,
    schedule: RetrySchedule,
) -> dict[str, list[dict[str, str]]]:
    """The delivery function's work on one SQS batch, answered as ReportBatchItemFailures.

    A failed delivery stays on the queue (reported) with its visibility set to the next
    backoff delay; the queue's redrive moves it to the dead-letter queue after
    `schedule.attempts` receipts. A refused one (4xx) or one that is no event is sent to the
    dead-letter queue directly and removed.
    """
    failures: list[dict[str, str]] = []
    for record in records:
        message_id = str(record.get("messageId", ""))
        body = str(record.get("body", ""))
        try:
            event = event_of_message(body)
        except ValueError as exc:
            queue.dead_letter(body, f"not an event: {exc}")
            continue
        outcome = sender.deliver(event)
        if outcome == "delivered":
            continue
        if outcome == "refused":
            queue.dead_letter(body, f"refused by the subscriber: event {event['id']}")
            continue
        received = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
        if received < schedule.attempts:
            queue.delay(
                str(record.get("receiptHandle", "")), int(schedule.delay_before(received + 1))
            )
        failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}
