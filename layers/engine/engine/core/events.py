"""Order events (DESIGN §12): what a committed evaluation changed, as events for subscribers.

Pure: events are derived from the state an evaluation read and the changes it commits, so the
same commit always yields the same events, with the same ids, in the same order. Storage
writes them in the evaluation's own transaction (the outbox), which is what makes them
"derived from committed data": a dry run or a draft never commits, so it never has events.

An event id is a digest of what changed (the event type and the changed item's identity, plus
the new value where one item can change several times: a stop that moves each bar), never of
when it was published, so a redelivery carries the same id and a subscriber dedupes by it.

`sequence` orders one strategy's events: the state version of the commit times
SEQUENCE_STRIDE plus the event's place in that commit. It strictly increases, commit after
commit, for every strategy (not gapless: a commit holds fewer than SEQUENCE_STRIDE events).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from engine.core import timeframes
from engine.core.state import Changes, CooldownState, ExecutionState, Order, Position
from engine.core.timeframes import to_ms

SCHEMA_VERSION: Final = 1
# Events of one commit are numbered below this; a commit writes at most 100 items, and each
# item yields at most two events (an order created and filled in the same evaluation).
SEQUENCE_STRIDE: Final = 1000

EventType = Literal[
    "position.opened",
    "position.closed",
    "order.created",
    "order.filled",
    "order.cancelled",
    "stop.moved",
    "cooldown.tripped",
    "guard.tripped",
]
EVENT_TYPES: Final[tuple[str, ...]] = get_args(EventType)


def iso(time_ms: int) -> str:
    """UTC ISO 8601 with milliseconds and a Z, as every event time is written."""
    return timeframes.iso(time_ms, millis=True)


# --- the data of each event type ---------------------------------------------------------


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PositionOpenedData(_Data):
    position_id: str
    side: Literal["long", "short"] = "long"
    entry_time: str = Field(description="open time of the entry bar, ISO 8601 UTC")
    entry_price: float
    quantity: float
    entry_fee: float
    stop_loss_price: float | None
    take_profit_price: float | None


class PositionClosedData(_Data):
    position_id: str
    side: Literal["long", "short"] = "long"
    entry_time: str
    exit_time: str = Field(description="open time of the bar the position closed at")
    entry_price: float
    exit_price: float
    quantity: float
    fees: float = Field(description="entry and exit fees")
    pnl: float
    exit_reason: str


class OrderData(_Data):
    """order.created, order.filled and order.cancelled: the order as it stands after."""

    order_id: str
    position_id: str
    side: str = Field(description="enter_long, exit_long (enter_short, exit_short)")
    type: str = Field(description="market, stop_loss or take_profit")
    quantity: float
    price: float | None = Field(description="fill price, or the trigger price of a resting order")
    status: Literal["open", "filled", "cancelled"]
    reason: str
    created_at: str
    filled_at: str | None


class StopMovedData(_Data):
    order_id: str
    position_id: str
    previous_price: float | None
    price: float
    quantity: float


class CooldownTrippedData(_Data):
    tier: Literal["short", "long"] | None
    tripped_at: str = Field(description="bar at which the tier tripped")
    blocked_bars: int = Field(description="bars after tripped_at in which entries stay blocked")
    losses: int = Field(description="losing exits the cooldown holds at the trip")


class GuardTrippedData(_Data):
    guard: str = Field(description="which guard, e.g. max_drawdown")
    tripped_at: str
    until: str | None = Field(description="last bar at which entries are blocked, if known")
    details: dict[str, Any] = Field(default_factory=dict)


DATA_MODELS: Final[dict[str, type[_Data]]] = {
    "position.opened": PositionOpenedData,
    "position.closed": PositionClosedData,
    "order.created": OrderData,
    "order.filled": OrderData,
    "order.cancelled": OrderData,
    "stop.moved": StopMovedData,
    "cooldown.tripped": CooldownTrippedData,
    "guard.tripped": GuardTrippedData,
}


class Event(BaseModel):
    """One change of one committed evaluation; `data`'s shape depends on `type`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^evt_[0-9a-f]{32}$")]
    type: EventType
    version: Literal[1] = SCHEMA_VERSION
    time: str = Field(description="when the evaluation committed, ISO 8601 UTC")
    strategy_id: str
    asset: str | None = Field(description="null for an event of the whole strategy")
    bar: str = Field(description="open time of the bar the change happened at, ISO 8601 UTC")
    sequence: int = Field(
        ge=0, description="strictly increasing per strategy in commit order: sort by it"
    )
    data: dict[str, Any]


@dataclass(frozen=True)
class GuardTrip:
    """A guard that tripped in this evaluation (DESIGN §11 guards): the hook through which
    the evaluation reports it, so that a `guard.tripped` event is committed with it.

    The drawdown halt is read from the committed account (`Changes.account.halted_at`); other
    guards can pass theirs to `derive_events(..., guard_trips=...)`. A stop moved by a trailing
    stop or break-even is read from `Changes.stop_moves` or its rewritten order (`stop.moved`)."""

    guard: str
    bar_ms: int
    asset: str | None = None
    until_ms: int | None = None
    details: Mapping[str, Any] | None = None


