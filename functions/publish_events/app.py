"""The outbox table's stream to the order events bus (engine.adapters.events.publisher)."""

from __future__ import annotations

from engine.entrypoints.coldstart import imports_done

from functools import cache
from typing import Any

from engine.adapters import aws
from engine.adapters.events.publisher import EventBridgeBus, Publisher, handle_stream_batch
from engine.entrypoints.observability import logger
from engine.settings import settings


@cache
def publisher() -> Publisher:
    return Publisher(EventBridgeBus(aws.client("events"), settings().events.required("bus_name")))


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    answer = handle_stream_batch(event.get("Records", []), publisher())
    if answer["batchItemFailures"]:
        logger.warning("events not published; retried from record %s", answer["batchItemFailures"])
    return answer


imports_done()  # last: see engine/entrypoints/coldstart.py
