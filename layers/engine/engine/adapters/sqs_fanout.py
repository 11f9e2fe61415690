"""The schedule's fan-out queue (engine.service.schedule.FanoutQueue) on SQS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SqsFanout:
    """FanoutQueue on SQS, ten messages per SendMessageBatch, failures raised."""

    def __init__(self, queue_url: str, client: Any | None = None) -> None:
        self.queue_url = queue_url
        if client is None:
            from engine.adapters import aws

            client = aws.client("sqs")
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
