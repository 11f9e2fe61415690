"""BatchGetItem / BatchWriteItem with DynamoDB's per-request limits and bounded retries of
unprocessed keys and items (PynamoDB's own helpers retry those without backoff or bound)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final, TypeVar

from pynamodb.models import Model

from engine.adapters.dynamodb._retry import RetryPolicy

BATCH_GET_LIMIT: Final = 100
BATCH_WRITE_LIMIT: Final = 25

M = TypeVar("M", bound=Model)
Key = str | tuple[str, Any]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _raw_key(model: type[Model], key: Key) -> dict[str, Any]:
    hash_attr = model._hash_key_attribute()  # type: ignore[no-untyped-call]
    range_attr = model._range_key_attribute()  # type: ignore[no-untyped-call]
    if isinstance(key, str):
        assert range_attr is None, f"{model.__name__} needs (hash, range) keys"
        return {hash_attr.attr_name: {hash_attr.attr_type: hash_attr.serialize(key)}}
    hash_key, range_key = key
    return {
        hash_attr.attr_name: {hash_attr.attr_type: hash_attr.serialize(hash_key)},
        range_attr.attr_name: {range_attr.attr_type: range_attr.serialize(range_key)},
    }


def batch_get(
    model: type[M],
    keys: Sequence[Key],
    retry: RetryPolicy,
    *,
    consistent_read: bool = True,
    attributes: Sequence[str] | None = None,
) -> list[M]:
    """The items that exist among `keys` (distinct), 100 keys per request."""
    connection = model._get_connection()
    table = model.Meta.table_name
    found: list[M] = []
    unique = list(dict.fromkeys(keys))
    for chunk in chunks(unique, BATCH_GET_LIMIT):
        pending: list[dict[str, Any]] = [_raw_key(model, key) for key in chunk]
        rounds = 0
        while pending:

            def request(keys: list[dict[str, Any]] = pending) -> dict[str, Any]:
                return connection.batch_get_item(
                    keys,  # type: ignore[arg-type]  # PynamoDB types keys as str
                    consistent_read=consistent_read,
                    attributes_to_get=list(attributes) if attributes else None,
                )

            data = retry.call("BatchGetItem", request)
            found.extend(
                model.from_raw_data(raw) for raw in data.get("Responses", {}).get(table, [])
            )
            pending = data.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
            if pending:
                rounds += 1
                if rounds >= retry.attempts:
                    raise retry.exhausted("BatchGetItem", len(pending))
                retry.pause(rounds - 1)
    return found


def batch_delete(model: type[M], keys: Sequence[Key], retry: RetryPolicy) -> int:
    """Delete the items at `keys` (distinct), 25 per request; returns how many keys."""
    connection = model._get_connection()
    table = model.Meta.table_name
    unique = list(dict.fromkeys(keys))
    for chunk in chunks(unique, BATCH_WRITE_LIMIT):
        pending: list[dict[str, Any]] = [_raw_key(model, key) for key in chunk]
        rounds = 0
        while pending:

            def request(deletes: list[dict[str, Any]] = pending) -> dict[str, Any]:
                return connection.batch_write_item(delete_items=deletes)

            data = retry.call("BatchWriteItem", request)
            unprocessed = data.get("UnprocessedItems", {}).get(table, [])
            pending = [entry["DeleteRequest"]["Key"] for entry in unprocessed]
            if pending:
                rounds += 1
                if rounds >= retry.attempts:
                    raise retry.exhausted("BatchWriteItem", len(pending))
                retry.pause(rounds - 1)
    return len(unique)
