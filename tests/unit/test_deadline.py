"""A request's time budget (engine.service.deadline): a bulk run stops starting work it could not
finish and reports those strategies as not done, writing nothing for them."""

from __future__ import annotations

import threading
import time

import pytest
from engine.adapters.dynamodb._retry import ATTEMPT_BOUND_S, RetryPolicy
from engine.entrypoints.http import HTTP_BUDGET_S
from engine.service import deadline
from engine.service.errors import STEP_RESERVE_S

from tests.support.service import BARS, candles, make_service, strategy

API_GATEWAY_LIMIT_S = 29


def test_the_http_budget_leaves_room_inside_api_gateways_limit() -> None:
    # the last storage attempt or bulk step starts with at least its bound in hand
    assert HTTP_BUDGET_S + 2 < API_GATEWAY_LIMIT_S
    assert STEP_RESERVE_S >= ATTEMPT_BOUND_S


def test_budgets_nest_and_end() -> None:
    assert deadline.remaining_s() is None and deadline.has_time_for(1e9)
    with deadline.time_budget(10):
        with deadline.time_budget(100):
            left = deadline.remaining_s()
            assert left is not None and 9 < left <= 10  # an inner budget never extends
        assert not deadline.has_time_for(11)
    assert deadline.remaining_s() is None


def test_a_pool_thread_keeps_the_callers_budget() -> None:
    seen: list[float | None] = []
    with deadline.time_budget(5):
        worker = threading.Thread(
            target=deadline.in_this_context(lambda: seen.append(deadline.remaining_s()))
        )
        worker.start()
        worker.join()
    assert seen[0] is not None and 0 < seen[0] <= 5


def test_storage_attempts_stop_when_the_budget_cannot_hold_another() -> None:
    calls: list[int] = []
    policy = RetryPolicy(sleep=lambda _: None)
    with deadline.time_budget(ATTEMPT_BOUND_S - 0.1), pytest.raises(Exception) as info:
        policy.call("GetItem", lambda: calls.append(1))
    assert calls == [] and info.value.code == "storage_unavailable"  # type: ignore[attr-defined]


def _bulk_service() -> tuple[object, object]:
    spike = {("BTC/USDT", "1h"): candles(1, spike_at=BARS - 1)}
    svc, states, _ = make_service([strategy("a"), strategy("b")], spike)
    return svc, states


def test_bulk_out_of_time_before_fetching_reports_every_strategy_not_done() -> None:
    svc, states = _bulk_service()
    with deadline.time_budget(STEP_RESERVE_S - 0.1):
        result = svc.evaluate_bulk(["a", "b"])  # type: ignore[attr-defined]
    assert [r.error.code for r in result.results] == ["not_done", "not_done"]
    assert states.commits == 0  # type: ignore[attr-defined]


def test_bulk_out_of_time_before_committing_writes_nothing_for_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc, states = _bulk_service()
    # market data arrived in time; the budget runs out before the commits
    monkeypatch.setattr("engine.service.execution.has_time_for", lambda _: False)
    result = svc.evaluate_bulk(["a", "b"])  # type: ignore[attr-defined]
    assert [r.error.code for r in result.results] == ["not_done", "not_done"]
    assert "evaluate it again" in result.results[0].error.message
    assert states.commits == 0  # type: ignore[attr-defined]
    assert result.summary.failed == 2


def test_without_a_budget_nothing_is_cut_short() -> None:
    svc, states = _bulk_service()
    start = time.monotonic()
    result = svc.evaluate_bulk(["a", "b"])  # type: ignore[attr-defined]
    assert result.summary.succeeded == 2 and states.commits == 2  # type: ignore[attr-defined]
    assert time.monotonic() - start < 10
