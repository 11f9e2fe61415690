"""Table administration (the local stack, tests, scripts) and the models described in the
template's terms, so a test can compare them with template.yaml."""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import TableError

from engine.adapters.dynamodb._retry import error_code
from engine.adapters.dynamodb.models import ALL_MODELS, PAY_PER_REQUEST
from engine.settings import TABLE_ENV


def create_tables(wait: bool = True) -> list[str]:
    """Create the tables that do not exist yet (local stack, tests); returns those created.

    Idempotent: existing tables are left alone, and a table another process is creating at
    the same moment counts as existing.
    """
    created: list[str] = []
    for model in ALL_MODELS:
        if model.exists():
            continue
        try:
            model.create_table(wait=wait, billing_mode=PAY_PER_REQUEST)
        except TableError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
        else:
            created.append(model.Meta.table_name)
    return created


def delete_tables() -> None:
    """Delete every table that exists (tests and local resets only)."""
    for model in ALL_MODELS:
        if model.exists():
            model.delete_table()


def table_definitions() -> dict[str, dict[str, Any]]:
    """Each model's table as plain data, in CloudFormation's `AWS::DynamoDB::Table` terms.

    Keyed by model name; each value holds `TableNameEnv` and `DefaultTableName` (how the
    functions find the table) and `BillingMode`, `AttributeDefinitions`, `KeySchema`,
    `GlobalSecondaryIndexes`, `LocalSecondaryIndexes` (and `StreamSpecification` for a table
    with a stream) as template.yaml writes them. Lists are
    sorted so that a comparison does not depend on declaration order.
    """
    out: dict[str, dict[str, Any]] = {}
    for model in ALL_MODELS:
        schema = model._get_schema()
        attributes: dict[str, str] = {}
        for attr in schema["attribute_definitions"]:
            attributes[attr["AttributeName"]] = attr["AttributeType"]
        indexes: dict[str, list[dict[str, Any]]] = {}
        for kind in ("global_secondary_indexes", "local_secondary_indexes"):
            indexes[kind] = []
            for index in sorted(schema[kind], key=lambda i: i["index_name"]):
                for attr in index.get("attribute_definitions", []):
                    attributes[attr["AttributeName"]] = attr["AttributeType"]
                indexes[kind].append(
                    {
                        "IndexName": index["index_name"],
                        "KeySchema": _key_schema(index["key_schema"]),
                        "Projection": {"ProjectionType": index["projection"]["ProjectionType"]},
                    }
                )
        env, default = TABLE_ENV[model.__name__]
        out[model.__name__] = {
            "TableNameEnv": env,
            "DefaultTableName": default,
            "BillingMode": PAY_PER_REQUEST,
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": kind}
                for name, kind in sorted(attributes.items())
            ],
            "KeySchema": _key_schema(schema["key_schema"]),
            "GlobalSecondaryIndexes": indexes["global_secondary_indexes"],
            "LocalSecondaryIndexes": indexes["local_secondary_indexes"],
        }
        stream = getattr(model.Meta, "stream_view_type", None)
        if stream is not None:
            out[model.__name__]["StreamSpecification"] = {"StreamViewType": stream}
    return out


def _key_schema(keys: Any) -> list[dict[str, str]]:
    # HASH first, then RANGE: the order DynamoDB requires.
    ordered = sorted(keys, key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
    return [{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in ordered]
