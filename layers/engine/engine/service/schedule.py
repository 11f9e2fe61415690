"""The scheduled bulk run: pick due strategies, evaluate them, or fan out on SQS.

Due means "a bar newer than the one last evaluated has closed" (the due index on the
strategies table), not "a bar closed since the previous tick": a missed, failed, late or
duplicated tick is made good by the next one. Chunks are grouped by (asset, timeframe) so
each SQS worker still fetches each market once. Retrying is safe everywhere: evaluation at a
bar is idempotent, commits are conditioned, and each strategy is re-checked (still active,
not yet evaluated at the newest bar) right before it is evaluated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.core.state import EvaluationResult
from engine.core.strategy import Strategy
from engine.core.timeframes import iso
from engine.service.execution import ExecutionService
from engine.service.results import BulkFailure, LateEvaluation, ScheduledResult, SkippedStrategy

log = logging.getLogger("engine.service.schedule")

# Why a scheduled evaluation failed, by error code, in the words an operator looks for.
_REASONS = {
    "concurrent_evaluation": "conflict",
    "market_data_unavailable": "market_data",
    "market_data_stale": "market_data",
    "storage_unavailable": "storage",
    "storage_error": "storage",
    "transaction_too_large": "storage",
    "strategy_not_found": "strategy",
    "stored_strategy_invalid": "strategy",
}


def failure_reason(code: str) -> str:
    """conflict, market_data, storage, strategy, or internal."""
    return _REASONS.get(code, "internal")


class FanoutQueue(Protocol):
    def send(self, bodies: Sequence[str]) -> None:
        """Enqueue every body or raise; a partial send must be reported as a failure."""
        ...


def plan_chunks(strategies: Sequence[Strategy], chunk_size: int) -> list[list[str]]:
    """Strategy ids in as few chunks of at most `chunk_size` as first-fit decreasing finds,
    keeping each (asset, timeframe) group whole where it fits, so that a worker fetches each
    market once.

    A group larger than a chunk fills whole chunks and leaves its remainder to be packed like
    any other group. Deterministic: the same due set always gives the same chunks.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    groups: dict[tuple[str, str], list[str]] = {}
    for strategy in sorted(strategies, key=lambda s: s.strategy_id):
        groups.setdefault((strategy.timeframe, strategy.assets[0]), []).append(strategy.strategy_id)
    chunks: list[list[str]] = []
    pieces: list[tuple[tuple[str, str], list[str]]] = []
    for key in sorted(groups):
        group = groups[key]
        whole = len(group) - len(group) % chunk_size
        chunks.extend(group[start : start + chunk_size] for start in range(0, whole, chunk_size))
        if whole < len(group):
            pieces.append((key, group[whole:]))
    packed: list[list[str]] = []
    for _, piece in sorted(pieces, key=lambda kp: (-len(kp[1]), kp[0])):
        room = next((c for c in packed if len(c) + len(piece) <= chunk_size), None)
        if room is None:
            packed.append(list(piece))
        else:
            room.extend(piece)
    return chunks + packed


@dataclass
class ScheduleReport:
    due: int
    evaluated: int = 0
    chunks_enqueued: int = 0
    failures: list[BulkFailure] = field(default_factory=list)
    skipped: list[SkippedStrategy] = field(default_factory=list)
    late: list[LateEvaluation] = field(default_factory=list)
    bars_passed_over: int = 0  # over every evaluation of the run


def run_scheduled_tick(
    service: ExecutionService,
    *,
    tick_ms: int,
    chunk_size: int,
    fanout: FanoutQueue | None,
) -> ScheduleReport:
    """One scheduled tick: the strategies due by the clock (not by the tick's time: a late
    tick evaluates the newest closed bar), evaluated here or queued in chunks that carry the
    tick's time, `scheduled_time_ms`, so a late delivery can say which bar it passed over."""
    due = service.due_strategies()
    report = ScheduleReport(due=len(due))
    if not due:
        return report
    if len(due) <= chunk_size or fanout is None:
        for start in range(0, len(due), chunk_size):
            chunk = [s.strategy_id for s in due[start : start + chunk_size]]
            result = service.evaluate_scheduled(chunk, scheduled_ms=tick_ms)
            log_scheduled(result, "tick")
            report.evaluated += result.summary.succeeded
            report.failures += [r for r in result.results if isinstance(r, BulkFailure)]
            report.skipped += result.skipped
            report.late += result.late
            report.bars_passed_over += passed_over(result)
        return report
    chunks = plan_chunks(due, chunk_size)
    fanout.send(
        [json.dumps({"strategy_ids": chunk, "scheduled_time_ms": tick_ms}) for chunk in chunks]
    )
    report.chunks_enqueued = len(chunks)
    return report


