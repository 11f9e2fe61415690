"""Reading the outbox table's DynamoDB stream directly: the local relay and `events tail`.

In AWS, Lambda's event source mapping reads the stream for the publisher; locally (moto's
server) and for `tail`, this reader does: every shard, in order, from the oldest record still
held (TRIM_HORIZON) or from now (LATEST). Records come in Lambda's shape (`eventName`,
`dynamodb.NewImage`, `dynamodb.SequenceNumber`), so `engine.adapters.events.publisher` reads both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Start = Literal["TRIM_HORIZON", "LATEST"]


def streams_client(endpoint: str | None, region: str) -> Any:
    """A `dynamodbstreams` client. botocore would address stream ARNs at an account-specific
    host (`<account>.streams-ddb...`), which neither moto nor an explicit endpoint serves."""
    from botocore.config import Config

    from engine.adapters import aws

    return aws.client(
        "dynamodbstreams",
        endpoint_url=endpoint,
        region_name=region,
        config=Config(account_id_endpoint_mode="disabled"),
    )


@dataclass
class OutboxStream:
    streams: Any  # a botocore dynamodbstreams client
    stream_arn: str
    start: Start = "TRIM_HORIZON"
    _iterators: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def of_table(cls, dynamodb: Any, streams: Any, table: str, start: Start) -> OutboxStream:
        description = dynamodb.describe_table(TableName=table)["Table"]
        arn = description.get("LatestStreamArn")
        if not arn:
            raise ValueError(f"table {table} has no stream (StreamSpecification)")
        return cls(streams, arn, start)

    def _shards(self) -> list[str]:
        shards: list[str] = []
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = self.streams.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(s["ShardId"] for s in description.get("Shards", []))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    def poll(self) -> list[Mapping[str, Any]]:
        """The records written since the last poll, shard by shard, each shard in order."""
        records: list[Mapping[str, Any]] = []
        for shard in self._shards():
            if shard not in self._iterators:
                # a shard that opened after the first poll is read from its start
                kind = self.start if not self._iterators else "TRIM_HORIZON"
                self._iterators[shard] = self.streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard, ShardIteratorType=kind
                )["ShardIterator"]
            iterator = self._iterators[shard]
            if iterator is None:
                continue  # a closed shard, read to its end
            answer = self.streams.get_records(ShardIterator=iterator)
            records.extend(answer.get("Records", []))
            self._iterators[shard] = answer.get("NextShardIterator")
        return records