# --- derivation --------------------------------------------------------------------------


def event_id(strategy_id: str, event_type: str, *subject: str | int | float | None) -> str:
    raw = "|".join([strategy_id, event_type, *(repr(s) for s in subject)]).encode()
    return "evt_" + hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True)
class _Draft:
    type: str
    asset: str | None
    bar_ms: int
    rank: int
    subject: str
    id: str
    data: _Data


def _order_data(o: Order) -> OrderData:
    return OrderData(
        order_id=o.order_id,
        position_id=o.position_id,
        side=o.side,
        type=o.type,
        quantity=o.quantity,
        price=o.price,
        status=o.status,
        reason=o.reason,
        created_at=iso(to_ms(o.created_at)),
        filled_at=None if o.filled_at is None else iso(to_ms(o.filled_at)),
    )


def _is_entry(o: Order) -> bool:
    return o.side.startswith("enter")


# Within a bar: exits first (their orders, the close), then stops that moved, cooldown and
# guard trips, then entries (the position, its market order, its resting orders).
_RANK: Final = {
    ("order.created", "exit"): 0,
    ("order.filled", "exit"): 1,
    ("order.cancelled", "exit"): 2,
    ("position.closed", ""): 3,
    ("stop.moved", ""): 4,
    ("cooldown.tripped", ""): 5,
    ("guard.tripped", ""): 6,
    ("position.opened", ""): 7,
    ("order.created", "entry"): 8,
    ("order.filled", "entry"): 9,
    ("order.created", "resting"): 10,
    ("order.cancelled", "resting"): 2,
    ("order.filled", "resting"): 1,
}


def _order_group(o: Order) -> str:
    if o.type != "market":
        return "resting"
    return "entry" if _is_entry(o) else "exit"


def _order_drafts(
    sid: str, before: Order | None, after: Order, closes: Mapping[str, int]
) -> Iterable[_Draft]:
    group = _order_group(after)
    data = _order_data(after)
    if before is None:
        yield _Draft(
            "order.created",
            after.asset,
            to_ms(after.created_at),
            _RANK["order.created", group],
            after.order_id,
            event_id(sid, "order.created", after.order_id),
            data,
        )
    if after.status == "filled" and (before is None or before.status != "filled"):
        bar = to_ms(after.filled_at) if after.filled_at is not None else to_ms(after.created_at)
        yield _Draft(
            "order.filled",
            after.asset,
            bar,
            _RANK["order.filled", group],
            after.order_id,
            event_id(sid, "order.filled", after.order_id),
            data,
        )
    elif after.status == "cancelled" and (before is None or before.status != "cancelled"):
        # cancelled when its position closed (its sibling filled), at that bar
        bar = closes.get(after.position_id, -1)
        yield _Draft(
            "order.cancelled",
            after.asset,
            bar,
            _RANK["order.cancelled", group],
            after.order_id,
            event_id(sid, "order.cancelled", after.order_id),
            data,
        )
    elif (
        before is not None
        and after.status == "open"
        and after.type == "stop_loss"
        and after.price is not None
        and before.price != after.price
    ):
        # placed by the caller at the evaluation's bar (-1)
        yield _stop_moved(sid, before, after.price, after.quantity, -1)


def _position_drafts(sid: str, before: Position | None, after: Position) -> Iterable[_Draft]:
    if before is None:
        yield _Draft(
            "position.opened",
            after.asset,
            to_ms(after.entry_time),
            _RANK["position.opened", ""],
            after.position_id,
            event_id(sid, "position.opened", after.position_id),
            PositionOpenedData(
                position_id=after.position_id,
                side=after.side,
                entry_time=iso(to_ms(after.entry_time)),
                entry_price=after.entry_price,
                quantity=after.quantity,
                entry_fee=after.entry_fee,
                stop_loss_price=after.stop_loss_price,
                take_profit_price=after.take_profit_price,
            ),
        )
    if after.status == "closed" and (before is None or before.status != "closed"):
        exit_ms = to_ms(after.exit_time) if after.exit_time is not None else to_ms(after.entry_time)
        yield _Draft(
            "position.closed",
            after.asset,
            exit_ms,
            _RANK["position.closed", ""],
            after.position_id,
            event_id(sid, "position.closed", after.position_id),
            PositionClosedData(
                position_id=after.position_id,
                side=after.side,
                entry_time=iso(to_ms(after.entry_time)),
                exit_time=iso(exit_ms),
                entry_price=after.entry_price,
                exit_price=after.exit_price if after.exit_price is not None else 0.0,
                quantity=after.quantity,
                fees=after.entry_fee + (after.exit_fee or 0.0),
                pnl=after.pnl if after.pnl is not None else 0.0,
                exit_reason=after.exit_reason or "",
            ),
        )


