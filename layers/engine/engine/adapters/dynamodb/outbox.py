"""The event outbox: one item per commit that has order events, written in its transaction.

Why an outbox rather than streams of the state tables: the events of one evaluation exist
exactly when its transaction commits (the outbox item is one of its items), they come out of
one stream already grouped and ordered per strategy (hash key strategy_id, range key the state
version), and they are derived once, at commit, from what the evaluation read and changed,
instead of being reconstructed from the before and after images of three tables whose stream
records arrive in no common order. The cost is one item per commit that changes something
(none for a quiet bar, a dry run or a draft), and one item less in the 100 a commit may hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.adapters.dynamodb.models import OUTBOX_TTL_DAYS, OutboxModel
from engine.adapters.events.wire import events_json, parse_events
from engine.core.events import Event


def outbox_item(
    strategy_id: str, version: int, events: Sequence[Event], now_ms: int
) -> OutboxModel:
    return OutboxModel(
        strategy_id,
        version,
        events=events_json(events),
        committed_at=now_ms,
        expires_at=now_ms // 1000 + OUTBOX_TTL_DAYS * 86_400,
    )


def events_of(item: OutboxModel) -> list[Event]:
    return parse_events(item.events)


def outbox_events(strategy_id: str, after_version: int = 0) -> list[Event]:
    """A strategy's events still in the outbox, committed after `after_version` (a republish,
    tests), in sequence order. Strongly consistent."""
    items = OutboxModel.query(
        strategy_id,
        range_key_condition=OutboxModel.state_version > after_version,
        consistent_read=True,
    )
    return [event for item in items for event in events_of(item)]
