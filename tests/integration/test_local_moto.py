"""The local stack's moto applies one request at a time, as DynamoDB applies each atomically.

moto's own threaded server lets transactions interleave: under contention they fail with 500s
("dictionary changed size during iteration") or both pass the same condition. Through
engine.entrypoints.local.moto every conditional transaction either commits exactly once per version or is
cancelled, and none fails otherwise.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from engine.entrypoints.local.moto import QuietMotoServer, dynamodb_requests_atomic

THREADS = 32
VERSIONS = 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dynamodb() -> Any:
    port = _free_port()
    server = QuietMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(max_pool_connections=THREADS * 2, retries={"max_attempts": 0}),
    )
    yield client
    server.stop()


@pytest.fixture(autouse=True)
def atomic() -> Iterator[None]:
    with dynamodb_requests_atomic():
        yield


def test_contended_conditional_transactions_commit_once_per_version(dynamodb: Any) -> None:
    key = [{"AttributeName": "k", "KeyType": "HASH"}]
    dynamodb.create_table(
        TableName="heads",
        KeySchema=key,
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.create_table(
        TableName="items",
        KeySchema=[*key, {"AttributeName": "n", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "k", "AttributeType": "S"},
            {"AttributeName": "n", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="heads", Item={"k": {"S": "a"}, "v": {"N": "0"}})
    committed: list[int] = []
    failures: list[str] = []

    def worker(thread: int) -> None:
        while True:
            head = dynamodb.get_item(TableName="heads", Key={"k": {"S": "a"}}, ConsistentRead=True)
            version = int(head["Item"]["v"]["N"])
            if version >= VERSIONS:
                return
            try:
                dynamodb.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": "items",
                                "Item": {"k": {"S": "a"}, "n": {"S": f"{version}-{thread}"}},
                            }
                        },
                        {
                            "Update": {
                                "TableName": "heads",
                                "Key": {"k": {"S": "a"}},
                                "UpdateExpression": "SET v = :new",
                                "ConditionExpression": "v = :old",
                                "ExpressionAttributeValues": {
                                    ":new": {"N": str(version + 1)},
                                    ":old": {"N": str(version)},
                                },
                            }
                        },
                    ]
                )
                committed.append(version)
            except dynamodb.exceptions.TransactionCanceledException:
                pass  # another thread committed this version first
            except Exception as exc:
                failures.append(repr(exc)[:200])

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    assert failures == []
    assert sorted(committed) == list(range(VERSIONS))  # each version once, none twice
    items = dynamodb.scan(TableName="items")["Items"]
    assert Counter(i["n"]["S"].split("-")[0] for i in items) == {str(v): 1 for v in range(VERSIONS)}