def evaluate_chunk(service: ExecutionService, body: str) -> ScheduledResult:
    """An SQS worker's job: evaluate one chunk with persist; raise if any strategy failed.

    Strategies paused since the chunk was queued, or evaluated at the newest bar meanwhile
    (a duplicated chunk), are skipped and reported in the answer. Every failure fails the
    record, whatever its code: SQS redelivers it and, if it keeps failing, keeps it in the
    dead-letter queue. A failed item is never dropped.
    """
    message: dict[str, Any] = json.loads(body)
    ids = message.get("strategy_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("fan-out message without a strategy_ids list")
    scheduled = message.get("scheduled_time_ms")
    if scheduled is not None and (not isinstance(scheduled, int) or isinstance(scheduled, bool)):
        raise ValueError("fan-out message with a scheduled_time_ms that is not epoch ms")
    result = service.evaluate_scheduled(ids, scheduled_ms=scheduled)
    log_scheduled(result, "chunk")
    retry = [r for r in result.results if isinstance(r, BulkFailure)]
    if retry:
        raise ChunkIncomplete(retry, result)
    return result


def passed_over(result: ScheduledResult) -> int:
    return sum(r.bars_passed_over for r in result.results if isinstance(r, EvaluationResult))


def log_scheduled(result: ScheduledResult, source: str) -> None:
    """One record per strategy that failed (with the reason), was skipped, or passed over
    bars; nothing for the ordinary ones."""
    for item in result.results:
        if isinstance(item, BulkFailure):
            log.warning(
                "scheduled evaluation of %s failed (%s): %s",
                item.strategy_id,
                failure_reason(item.error.code),
                item.error.message,
                extra={
                    "strategy_id": item.strategy_id,
                    "reason": failure_reason(item.error.code),
                    "code": item.error.code,
                    "source": source,
                },
            )
        elif item.bars_passed_over:
            log.warning(
                "%s evaluated at %s passed over %d bars never evaluated",
                item.strategy_id,
                iso(item.bar) if item.bar else None,
                item.bars_passed_over,
                extra={
                    "strategy_id": item.strategy_id,
                    "bar": iso(item.bar) if item.bar else None,
                    "bars_passed_over": item.bars_passed_over,
                    "source": source,
                },
            )
    for late in result.late:
        log.warning(
            "%s: delivered late, evaluated bar %s instead of the scheduled bar %s",
            late.strategy_id,
            iso(late.bar),
            iso(late.scheduled_bar),
            extra={
                "strategy_id": late.strategy_id,
                "bar": iso(late.bar),
                "scheduled_bar": iso(late.scheduled_bar),
                "bars_passed_over": late.bars_passed_over,
                "source": source,
            },
        )
    for skipped in result.skipped:
        log.info(
            "%s skipped: %s",
            skipped.strategy_id,
            skipped.reason,
            extra={"strategy_id": skipped.strategy_id, "reason": skipped.reason, "source": source},
        )


class ChunkIncomplete(Exception):
    """Some strategies of a chunk failed; SQS redelivers the chunk.

    The strategies that did commit are untouched by the retry: they are skipped as already
    evaluated, or re-evaluating their bar changes nothing.
    """

    def __init__(self, failures: list[BulkFailure], result: ScheduledResult | None = None) -> None:
        self.failures = failures
        self.result = result
        reasons = ", ".join(
            f"{f.strategy_id} ({failure_reason(f.error.code)}: {f.error.code})" for f in failures
        )
        super().__init__(f"{len(failures)} strategies must be retried: {reasons}")
