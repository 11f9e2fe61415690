"""The Lambda handlers invoked with the sample events in events/, on moto's DynamoDB.

What a deployed function does with a request: limits (413, 422), ids validated before they
become keys, the error contract, metrics as EMF, and logs without strategy bodies.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine.adapters import dynamodb
from engine.core.candles import Candles
from engine.core.timeframes import bucket_start
from moto import mock_aws

from tests.support.aws import models_restored, use_fake_aws
from tests.support.handlers import Context, answer, event, handler

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
REGION = "us-east-1"
H = 3_600_000


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_fake_aws(monkeypatch)
    for key, value in {
        "STALE_DATA_POLICY": "warn",
        "MARKET_DATA_PROVIDER": "dynamodb",
        "POWERTOOLS_METRICS_NAMESPACE": "ExecutionEngine",
    }.items():
        monkeypatch.setenv(key, value)
    from engine import bootstrap

    try:
        with models_restored(), mock_aws():
            dynamodb.bind(host=None, region=REGION)
            dynamodb.create_tables(wait=True)
            bootstrap.service.cache_clear()
            yield
    finally:
        bootstrap.service.cache_clear()


def seed(strategy_doc: dict[str, Any], asset: str = "BTC/USDT") -> None:
    from engine.adapters.dynamodb import DynamoCandleRepository, DynamoStrategyRepository
    from engine.core.strategy import parse_strategy

    DynamoStrategyRepository().put(parse_strategy(strategy_doc))
    last = bucket_start(int(time.time() * 1000), "1h") - H
    bars = 300
    times = last - H * np.arange(bars - 1, -1, -1, dtype=np.int64)
    close = np.linspace(100, 130, bars)
    volume = np.ones(bars)
    volume[-1] = 99.0
    candles = Candles(times, close, close + 1, close - 1, close, volume)
    DynamoCandleRepository().put(asset, "1h", candles)


def strategy_doc(sid: str = "rsi-meanrev-btc") -> dict[str, Any]:
    body = json.loads(event("evaluate_by_object.json")["body"])["strategy"]
    body = copy.deepcopy(body)
    body["strategy_id"] = sid
    body["entry"] = {"left": "volume", "op": ">", "right": 50}
    return dict(body)


def test_sample_event_evaluates_and_emits_metrics(
    stack: None, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(strategy_doc())
    status, body = answer(handler("EvaluateByIdFunction")(event("evaluate_by_id.json"), Context()))
    assert status == 200, body
    assert body["persisted"] is True
    assert {o["type"] for o in body["orders"]} == {"market", "stop_loss", "take_profit"}
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    metric_names = {
        m["Name"] for doc in emf for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }
    assert {"Evaluations", "Orders_market_filled", "Orders_stop_loss_open"} <= metric_names


def test_dry_run_event_writes_nothing(stack: None) -> None:
    seed(strategy_doc())
    from engine.adapters.dynamodb import DynamoStateRepository, DynamoStrategyRepository

    status, body = answer(
        handler("EvaluateByIdFunction")(event("evaluate_by_id_dry_run.json"), Context())
    )
    assert status == 200 and body["persisted"] is False and body["orders"]
    strategy = DynamoStrategyRepository().get("rsi-meanrev-btc")
    assert strategy is not None
    state = DynamoStateRepository().load([strategy])["rsi-meanrev-btc"]
    assert state.version == 0 and state.positions == [] and state.orders == []


def test_invalid_strategy_id_is_rejected_before_it_becomes_a_key(stack: None) -> None:
    bad = event("evaluate_by_id.json")
    bad["path"] = "/api/v1/execution/evaluate/not%20an%20id!"
    bad["pathParameters"] = {"strategy_id": "not an id!"}
    status, body = answer(handler("EvaluateByIdFunction")(bad, Context()))
    assert status == 422
    assert body["code"] == "invalid_request" and body["details"][0]["path"] == "strategy_id"


def test_body_over_the_limit_is_413(stack: None) -> None:
    big = event("evaluate_by_object.json")
    big["body"] = json.dumps({"strategy": {"name": "x" * 300_000}})
    status, body = answer(handler("EvaluateByObjectFunction")(big, Context()))
    assert status == 413 and body["code"] == "payload_too_large"


def test_bulk_over_500_ids_is_422(stack: None) -> None:
    bulk = event("evaluate_bulk.json")
    bulk["body"] = json.dumps({"strategy_ids": [f"s{i}" for i in range(501)]})
    status, body = answer(handler("EvaluateBulkFunction")(bulk, Context()))
    assert status == 422 and body["code"] == "invalid_request"
    assert body["details"][0]["path"] == "strategy_ids"


def test_unknown_strategy_is_404_with_error_metric(
    stack: None, capsys: pytest.CaptureFixture[str]
) -> None:
    status, body = answer(handler("EvaluateByIdFunction")(event("evaluate_by_id.json"), Context()))
    assert status == 404 and body == {
        "code": "strategy_not_found",
        "message": "no strategy with id 'rsi-meanrev-btc'",
        "details": [],
    }
    assert "Errors_strategy_not_found" in capsys.readouterr().out


def test_logs_carry_the_correlation_id_and_no_strategy_body(
    stack: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import logging

    from engine.entrypoints.observability import logger

    # Powertools' handlers hold the stdout of import time: point them at a buffer.
    buffer = io.StringIO()
    handlers = [logger.registered_handler, *logging.getLogger("engine").handlers]
    stream_handlers = [h for h in handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.stream for h in stream_handlers]
    for h in stream_handlers:
        h.stream = buffer  # not setStream: it flushes the old stream, maybe a closed capture
    draft = event("evaluate_by_object.json")
    doc = strategy_doc("secret-draft")
    doc["name"] = "TOP-SECRET-STRATEGY-NAME"
    doc["execution_config"]["cooldown_bars"] = 3  # legacy keys: a WARNING is logged
    del doc["execution_config"]["cooldown_config"]
    draft["body"] = json.dumps({"strategy": doc})
    seed(strategy_doc())
    try:
        status, body = answer(handler("EvaluateByObjectFunction")(draft, Context()))
    finally:
        for h, stream in zip(stream_handlers, streams, strict=True):
            h.stream = stream
    assert status == 200, body
    logged = capsys.readouterr()
    everything = buffer.getvalue() + logged.out + logged.err
    assert "TOP-SECRET-STRATEGY-NAME" not in everything
    assert '"indicators"' not in everything
    records = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    assert any("deprecated flat cooldown keys" in r["message"] for r in records)
    request_id = draft["requestContext"]["requestId"]
    assert records and all(r.get("correlation_id") == request_id for r in records)


def test_schedule_event_evaluates_a_due_strategy_then_finds_nothing_due(stack: None) -> None:
    seed(strategy_doc())  # never evaluated: due
    scheduled = event("schedule.json")
    first = handler("EvaluateBulkFunction")(copy.deepcopy(scheduled), Context())
    assert (first["due"], first["evaluated"], first["chunks"]) == (1, 1, 0)
    # its newest closed bar is evaluated: the next tick finds nothing to do
    again = handler("EvaluateBulkFunction")(scheduled, Context())
    assert again == {"due": 0, "evaluated": 0, "chunks": 0, "skipped": 0, "bars_passed_over": 0}


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (
            {"position_sizing": {"type": "risk_percent", "value": 0.01}, "stop_loss": None},
            "strategy.execution_config.position_sizing",
        ),
        (
            {
                "take_profit": [
                    {"type": "percent", "value": 0.02, "fraction": 0.5},
                    {"type": "percent", "value": 0.04, "fraction": 0.3},
                ]
            },
            "strategy.execution_config.take_profit",
        ),
        ({"stop_loss": {"type": "trailing_percent"}}, "strategy.execution_config.stop_loss.value"),
    ],
)
def test_invalid_trading_breadth_combinations_are_422_naming_the_path(
    stack: None, config: dict[str, Any], path: str
) -> None:
    request = event("evaluate_by_object.json")
    body = json.loads(request["body"])
    body["strategy"]["execution_config"].update(config)
    body["strategy"]["execution_config"] = {
        k: v for k, v in body["strategy"]["execution_config"].items() if v is not None
    }
    body["strategy"]["short_entry"] = {"left": "rsi", "op": ">", "right": 70}
    request["body"] = json.dumps(body)
    status, answered = answer(handler("EvaluateByObjectFunction")(request, Context()))
    assert status == 422, answered
    assert path in [d["path"] for d in answered["details"]], answered


def test_the_openapi_document_describes_every_trading_breadth_key() -> None:
    from engine.entrypoints.local.server import merged_openapi
    from engine.entrypoints.local.template import api_routes

    schemas = merged_openapi(api_routes())["components"]["schemas"]
    assert {"short_entry", "short_exit"} <= set(schemas["Strategy"]["properties"])
    config = schemas["ExecutionConfig"]["properties"]
    assert {"capital", "break_even_after", "max_open_positions_total", "max_drawdown"} <= set(
        config
    )
    assert {"TrailingPercentStop", "TrailingAtrStop", "PercentTargetPart", "MaxDrawdown"} <= set(
        schemas
    )
    assert {"equity", "guards"} <= set(schemas["EvaluationResult"]["properties"])
    assert {"side", "initial_quantity", "realized_pnl"} <= set(schemas["Position"]["properties"])
