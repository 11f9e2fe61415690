"""Powertools Logger, Tracer and Metrics, configured once for every handler.

Metrics go out as CloudWatch EMF in the function's log stream; names are the ones the README
tells operators to watch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from engine.core.state import EvaluationResult

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "execution-engine")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ExecutionEngine")

logger = Logger(service=SERVICE)
# Patch only what the engine calls (DynamoDB and SQS through botocore): patching every
# library X-Ray knows costs a large share of the cold start.
tracer = Tracer(service=SERVICE, patch_modules=["botocore"])
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def instrumented(correlation_id_path: str | None = None) -> Callable[[Handler], Handler]:
    """Wrap a Lambda handler with logging context, a trace segment and metric flushing."""

    def wrap(handler: Handler) -> Handler:
        traced = tracer.capture_lambda_handler(handler)
        flushed = metrics.log_metrics(traced)
        logged: Handler = logger.inject_lambda_context(
            flushed, correlation_id_path=correlation_id_path, clear_state=True
        )
        return logged

    return wrap


def record_evaluation(result: EvaluationResult) -> None:
    metrics.add_metric(name="Evaluations", unit=MetricUnit.Count, value=1)
    created = [o for o in result.orders if o.type == "market" and o.side == "enter_long"]
    by_type: dict[str, int] = {}
    for order in result.orders:
        if order.status == "filled" or order in created:
            by_type[order.type] = by_type.get(order.type, 0) + 1
    for order_type, count in by_type.items():
        metrics.add_metric(name=f"OrdersFilled_{order_type}", unit=MetricUnit.Count, value=count)
    trips = sum(1 for c in result.cooldowns if c.active)
    if trips:
        metrics.add_metric(name="CooldownsActive", unit=MetricUnit.Count, value=trips)


def record_error(code: str) -> None:
    metrics.add_metric(name=f"Errors_{code}", unit=MetricUnit.Count, value=1)
