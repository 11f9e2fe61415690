"""events/*.json: the sample events for sam local invoke and tests are valid and of the shape
API Gateway (REST proxy, IAM-signed), EventBridge and SQS deliver."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import pytest
from engine.core.strategy import parse_strategy

from tests.support.template_tables import ROOT, load_template

EVENTS = ROOT / "events"
API_EVENTS = {
    "evaluate_by_id.json": "/api/v1/execution/evaluate/{strategy_id}",
    "evaluate_by_id_dry_run.json": "/api/v1/execution/evaluate/{strategy_id}",
    "evaluate_by_object.json": "/api/v1/execution/evaluate",
    "evaluate_bulk.json": "/api/v1/execution/evaluate/bulk",
}
OTHER_EVENTS = {"schedule.json", "sqs_fanout.json"}


def _load(name: str) -> dict[str, Any]:
    data = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), name
    return data


def _template_routes() -> set[str]:
    routes = set()
    for resource in load_template()["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "Api":
                routes.add(event["Properties"]["Path"])
    return routes


def _iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    offset = parsed.utcoffset()
    assert offset is not None and offset.total_seconds() == 0, value
    return parsed


def test_every_event_file_is_a_json_object_and_all_are_there() -> None:
    names = {path.name for path in EVENTS.glob("*.json")}
    assert set(API_EVENTS) | OTHER_EVENTS <= names
    for name in names:
        _load(name)


@pytest.mark.parametrize("name", sorted(API_EVENTS))
def test_api_events_are_iam_signed_rest_proxy_events_of_a_template_route(name: str) -> None:
    event = _load(name)
    resource = API_EVENTS[name]
    assert resource in _template_routes()
    assert event["resource"] == resource
    assert event["httpMethod"] == "POST"
    path_parameters = event["pathParameters"] or {}
    path = resource
    for key, value in path_parameters.items():
        path = path.replace("{" + key + "}", value)
    assert "{" not in path, "a path parameter is missing"
    assert event["path"] == path
    context = event["requestContext"]
    assert context["resourcePath"] == resource
    assert context["httpMethod"] == "POST"
    assert context["path"] == f"/{context['stage']}{path}"
    identity = context["identity"]
    # AWS_IAM authorization: API Gateway passes the signer's identity
    assert identity["userArn"].startswith("arn:aws:")
    assert identity["accessKey"]
    assert identity["accountId"] == context["accountId"]
    assert event["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 ")
    assert event["isBase64Encoded"] is False
    query = event["queryStringParameters"]
    if query is not None:
        assert event["multiValueQueryStringParameters"] == {k: [v] for k, v in query.items()}
    body = event["body"]
    assert body is None or isinstance(body, str)
    if body is not None:
        assert isinstance(json.loads(body), dict)


def test_evaluate_by_id_persists_by_default_and_the_dry_run_says_persist_false() -> None:
    plain = _load("evaluate_by_id.json")
    dry = _load("evaluate_by_id_dry_run.json")
    assert (plain["queryStringParameters"] or {}).get("persist", "true") == "true"
    assert dry["queryStringParameters"] == {"persist": "false"}
    for event in (plain, dry):
        assert event["pathParameters"] == {"strategy_id": "rsi-meanrev-btc"}


def test_evaluate_by_object_carries_a_valid_strategy() -> None:
    body = json.loads(_load("evaluate_by_object.json")["body"])
    assert set(body) <= {"strategy", "positions"}
    strategy = parse_strategy(body["strategy"])
    assert strategy.strategy_id == "rsi-meanrev-btc"
    assert strategy.timeframe == "1h"


def test_evaluate_bulk_names_strategies_with_persist() -> None:
    body = json.loads(_load("evaluate_bulk.json")["body"])
    assert body == {"strategy_ids": ["rsi-meanrev-btc"], "persist": True}


def test_schedule_is_an_eventbridge_scheduled_event() -> None:
    event = _load("schedule.json")
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    _iso(event["time"])
    assert event["detail"] == {}
    assert all(arn.startswith("arn:aws:events:") for arn in event["resources"])


def test_sqs_fanout_is_one_chunk_of_strategy_ids() -> None:
    event = _load("sqs_fanout.json")
    (record,) = event["Records"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].startswith("arn:aws:sqs:")
    assert record["messageId"]
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    chunk = json.loads(record["body"])
    ids = chunk["strategy_ids"]
    assert isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)
    # the tick the chunk belongs to, as engine.service.schedule writes it (epoch ms)
    assert isinstance(chunk["scheduled_time_ms"], int)


def test_event_files_are_stable_formatted_json() -> None:
    # written with json.dumps(indent=2) and a final newline, so regenerating them gives no diff
    for path in sorted(EVENTS.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2) + "\n", path.name


def test_order_event_samples_are_what_the_event_functions_receive() -> None:
    from engine.adapters.events.publisher import events_of_record
    from engine.adapters.events.webhook import event_of_message

    (record,) = _load("outbox_stream.json")["Records"]
    events = events_of_record(record)
    assert [e.type for e in events][:3] == ["position.opened", "order.created", "order.filled"]
    assert {e.strategy_id for e in events} == {"rsi-meanrev-btc"}
    (message,) = _load("webhook_sqs.json")["Records"]
    assert message["md5OfBody"] == hashlib.md5(message["body"].encode()).hexdigest()
    detail = event_of_message(message["body"])
    envelope = _load("order_event.json")
    assert detail == envelope["detail"] == events[2].model_dump(mode="json")
    assert envelope["detail-type"] == detail["type"] == "order.filled"
    assert envelope["source"] == "execution-engine"
