"""HISTORY_TTL_DAYS: closed positions and filled or cancelled orders carry DynamoDB's TTL
attribute, open ones never; without the setting nothing expires (issue 10)."""

from __future__ import annotations

import time

from engine.adapters.dynamodb import DynamoRepositories
from engine.adapters.dynamodb.models import OrderModel, PositionModel
from engine.core.state import ExecutionState

from tests.support.storage import entry_changes, make_strategy, open_position, stop_out_changes


def _expiries(sid: str) -> dict[str, int | None]:
    items = [*PositionModel.query(sid), *OrderModel.query(sid)]
    return {
        f"{getattr(i, 'order_type', 'position')}:{i.status}": (
            None if i.expires_at is None else int(i.expires_at)
        )
        for i in items
    }


def _live_through_a_stop(repos: DynamoRepositories, sid: str) -> None:
    strategy = make_strategy(sid)
    repos.strategies.put(strategy)
    first = open_position(sid, 0)
    version = repos.states.commit(repos.states.load([strategy])[sid], entry_changes(first))
    repos.states.commit(ExecutionState(strategy_id=sid, version=version), stop_out_changes(first))
    later = open_position(sid, 7)
    repos.states.commit(repos.states.load([strategy])[sid], entry_changes(later))


def test_done_items_expire_after_the_configured_days(repos: DynamoRepositories) -> None:
    repos.states.history_ttl_days = 30
    before = int(time.time())
    _live_through_a_stop(repos, "ttl-on")
    expiries = _expiries("ttl-on")
    done = {k: v for k, v in expiries.items() if not k.endswith(":open")}
    assert done and all(v is not None for v in done.values()), expiries
    for value in done.values():
        assert before + 30 * 86_400 <= value <= int(time.time()) + 30 * 86_400  # type: ignore[operator]
    assert all(v is None for k, v in expiries.items() if k.endswith(":open")), expiries


def test_without_the_setting_nothing_expires(repos: DynamoRepositories) -> None:
    _live_through_a_stop(repos, "ttl-off")
    assert set(_expiries("ttl-off").values()) == {None}
