"""Order events derived from an evaluation's changes (engine.core.events), and their wire form
(engine.adapters.events.wire): types, order, ids, sequence, signatures."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from engine.adapters.events.wire import event_body, events_json, parse_events, sign, verify
from engine.core.events import (
    SEQUENCE_STRIDE,
    Event,
    GuardTrip,
    derive_events,
    event_id,
)
from engine.core.state import Changes, CooldownState, ExecutionState

from tests.support.core import (
    EXIT_ON_LOW_VOLUME,
    FLAT,
    SIGNAL,
    Driver,
    candles,
    flat_bars,
    make_strategy,
    ts,
)

COMMITTED = ts(100)


def _events(driver: Driver, index: int, version: int = 1) -> list[Event]:
    before = driver.state
    result = driver.at(index)
    return derive_events(
        before, result.changes, version=version, committed_ms=COMMITTED, bar_ms=ts(index)
    )


def _types(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.type, e.data.get("type")) for e in events]


def test_an_entry_opens_a_position_and_creates_and_fills_its_orders_in_that_order() -> None:
    strategy = make_strategy(
        execution_config={
            "stop_loss": {"type": "percent", "value": 0.02},
            "take_profit": {"type": "percent", "value": 0.04},
        }
    )
    driver = Driver(strategy, candles(flat_bars(3, b1=SIGNAL)))
    assert _events(driver, 0) == []  # nothing happened: no event
    events = _events(driver, 1, version=7)
    assert _types(events) == [
        ("position.opened", None),
        ("order.created", "market"),
        ("order.filled", "market"),
        ("order.created", "stop_loss"),
        ("order.created", "take_profit"),
    ]
    assert [e.sequence for e in events] == [7000, 7001, 7002, 7003, 7004]
    opened = events[0]
    assert opened.strategy_id == "test-strategy" and opened.asset == "BTC/USDT"
    assert opened.bar == "2024-01-01T01:00:00.000Z"
    assert opened.time == "2024-01-05T04:00:00.000Z"
    assert opened.version == 1
    assert opened.data["entry_price"] == 100.0
    assert opened.data["stop_loss_price"] == pytest.approx(98.0)
    assert opened.data["take_profit_price"] == pytest.approx(104.0)
    stop = events[3].data
    assert stop["status"] == "open" and stop["price"] == pytest.approx(98.0)


def test_a_stop_fill_in_a_catch_up_bar_fills_cancels_and_closes_at_that_bar() -> None:
    strategy = make_strategy(
        execution_config={
            "stop_loss": {"type": "percent", "value": 0.02},
            "take_profit": {"type": "percent", "value": 0.04},
        }
    )
    # enters at bar 1 (close 100, stop 98, target 104); bar 2 falls to 97: the stop fills at 98
    bars = flat_bars(5, b1=SIGNAL, b2=(100.0, 100.0, 97.0, 99.0, 1.0))
    driver = Driver(strategy, candles(bars))
    _events(driver, 1)
    events = _events(driver, 4, version=2)  # bars 2-3 missed: caught up at 4
    assert _types(events) == [
        ("order.filled", "stop_loss"),
        ("order.cancelled", "take_profit"),
        ("position.closed", None),
    ]
    assert {e.bar for e in events} == {"2024-01-01T02:00:00.000Z"}
    closed = events[2].data
    assert closed["exit_reason"] == "stop_loss"
    assert closed["exit_price"] == pytest.approx(98.0)
    assert closed["pnl"] == pytest.approx(-2.0)
    assert events[0].data["filled_at"] == "2024-01-01T02:00:00.000Z"


def test_a_signal_exit_creates_fills_and_closes_and_a_loss_trips_the_cooldown() -> None:
    strategy = make_strategy(
        exit=EXIT_ON_LOW_VOLUME,
        execution_config={
            "cooldown_config": {"1h": {"short_loss_limit": 1, "short_window_bars": 3}},
        },
    )
    # enters at 100 (bar 1); bar 2 closes at 90 on low volume: signal exit, a loss
    bars = flat_bars(4, b1=SIGNAL, b2=(100.0, 100.0, 90.0, 90.0, 0.1))
    driver = Driver(strategy, candles(bars))
    _events(driver, 1)
    events = _events(driver, 2, version=2)
    assert _types(events) == [
        ("order.created", "market"),
        ("order.filled", "market"),
        ("position.closed", None),
        ("cooldown.tripped", None),
    ]
    assert events[0].data["side"] == "exit_long"
    assert events[3].data == {
        "tier": "short",
        "tripped_at": "2024-01-01T02:00:00.000Z",
        "blocked_bars": 3,
        "losses": 1,
    }


def test_ids_name_the_change_so_a_retry_of_the_same_commit_has_the_same_ids() -> None:
    strategy = make_strategy(execution_config={"stop_loss": {"type": "percent", "value": 0.02}})
    driver = Driver(strategy, candles(flat_bars(3, b1=SIGNAL)))
    before = driver.state
    result = driver.at(1)
    first = derive_events(before, result.changes, version=1, committed_ms=1, bar_ms=ts(1))
    again = derive_events(before, result.changes, version=1, committed_ms=1, bar_ms=ts(1))
    assert first == again
    # the id does not depend on when or as which version the change was committed
    later = derive_events(before, result.changes, version=5, committed_ms=99, bar_ms=ts(1))
    assert [e.id for e in later] == [e.id for e in first]
    assert len({e.id for e in first}) == len(first)
    (filled,) = [e for e in first if e.type == "order.filled"]
    assert filled.id == event_id("test-strategy", "order.filled", filled.data["order_id"])
    # another strategy's identical change is another event
    assert event_id("other", "order.filled", filled.data["order_id"]) != filled.id


def test_a_moved_stop_is_its_own_event_with_both_prices() -> None:
    strategy = make_strategy(execution_config={"stop_loss": {"type": "percent", "value": 0.02}})
    driver = Driver(strategy, candles(flat_bars(3, b1=SIGNAL)))
    driver.at(1)
    state = driver.state
    (stop,) = [o for o in state.orders if o.type == "stop_loss"]
    moved = stop.model_copy(update={"price": 99.5})
    events = derive_events(
        state, Changes(orders=[moved]), version=3, committed_ms=COMMITTED, bar_ms=ts(2)
    )
    assert [(e.type, e.bar) for e in events] == [("stop.moved", "2024-01-01T02:00:00.000Z")]
    assert events[0].data == {
        "order_id": stop.order_id,
        "position_id": stop.position_id,
        "previous_price": pytest.approx(98.0),
        "price": 99.5,
        "quantity": 1.0,
    }
    # moving again to another level is another change, another id
    again = derive_events(
        state,
        Changes(orders=[moved.model_copy(update={"price": 99.7})]),
        version=4,
        committed_ms=COMMITTED,
    )
    assert again[0].id != events[0].id


def test_a_cooldown_write_that_does_not_trip_is_no_event() -> None:
    state = ExecutionState(strategy_id="s")
    quiet = CooldownState(asset="BTC/USDT")
    assert derive_events(state, Changes(cooldowns=[quiet]), version=1, committed_ms=0) == []


def test_a_guard_trip_is_reported_through_the_hook() -> None:
    state = ExecutionState(strategy_id="s")
    trip = GuardTrip(guard="max_drawdown", bar_ms=ts(5), until_ms=ts(53), details={"peak": 1.0})
    (event,) = derive_events(state, Changes(), version=2, committed_ms=0, guard_trips=[trip])
    assert event.type == "guard.tripped" and event.asset is None
    assert event.data["until"] == "2024-01-03T05:00:00.000Z"
    assert event.sequence == 2 * SEQUENCE_STRIDE


def test_the_body_is_canonical_and_the_signature_is_the_hmac_of_it() -> None:
    strategy = make_strategy()
    driver = Driver(strategy, candles([FLAT, SIGNAL]))
    (event, *_) = _events(driver, 1)
    body = event_body(event)
    assert body == event_body(json.loads(body))  # the same bytes after a round trip
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == "sha256=" + expected
    assert verify(body, "s3cret", "sha256=" + expected)
    assert verify(body, "s3cret", expected)  # the bare hex is accepted too
    assert not verify(body, "other", "sha256=" + expected)
    assert not verify(body + b" ", "s3cret", "sha256=" + expected)
    events = _events(Driver(strategy, candles([FLAT, SIGNAL])), 1)
    assert parse_events(events_json(events)) == events


def test_a_trailing_stop_that_only_moved_in_place_is_a_stop_moved_event() -> None:
    from engine.core.state import StopMove
    from engine.core.timeframes import to_datetime

    strategy = make_strategy(execution_config={"stop_loss": {"type": "percent", "value": 0.02}})
    driver = Driver(strategy, candles(flat_bars(3, b1=SIGNAL)))
    driver.at(1)
    state = driver.state
    (stop,) = [o for o in state.orders if o.type == "stop_loss"]
    move = StopMove(
        position_id=stop.position_id,
        order_id=stop.order_id,
        price=99.1,
        checked_through=to_datetime(ts(2)),
        trailing_active=True,
    )
    (event,) = derive_events(state, Changes(stop_moves=[move]), version=3, committed_ms=COMMITTED)
    assert (event.type, event.bar, event.asset) == (
        "stop.moved",
        "2024-01-01T02:00:00.000Z",
        stop.asset,
    )
    assert event.data["previous_price"] == pytest.approx(98.0) and event.data["price"] == 99.1
    # the same move through a rewritten order is the same change: the same id
    (same,) = derive_events(
        state,
        Changes(orders=[stop.model_copy(update={"price": 99.1})]),
        version=3,
        committed_ms=COMMITTED,
        bar_ms=ts(2),
    )
    assert same.id == event.id
    # a move to where the stop already is, is no event
    still = move.model_copy(update={"price": stop.price})
    assert derive_events(state, Changes(stop_moves=[still]), version=3, committed_ms=0) == []


def test_a_drawdown_halt_committed_in_the_account_is_a_guard_tripped_event() -> None:
    from engine.core.state import Account
    from engine.core.timeframes import to_datetime

    state = ExecutionState(strategy_id="s")
    halted = Account(realized_pnl=-2_500.0, equity_peak=10_000.0, halted_at=to_datetime(ts(5)))
    (event,) = derive_events(state, Changes(account=halted), version=2, committed_ms=0)
    assert (event.type, event.data["guard"]) == ("guard.tripped", "max_drawdown")
    assert event.data["tripped_at"] == "2024-01-01T05:00:00.000Z"
    # the same halt committed again (a later evaluation during it) is no new event
    during = state.model_copy(update={"halted_at": to_datetime(ts(5))})
    assert derive_events(during, Changes(account=halted), version=3, committed_ms=0) == []
    # an account change without a halt is none either
    quiet = Account(realized_pnl=10.0)
    assert derive_events(state, Changes(account=quiet), version=2, committed_ms=0) == []


def test_a_short_position_is_announced_as_short() -> None:
    strategy = make_strategy(
        entry={"left": "volume", "op": ">", "right": 1_000_000},
        short_entry={"left": "volume", "op": ">", "right": 5},
        execution_config={"stop_loss": {"type": "percent", "value": 0.02}},
    )
    driver = Driver(strategy, candles(flat_bars(3, b1=SIGNAL)))
    events = _events(driver, 1)
    (opened,) = [e for e in events if e.type == "position.opened"]
    assert opened.data["side"] == "short"
    (stop,) = [e for e in events if e.type == "order.created" and e.data["type"] == "stop_loss"]
    assert stop.data["side"] == "exit_short" and stop.data["price"] > opened.data["entry_price"]
