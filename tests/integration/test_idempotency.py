"""Idempotency under every delivery pattern, on the real DynamoDB adapters (moto in-process):
the trials of tests/support/trials.py (whose docstring describes them), and a commit whose
answer is lost after DynamoDB applied it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ReadTimeoutError
from engine.adapters.dynamodb import state as state_module
from engine.adapters.dynamodb.models import StrategyModel
from engine.core.candles import Candles
from engine.service.errors import EngineError

from tests.support.trials import (
    PATTERNS,
    RUNS,
    STATE_MODELS,
    STEPS_PER_RUN,
    T0,
    H,
    IdempotencyTrials,
    Scenario,
    clear_state_tables,
    run_pattern,
    stored_state,
    table_items,
    trial_runner,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trials() -> Iterator[IdempotencyTrials]:
    yield from trial_runner()


@pytest.mark.parametrize("pattern", ["repeat", "concurrent", "crash"])
def test_every_delivery_pattern_leaves_the_state_of_one_clean_evaluation(
    trials: IdempotencyTrials, pattern: str
) -> None:
    run_pattern(trials, pattern)


def test_the_trial_count_is_at_least_a_thousand() -> None:
    assert set(RUNS) == set(PATTERNS)
    assert sum(RUNS.values()) * STEPS_PER_RUN >= 1000


# --- a commit whose answer is lost -----------------------------------------------------------


class _Http:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}


class IdempotencyWindow:
    """DynamoDB's answer to TransactWriteItems requests that repeat a ClientRequestToken
    (which moto does not implement), on the client the state repository commits with:
    the same token with the same parameters is answered with success and applied once; the
    same token with other parameters is refused with IdempotentParameterMismatchException
    (the documented behaviour within the ten-minute window). `lose_next` applies the next
    transaction and then loses its answer ("read_timeout") or answers it with a 500
    ("internal_error"): the client cannot know whether it was applied, and retries it with
    its token."""

    def __init__(self) -> None:
        self.client = StrategyModel._get_connection().connection.client
        self.requests: list[dict[str, Any]] = []
        self.seen: dict[str, dict[str, Any]] = {}
        self.lose_next: str | None = None

    def before(self, params: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"] or b"{}")
        self.requests.append(body)
        token = body.get("ClientRequestToken")
        if token in self.seen:
            if self.seen[token] == body:
                return _Http(200), {"ResponseMetadata": {"HTTPStatusCode": 200}}
            return _Http(400), {
                "Error": {
                    "Code": "IdempotentParameterMismatchException",
                    "Message": "the request uses the same client token as a previous, "
                    "but non-identical request",
                },
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
        if token is not None:
            self.seen[token] = body
        return None

    def after(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        lost, self.lose_next = self.lose_next, None
        if lost == "read_timeout":  # applied, but the answer never arrives
            raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/")
        if lost == "internal_error":  # applied, but answered 500: the outcome is unknown
            http_response.status_code = 500
            parsed.clear()
            parsed.update(
                {
                    "Error": {"Code": "InternalServerError", "Message": "Internal server error"},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                }
            )

    def __enter__(self) -> IdempotencyWindow:
        events = self.client.meta.events
        events.register("before-call.dynamodb.TransactWriteItems", self.before, "window")
        events.register("after-call.dynamodb.TransactWriteItems", self.after, "window-lost")
        return self

    def __exit__(self, *_: object) -> None:
        events = self.client.meta.events
        events.unregister("before-call.dynamodb.TransactWriteItems", unique_id="window")
        events.unregister("after-call.dynamodb.TransactWriteItems", unique_id="window-lost")


@pytest.mark.parametrize("lost", ["internal_error", "read_timeout"])
def test_a_commit_whose_answer_is_lost_is_answered_by_its_retry(
    trials: IdempotencyTrials, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """DynamoDB applied the commit, the client never heard: the retry keeps the request's
    token and every parameter, so DynamoDB answers it from its idempotency window (a retry
    with other timestamps would be refused with IdempotentParameterMismatch)."""
    clear_state_tables()
    volume = np.ones(10)
    volume[8] = 10.0  # the entry fires at bar 8
    close = np.linspace(100, 101, 10)
    trials.market.candles = {
        ("AAA/USD", "1h"): Candles(
            time=T0 + np.arange(10, dtype=np.int64) * H,
            open=close,
            high=close + 1,
            low=close - 1,
            close=close,
            volume=volume,
        )
    }
    doc = {
        "name": "lost answer",
        "assets": ["AAA/USD"],
        "timeframe": "1h",
        "entry": {"left": "volume", "op": ">", "right": 5},
        "execution_config": {"stop_loss": {"type": "percent", "value": 0.02}},
    }
    scenario = Scenario(9_999_999, doc, trials.market.candles, [], [])
    trials.strategies.put(scenario.strategy(scenario.trial_id, "active"))
    trials.strategies.put(scenario.strategy(scenario.reference_id, "paused"))
    trials.now = T0 + 9 * H + 5_000
    trials.service.evaluate_by_id(scenario.reference_id)
    # time passes between attempts, as it does in Lambda (the backoff alone is >= 12.5 ms)
    clock = iter(range(trials.now, trials.now + 10**9, 25))
    monkeypatch.setattr(state_module, "now_ms", lambda: next(clock))
    error: EngineError | None = None
    with IdempotencyWindow() as window:
        window.lose_next = lost
        try:
            result = trials.service.evaluate_by_id(scenario.trial_id)
        except EngineError as exc:
            error = exc
    tables = {m.Meta.table_name: table_items(m) for m in STATE_MODELS}
    trial, reference = (
        stored_state(tables, scenario.trial_id),
        stored_state(tables, scenario.reference_id),
    )
    # the first attempt did commit: the store is right whatever the caller was told
    assert trial.comparable() == reference.comparable()
    assert len(window.requests) == 2  # the lost one and its retry
    assert error is None, f"a commit that happened was answered {error.code}: {error.message}"
    assert result.persisted and not result.changes.empty
    assert window.requests[1] == window.requests[0]
