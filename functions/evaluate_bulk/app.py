"""Bulk evaluation: POST /api/v1/execution/evaluate/bulk, the EventBridge schedule, and the
SQS fan-out worker, all on one function so every path runs the same engine."""

from __future__ import annotations

from engine.entrypoints.coldstart import imports_done

from datetime import datetime
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from engine.adapters.sqs_fanout import SqsFanout
from engine.bootstrap import service
from engine.entrypoints.http import (
    BASE_PATH,
    BulkRequest,
    build_resolver,
    handle_http,
    responses,
)
from engine.entrypoints.observability import instrumented, logger, metrics
from engine.service.results import BulkResult, ScheduledResult
from engine.service.schedule import (
    ChunkIncomplete,
    evaluate_chunk,
    failure_reason,
    passed_over,
    run_scheduled_tick,
)
from engine.settings import settings

# Read once at start: a wrong value fails the cold start, naming the variable.
settings()

app = build_resolver()
# Answer batchItemFailures even when every record of a batch failed, so that a failed
# chunk is a reported item (retried by SQS, then kept in the DLQ), not a function error.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@app.post(
    f"{BASE_PATH}/evaluate/bulk",
    summary="Evaluate many stored strategies, sharing market data and indicators",
    description="One result per strategy; a failing strategy reports its error and never "
    "affects the others. At most 500 ids per request.",
    responses=responses("per-strategy results and a summary"),
)
def evaluate_bulk(request: BulkRequest) -> BulkResult:
    result = service().evaluate_bulk(request.strategy_ids, persist=request.persist)
    _record_bulk(result)
    return result


def _record_bulk(result: BulkResult) -> None:
    summary = result.summary
    metrics.add_metric(name="BulkSize", unit=MetricUnit.Count, value=summary.requested)
    metrics.add_metric(name="BulkFailed", unit=MetricUnit.Count, value=summary.failed)
    metrics.add_metric(name="BulkDuration", unit=MetricUnit.Milliseconds, value=summary.duration_ms)


def _record_scheduled(skipped: int, bars_passed_over: int, late: int) -> None:
    metrics.add_metric(name="ScheduledSkipped", unit=MetricUnit.Count, value=skipped)
    metrics.add_metric(name="BarsPassedOver", unit=MetricUnit.Count, value=bars_passed_over)
    metrics.add_metric(name="LateEvaluations", unit=MetricUnit.Count, value=late)


def _scheduled(event: dict[str, Any]) -> dict[str, Any]:
    tick = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    tick_ms = int(tick.timestamp() * 1000)
    config = settings()
    queue_url = config.fanout_queue_url
    engine = service()
    lateness_ms = engine.clock() - tick_ms
    if lateness_ms > config.schedule_interval_ms:
        logger.warning(
            "scheduled tick delivered late", extra={"tick": event["time"], "late_ms": lateness_ms}
        )
    report = run_scheduled_tick(
        engine,
        tick_ms=tick_ms,
        chunk_size=config.bulk_chunk_size,
        fanout=SqsFanout(queue_url) if queue_url else None,
    )
    metrics.add_metric(name="ScheduledDue", unit=MetricUnit.Count, value=report.due)
    metrics.add_metric(name="FanoutChunks", unit=MetricUnit.Count, value=report.chunks_enqueued)
    _record_scheduled(len(report.skipped), report.bars_passed_over, len(report.late))
    answer = {
        "due": report.due,
        "evaluated": report.evaluated,
        "chunks": report.chunks_enqueued,
        "skipped": len(report.skipped),
        "bars_passed_over": report.bars_passed_over,
    }
    logger.info("scheduled tick", extra=answer)
    if report.failures:
        # Lambda's async retry (then the schedule's DLQ) runs the tick again; the strategies
        # that were evaluated are no longer due, so only the failed ones do new work.
        raise RuntimeError(
            f"{len(report.failures)} due strategies failed and need a retry: "
            + ", ".join(
                f"{f.strategy_id} ({failure_reason(f.error.code)}: {f.error.code})"
                for f in report.failures
            )
        )
    return answer


def _record_chunk(result: ScheduledResult) -> None:
    _record_bulk(result)
    _record_scheduled(len(result.skipped), passed_over(result), len(result.late))


def _record_handler(record: SQSRecord) -> None:
    metrics.add_metric(name="FanoutRecords", unit=MetricUnit.Count, value=1)
    try:
        result = evaluate_chunk(service(), record.body)
    except ChunkIncomplete as exc:
        if exc.result is not None:
            _record_chunk(exc.result)
        raise
    _record_chunk(result)


def _is_schedule(event: dict[str, Any]) -> bool:
    return event.get("detail-type") == "Scheduled Event"


def _is_fanout(event: dict[str, Any]) -> bool:
    records = event.get("Records")
    return (
        isinstance(records, list) and bool(records) and records[0].get("eventSource") == "aws:sqs"
    )


def _fanout(event: dict[str, Any], context: Any) -> dict[str, Any]:
    answer = process_partial_response(
        event=event, record_handler=_record_handler, processor=processor, context=context
    )
    return dict(answer)


@instrumented(correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Three event sources, one engine: the schedule, the fan-out queue, the HTTP API."""
    if _is_schedule(event):
        return _scheduled(event)
    if _is_fanout(event):
        return _fanout(event, context)
    return handle_http(app, event, context)


imports_done()  # last: see engine/entrypoints/coldstart.py