def _cooldown_drafts(
    sid: str, before: CooldownState | None, after: CooldownState
) -> Iterable[_Draft]:
    if after.tripped_at is None:
        return
    if before is not None and (before.tripped_at, before.blocked_bars, before.tier) == (
        after.tripped_at,
        after.blocked_bars,
        after.tier,
    ):
        return
    tripped = to_ms(after.tripped_at)
    yield _Draft(
        "cooldown.tripped",
        after.asset,
        tripped,
        _RANK["cooldown.tripped", ""],
        after.asset,
        event_id(sid, "cooldown.tripped", after.asset, tripped, after.tier, after.blocked_bars),
        CooldownTrippedData(
            tier=after.tier,
            tripped_at=iso(tripped),
            blocked_bars=after.blocked_bars,
            losses=len(after.losses),
        ),
    )


def _stop_move_drafts(sid: str, orders: Mapping[str, Order], changes: Changes) -> Iterable[_Draft]:
    """A trailing or break-even stop that only moved (written in place, not as an order)."""
    rewritten = {o.order_id for o in changes.orders}
    for move in {m.order_id: m for m in changes.stop_moves}.values():
        before = orders.get(move.order_id)
        if move.order_id in rewritten or before is None or before.price == move.price:
            continue  # a rewritten order says it itself (`_order_drafts`)
        yield _stop_moved(sid, before, move.price, before.quantity, to_ms(move.checked_through))


def _stop_moved(sid: str, before: Order, price: float, quantity: float, bar_ms: int) -> _Draft:
    """The stop order `before` now at `price`: one id per (order, level), however written."""
    return _Draft(
        "stop.moved",
        before.asset,
        bar_ms,
        _RANK["stop.moved", ""],
        before.order_id,
        event_id(sid, "stop.moved", before.order_id, price),
        StopMovedData(
            order_id=before.order_id,
            position_id=before.position_id,
            previous_price=before.price,
            price=price,
            quantity=quantity,
        ),
    )


def _guard_draft(sid: str, trip: GuardTrip) -> _Draft:
    return _Draft(
        "guard.tripped",
        trip.asset,
        trip.bar_ms,
        _RANK["guard.tripped", ""],
        trip.guard,
        event_id(sid, "guard.tripped", trip.guard, trip.asset, trip.bar_ms),
        GuardTrippedData(
            guard=trip.guard,
            tripped_at=iso(trip.bar_ms),
            until=None if trip.until_ms is None else iso(trip.until_ms),
            details=dict(trip.details or {}),
        ),
    )


def derive_events(
    state: ExecutionState,
    changes: Changes,
    *,
    version: int,
    committed_ms: int,
    bar_ms: int | None = None,
    guard_trips: Sequence[GuardTrip] = (),
) -> list[Event]:
    """The events of committing `changes` on `state` as state version `version`.

    `state` is what the evaluation read (its open positions and orders, its cooldowns): an
    item of `changes` not among them is new. A change that is no event (a cooldown's loss
    list, a stop's quantity after a partial fill) yields none. `bar_ms` is the evaluated bar,
    the bar of a change that has none of its own (a stop that moved).
    """
    sid = state.strategy_id
    positions = {p.position_id: p for p in state.positions}
    orders = {o.order_id: o for o in state.orders}
    drafts: list[_Draft] = []
    for position in {p.position_id: p for p in changes.positions}.values():
        drafts.extend(_position_drafts(sid, positions.get(position.position_id), position))
    closes = {
        p.position_id: to_ms(p.exit_time)
        for p in changes.positions
        if p.status == "closed" and p.exit_time is not None
    }
    for order in {o.order_id: o for o in changes.orders}.values():
        drafts.extend(_order_drafts(sid, orders.get(order.order_id), order, closes))
    for cooldown in {c.asset: c for c in changes.cooldowns}.values():
        drafts.extend(_cooldown_drafts(sid, state.cooldowns.get(cooldown.asset), cooldown))
    drafts.extend(_stop_move_drafts(sid, orders, changes))
    trips = list(guard_trips)
    if changes.account is not None and changes.account.halted_at is not None:
        halted = to_ms(changes.account.halted_at)
        if state.halted_at is None or to_ms(state.halted_at) != halted:
            trips.append(GuardTrip(guard="max_drawdown", bar_ms=halted))
    drafts.extend(_guard_draft(sid, trip) for trip in trips)
    latest = bar_ms if bar_ms is not None else max((d.bar_ms for d in drafts), default=-1)
    placed = [d if d.bar_ms >= 0 else _with_bar(d, latest) for d in drafts]
    placed.sort(key=lambda d: (d.bar_ms, d.rank, d.asset or "", d.subject))
    if len(placed) >= SEQUENCE_STRIDE:
        raise ValueError(f"strategy {sid}: {len(placed)} events in one commit")
    time = iso(committed_ms)
    return [
        Event(
            id=d.id,
            type=d.type,
            time=time,
            strategy_id=sid,
            asset=d.asset,
            bar=iso(d.bar_ms) if d.bar_ms >= 0 else time,
            sequence=version * SEQUENCE_STRIDE + n,
            data=d.data.model_dump(mode="json"),
        )
        for n, d in enumerate(placed)
    ]


def _with_bar(draft: _Draft, bar_ms: int) -> _Draft:
    return _Draft(draft.type, draft.asset, bar_ms, draft.rank, draft.subject, draft.id, draft.data)
