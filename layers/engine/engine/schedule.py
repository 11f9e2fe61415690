"""The scheduled bulk run: pick due strategies, evaluate them, or fan out on SQS.

Chunks are grouped by (asset, timeframe) so each SQS worker still fetches each market once.
Retrying is safe everywhere: evaluation at a bar is idempotent and commits are conditioned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.core.strategy import Strategy
from engine.service import BulkFailure, BulkResult, ExecutionService


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


def run_scheduled_tick(
    service: ExecutionService,
    *,
    tick_ms: int,
    interval_ms: int,
    chunk_size: int,
    fanout: FanoutQueue | None,
) -> ScheduleReport:
    due = service.due_strategies(tick_ms, interval_ms)
    report = ScheduleReport(due=len(due))
    if not due:
        return report
    if len(due) <= chunk_size or fanout is None:
        for start in range(0, len(due), chunk_size):
            chunk = [s.strategy_id for s in due[start : start + chunk_size]]
            result = service.evaluate_bulk(chunk, persist=True)
            report.evaluated += result.summary.succeeded
            report.failures += [r for r in result.results if isinstance(r, BulkFailure)]
        return report
    chunks = plan_chunks(due, chunk_size)
    fanout.send(
        [json.dumps({"strategy_ids": chunk, "scheduled_time_ms": tick_ms}) for chunk in chunks]
    )
    report.chunks_enqueued = len(chunks)
    return report


def evaluate_chunk(service: ExecutionService, body: str) -> BulkResult:
    """An SQS worker's job: evaluate one chunk with persist; raise if any strategy failed.

    Every failure fails the record, whatever its code: SQS redelivers it and, if it keeps
    failing, keeps it in the dead-letter queue. A failed item is never dropped.
    """
    message: dict[str, Any] = json.loads(body)
    ids = message.get("strategy_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("fan-out message without a strategy_ids list")
    result = service.evaluate_bulk(ids, persist=True)
    retry = [r for r in result.results if isinstance(r, BulkFailure)]
    if retry:
        raise ChunkIncomplete(retry)
    return result


class ChunkIncomplete(Exception):
    """Some strategies of a chunk failed; SQS redelivers the chunk.

    The strategies that did commit are untouched by the retry: re-evaluating their bar
    changes nothing.
    """

    def __init__(self, failures: list[BulkFailure]) -> None:
        self.failures = failures
        ids = ", ".join(f.strategy_id for f in failures)
        super().__init__(f"{len(failures)} strategies must be retried: {ids}")


class SqsFanout:
    """FanoutQueue on SQS, ten messages per SendMessageBatch, failures raised."""

    def __init__(self, queue_url: str, client: Any | None = None) -> None:
        self.queue_url = queue_url
        if client is None:
            import boto3

            client = boto3.client("sqs")
        self.client = client

    def send(self, bodies: Sequence[str]) -> None:
        for start in range(0, len(bodies), 10):
            batch = bodies[start : start + 10]
            entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(batch)]
            answer = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            failed = answer.get("Failed") or []
            if failed:
                # resend the failed ones once, then give up loudly
                retry = [entries[int(f["Id"])] for f in failed]
                again = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=retry)
                if again.get("Failed"):
                    raise RuntimeError(f"could not enqueue {len(again['Failed'])} fan-out chunks")
