"""Order events from the webhook queue to WEBHOOK_URL, signed (engine.adapters.events.webhook)."""

from __future__ import annotations

from engine.entrypoints.coldstart import imports_done

from functools import cache
from typing import Any

from engine.adapters import aws
from engine.adapters.events.secrets import ParameterSecret
from engine.adapters.events.webhook import (
    RetrySchedule,
    SqsDeliveryQueue,
    WebhookSender,
    handle_delivery_batch,
)
from engine.entrypoints.observability import logger
from engine.settings import settings


@cache
def _secret() -> ParameterSecret:
    return ParameterSecret(
        aws.client("ssm"), settings().events.required("webhook_secret_parameter")
    )


@cache
def _queue() -> SqsDeliveryQueue:
    events = settings().events
    return SqsDeliveryQueue(
        aws.client("sqs"),
        events.required("webhook_queue_url"),
        events.required("webhook_dead_letter_queue_url"),
    )


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    events = settings().events
    sender = WebhookSender(events.required("webhook_url"), _secret().get())
    # WebhookQueue's maxReceiveCount: the last receipt is not delayed (the redrive takes it)
    schedule = RetrySchedule(attempts=events.webhook_attempts)
    answer = handle_delivery_batch(event.get("Records", []), sender, _queue(), schedule)
    if answer["batchItemFailures"]:
        logger.warning("%d deliveries to retry", len(answer["batchItemFailures"]))
    return answer


imports_done()  # last: see engine/entrypoints/coldstart.py
