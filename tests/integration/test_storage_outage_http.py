"""DynamoDB stalled or its tables missing, seen through the HTTP handlers (issue 10): every
request answers within its budget, 503 with a code that says which, never a hang past API
Gateway's 29 s nor a 500."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from tests.support.aws import models_restored, use_fake_aws
from tests.support.handlers import Context, answer, event, handler

BUDGET_S = 7.0  # the test's HTTP budget: one 5 s attempt fits, a second does not


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that accepts connections and never answers: a stalled DynamoDB."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    use_fake_aws(monkeypatch)
    monkeypatch.setenv("STALE_DATA_POLICY", "warn")
    monkeypatch.setenv("MARKET_DATA_PROVIDER", "dynamodb")
    monkeypatch.setattr("engine.entrypoints.http.HTTP_BUDGET_S", BUDGET_S)
    from engine import bootstrap, settings

    def point(host: str | None) -> None:
        """The functions' settings name this endpoint (None: AWS, here moto's mock)."""
        if host is None:
            monkeypatch.delenv("DYNAMODB_ENDPOINT", raising=False)
        else:
            monkeypatch.setenv("DYNAMODB_ENDPOINT", host)
        settings.settings.cache_clear()
        bootstrap.service.cache_clear()

    with models_restored():
        try:
            yield point
        finally:
            settings.settings.cache_clear()
            bootstrap.service.cache_clear()


def bulk_event() -> dict[str, Any]:
    body = {"strategy_ids": ["rsi-meanrev-btc", "other"], "persist": True}
    return {**event("evaluate_bulk.json"), "body": json.dumps(body)}


@pytest.mark.parametrize("function", ["EvaluateByIdFunction", "EvaluateBulkFunction"])
def test_a_stalled_dynamodb_answers_503_within_the_budget(
    bound: Any, black_hole: str, function: str
) -> None:
    bound(black_hole)
    request = event("evaluate_by_id.json") if function == "EvaluateByIdFunction" else bulk_event()
    start = time.monotonic()
    status, body = answer(handler(function)(request, Context()))
    elapsed = time.monotonic() - start
    assert elapsed < BUDGET_S + 1, elapsed
    if function == "EvaluateByIdFunction":
        assert status == 503 and body["code"] == "storage_unavailable", body
        assert "no time left" in body["message"]
    else:  # each strategy reports the outage; the request itself answers
        assert status == 200, body
        assert {r["error"]["code"] for r in body["results"]} == {"storage_unavailable"}


@pytest.mark.parametrize("function", ["EvaluateByIdFunction", "EvaluateBulkFunction"])
def test_missing_tables_answer_503_naming_the_problem(bound: Any, function: str) -> None:
    with mock_aws():
        bound(None)  # no table was created
        request = (
            event("evaluate_by_id.json") if function == "EvaluateByIdFunction" else bulk_event()
        )
        status, body = answer(handler(function)(request, Context()))
    if function == "EvaluateByIdFunction":
        assert status == 503, body
        error = body
    else:
        assert status == 200, body
        error = body["results"][0]["error"]
    assert error["code"] == "storage_table_missing", error
    assert "does not exist" in error["message"]
