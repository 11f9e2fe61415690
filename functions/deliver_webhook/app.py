"""Order events from the webhook queue to WEBHOOK_URL, signed (engine.adapters.events.webhook)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from engine.adapters.events.secrets import ParameterSecret
from engine.adapters.events.webhook import (
    RetrySchedule,
    SqsDeliveryQueue,
    WebhookSender,
    handle_delivery_batch,
)
from engine.entrypoints.observability import logger


@cache
def _secret() -> ParameterSecret:
    return ParameterSecret(boto3.client("ssm"), os.environ["WEBHOOK_SECRET_PARAMETER"])


@cache
def _queue() -> SqsDeliveryQueue:
    return SqsDeliveryQueue(
        boto3.client("sqs"),
        os.environ["WEBHOOK_QUEUE_URL"],
        os.environ["WEBHOOK_DEAD_LETTER_QUEUE_URL"],
    )


# WebhookQueue's maxReceiveCount: the last receipt is not delayed (the redrive takes it)
SCHEDULE = RetrySchedule(attempts=int(os.environ.get("WEBHOOK_ATTEMPTS") or 8))


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    sender = WebhookSender(os.environ["WEBHOOK_URL"], _secret().get())
    answer = handle_delivery_batch(event.get("Records", []), sender, _queue(), SCHEDULE)
    if answer["batchItemFailures"]:
        logger.warning("%d deliveries to retry", len(answer["batchItemFailures"]))
    return answer
