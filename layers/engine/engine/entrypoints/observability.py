"""Powertools Logger, Tracer and Metrics, configured once for every handler.

Metrics go out as CloudWatch EMF in the function's log stream; names are the ones the README
tells operators to watch.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from engine.core.state import EvaluationResult
from engine.settings import settings

SERVICE = settings().service_name
NAMESPACE = settings().metrics_namespace

logger = Logger(service=SERVICE)
# The engine's modules log with the standard library (the core knows nothing of Lambda);
# give the `engine` logger tree Powertools' JSON formatter so their records carry the
# correlation id and Lambda context too.
logging.getLogger("engine")
copy_config_to_registered_loggers(source_logger=logger, include={"engine"})
# Patch only what the engine calls (DynamoDB and SQS through botocore): patching every
# library X-Ray knows costs a large share of the cold start. And patch it when the first
# invocation starts, not at import: the patch imports botocore's client machinery, a quarter
# of a handler's import, which the first request's DynamoDB client needs anyway, but which
# at import would count twice over: in the init phase, and for every module that is only
# imported (tests, the CLI, the local server). Patching is of botocore's client class, so
# clients made before it are traced too.
_PATCHED: list[bool] = []
_PATCH_LOCK = threading.Lock()


@functools.cache
def tracer() -> Tracer:
    """The Tracer, made by the first traced invocation: making it loads the X-Ray SDK's
    recorder (~3 % of an evaluation function's import), which the event functions, which
    trace nothing, and modules that are only imported never need."""
    return Tracer(service=SERVICE, auto_patch=False)


def patch_once() -> None:
    """Patch botocore for X-Ray, once per container (a no-op where tracing is disabled)."""
    if _PATCHED:
        return
    with _PATCH_LOCK:
        if not _PATCHED:
            tracer().patch(modules=["botocore"])
            _PATCHED.append(True)


metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def instrumented(correlation_id_path: str | None = None) -> Callable[[Handler], Handler]:
    """Wrap a Lambda handler with logging context, a trace segment and metric flushing."""

    def wrap(handler: Handler) -> Handler:
        @functools.cache
        def chain() -> Handler:
            traced = tracer().capture_lambda_handler(handler)
            flushed = metrics.log_metrics(traced)
            logged: Handler = logger.inject_lambda_context(
                flushed, correlation_id_path=correlation_id_path, clear_state=True
            )
            return logged

        @functools.wraps(handler)
        def patched(event: dict[str, Any], context: Any) -> dict[str, Any]:
            patch_once()
            return chain()(event, context)

        return patched

    return wrap


def record_evaluation(result: EvaluationResult) -> None:
    """Evaluations, orders by type (new or filled in this evaluation), cooldown trips."""
    metrics.add_metric(name="Evaluations", unit=MetricUnit.Count, value=1)
    changed = {o.order_id for o in result.changes.orders}
    by_type: dict[str, int] = {}
    for order in result.orders:
        if order.order_id in changed:
            key = f"{order.type}_{order.status}"
            by_type[key] = by_type.get(key, 0) + 1
    for key, count in sorted(by_type.items()):
        metrics.add_metric(name=f"Orders_{key}", unit=MetricUnit.Count, value=count)
    exits = {(t.asset, t.exit_time) for t in result.closed_trades}
    trips = sum(1 for c in result.changes.cooldowns if (c.asset, c.tripped_at) in exits)
    if trips:
        metrics.add_metric(name="CooldownTrips", unit=MetricUnit.Count, value=trips)


def record_error(code: str) -> None:
    metrics.add_metric(name=f"Errors_{code}", unit=MetricUnit.Count, value=1)
