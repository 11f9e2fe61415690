"""template.yaml as plain data, for tests: the loader and the DynamoDB table definitions.

`load_template()` (engine.entrypoints.local.template's) parses the template with CloudFormation's short-form tags (`!Ref`,
`!GetAtt`, `!Sub`, `!If`, ...) turned into their long form (`{"Ref": ...}`,
`{"Fn::GetAtt": [...]}`, ...), the way CloudFormation itself reads them.

`table_definitions()` gives each table in simple terms:

    {"StrategiesTable": {
        "env": "STRATEGIES_TABLE",          # the variable the functions read its name from
        "hash": "strategy_id", "range": None,
        "attributes": {"strategy_id": "S", "status": "S", "timeframe": "S"},
        "gsis": {"status-timeframe-index": ("status", "timeframe", "ALL")},
        "billing_mode": "PAY_PER_REQUEST",
    }, ...}

`cloudformation_table_definitions()` gives them in the template's own terms, keyed by the
environment variable, normalized (sorted attribute definitions, HASH before RANGE, indexes by
name) like `engine.adapters.dynamodb.dynamodb.table_definitions()`, so that the two compare directly.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from engine.entrypoints.local.template import REPO_ROOT as ROOT  # noqa: F401 (tests import it from here)
from engine.entrypoints.local.template import TEMPLATE, load_template  # noqa: F401


@cache
def _template() -> dict[str, Any]:
    return load_template()


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource.get("Type") == kind
    }


def table_env(template: dict[str, Any]) -> dict[str, str]:
    """Logical id of each table -> the Globals environment variable holding its name."""
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    return {
        value["Ref"]: name
        for name, value in variables.items()
        if isinstance(value, dict) and "Ref" in value
    }


def _keys(key_schema: list[dict[str, str]]) -> tuple[str, str | None]:
    kinds = {key["KeyType"]: key["AttributeName"] for key in key_schema}
    return kinds["HASH"], kinds.get("RANGE")


def table_definitions(template: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every AWS::DynamoDB::Table of the template, by logical id, in simple terms."""
    template = template if template is not None else _template()
    env = table_env(template)
    out: dict[str, dict[str, Any]] = {}
    for name, resource in resources_of_type(template, "AWS::DynamoDB::Table").items():
        props = resource["Properties"]
        hash_key, range_key = _keys(props["KeySchema"])
        gsis: dict[str, tuple[str, str | None, str]] = {}
        for index in props.get("GlobalSecondaryIndexes", []):
            index_hash, index_range = _keys(index["KeySchema"])
            gsis[index["IndexName"]] = (
                index_hash,
                index_range,
                index["Projection"]["ProjectionType"],
            )
        out[name] = {
            "env": env.get(name),
            "hash": hash_key,
            "range": range_key,
            "attributes": {
                attr["AttributeName"]: attr["AttributeType"]
                for attr in props["AttributeDefinitions"]
            },
            "gsis": gsis,
            "billing_mode": props.get("BillingMode"),
        }
    return out


def _normal_key_schema(keys: list[dict[str, str]]) -> list[dict[str, str]]:
    ordered = sorted(keys, key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
    return [{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in ordered]


def cloudformation_table_definitions(
    template: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every table in CloudFormation terms, keyed by its environment variable.

    Each value holds `BillingMode`, `AttributeDefinitions` (sorted by name), `KeySchema`
    (HASH first), `GlobalSecondaryIndexes` and `LocalSecondaryIndexes` (sorted by name;
    `IndexName`, `KeySchema`, `Projection` with only `ProjectionType`), and
    `StreamSpecification` (its `StreamViewType`) for a table with a stream.
    """
    template = template if template is not None else _template()
    env = table_env(template)
    out: dict[str, dict[str, Any]] = {}
    for name, resource in resources_of_type(template, "AWS::DynamoDB::Table").items():
        props = resource["Properties"]
        out[env.get(name, name)] = {
            "BillingMode": props.get("BillingMode"),
            "AttributeDefinitions": sorted(
                (
                    {"AttributeName": a["AttributeName"], "AttributeType": a["AttributeType"]}
                    for a in props["AttributeDefinitions"]
                ),
                key=lambda a: a["AttributeName"],
            ),
            "KeySchema": _normal_key_schema(props["KeySchema"]),
            **{
                kind: [
                    {
                        "IndexName": index["IndexName"],
                        "KeySchema": _normal_key_schema(index["KeySchema"]),
                        "Projection": {"ProjectionType": index["Projection"]["ProjectionType"]},
                    }
                    for index in sorted(props.get(kind, []), key=lambda i: i["IndexName"])
                ]
                for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes")
            },
        }
        if "StreamSpecification" in props:
            out[env.get(name, name)]["StreamSpecification"] = {
                "StreamViewType": props["StreamSpecification"]["StreamViewType"]
            }
    return out
