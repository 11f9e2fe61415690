"""Execution state in DynamoDB: open positions, open orders, cooldowns, and the version.

Reads are batched; a commit is one TransactWriteItems conditioned on the version it read.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any, Final

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from engine.adapters.dynamodb._batch import batch_get, chunks
from engine.adapters.dynamodb._retry import (
    THROTTLING_CODES,
    RetryPolicy,
    cancellation_codes,
    error_code,
)
from engine.adapters.dynamodb.errors import TransactionTooLarge
from engine.adapters.dynamodb.models import (
    CooldownModel,
    LossAttribute,
    OpenOrdersIndex,
    OpenPositionsIndex,
    OrderModel,
    OutboxModel,
    PositionModel,
    StrategyModel,
    now_ms,
    open_shard,
)
from engine.adapters.dynamodb.outbox import outbox_item
from engine.adapters.dynamodb.snapshots import StateHead, StrategySnapshots
from engine.adapters.dynamodb.strategies import head_of
from engine.core.events import derive_events
from engine.core.state import (
    Changes,
    CooldownState,
    ExecutionState,
    LossRecord,
    Order,
    Position,
)
from engine.core.strategy import COMMIT_OVERHEAD_ITEMS, MAX_WRITES_PER_EVALUATION, Strategy
from engine.core.timeframes import to_datetime, to_ms
from engine.service.deadline import in_this_context
from engine.service.errors import ConcurrentEvaluation, EngineError, StrategyNotFound
from engine.service.ports import EvaluatedBar

log = logging.getLogger(__name__)

# DynamoDB's limit on the items of one TransactWriteItems.
MAX_TRANSACTION_ITEMS: Final = MAX_WRITES_PER_EVALUATION  # validation keeps strategies within it
DEFAULT_BULK_THRESHOLD: Final = 8
# Strategies whose open items a warm container keeps (see DynamoStateRepository.load).
OPEN_ITEMS_CACHED: Final = 10_000
DEFAULT_CONSISTENCY_WINDOW_MS: Final = 10_000
# Threads for the open-item queries of a small load, kept for the container's life (each
# thread's botocore session is made once): two per strategy of up to DEFAULT_BULK_THRESHOLD.
_OPEN_ITEM_QUERIES: Final = ThreadPoolExecutor(max_workers=4, thread_name_prefix="open-items")
_HEAD_ATTRIBUTES: Final = [
    "strategy_id",
    "state_version",
    "cooldown_assets",
    "committed_at",
    "last_bar_ms",
    "realized_pnl",
    "equity_peak",
    "halted_at_ms",
]


class DynamoStateRepository:
    """engine.service.ports.StateRepository on the positions, orders, cooldowns and strategies tables.

    `load` of up to `bulk_threshold` strategies queries each one's open items through the
    sparse local indexes of the positions and orders tables (strongly consistent; closed
    trades and filled orders are not read, however long the history); more than that reads
    the sparse global open-positions and open-orders indexes once per shard instead.

    The global indexes are eventually consistent. A strategy committed within the last
    `consistency_window_ms` could still show its previous open items there while its version
    is already the new one, and a commit on that state would succeed; such strategies are
    read through the local indexes even in a bulk load. Quiet strategies cost nothing extra.

    A small load keeps what it read of each strategy's open items with the head it read them
    under (state version and commit time, from the strongly consistent strategy item). Every
    change to open items is a commit that moves both, so a later load finding the same head
    uses them without the two queries: an evaluation by id at a bar that changes nothing, in
    a warm container, reads the strategy item and its candles only. A head that moved (this
    container's commit or another's) reads them again.
    """

    def __init__(
        self,
        *,
        snapshots: StrategySnapshots | None = None,
        retry: RetryPolicy | None = None,
        bulk_threshold: int = DEFAULT_BULK_THRESHOLD,
        consistency_window_ms: int = DEFAULT_CONSISTENCY_WINDOW_MS,
        clock: Callable[[], int] = now_ms,
        history_ttl_days: int = 0,
    ) -> None:
        self.snapshots = snapshots if snapshots is not None else StrategySnapshots()
        self.retry = retry or RetryPolicy()
        self.bulk_threshold = bulk_threshold
        self.consistency_window_ms = consistency_window_ms
        self.clock = clock
        # Closed positions and filled or cancelled orders expire (DynamoDB TTL) this many days
        # after the commit that closed them; 0 keeps them. Open items never expire.
        self.history_ttl_days = history_ttl_days
        self._open_items: OrderedDict[str, tuple[tuple[int, int], list[Position], list[Order]]]
        self._open_items = OrderedDict()
        self._open_items_lock = threading.Lock()

    # --- load ---------------------------------------------------------------------------

    def load(self, strategies: Sequence[Strategy]) -> dict[str, ExecutionState]:
        """The state of each strategy, keyed by id.

        Requests: the strategy items not read by the strategy repository just before
        (BatchGetItem, 100 per request); then 2 queries per strategy, or (bulk) 2 queries per
        shard plus pages and 2 per strategy committed within the consistency window; then one
        BatchGetItem per 100 cooldown items, read only for assets the strategy item lists.
        A strategy without an item gets an empty state, version 0.
        """
        unique = list({s.strategy_id: s for s in strategies}.values())
        if not unique:
            return {}
        heads = self._heads(unique)  # before positions and orders: see snapshots.py
        ids = [s.strategy_id for s in unique]
        if len(ids) > self.bulk_threshold:
            positions, orders = self._open_items_from_indexes(ids)
            horizon = self.clock() - self.consistency_window_ms
            recent = [
                sid
                for sid in ids
                if (committed := heads[sid].committed_at) is not None and committed >= horizon
            ]
            if recent:
                fresh_positions, fresh_orders = self._open_items_by_strategy(recent)
                positions.update(fresh_positions)
                orders.update(fresh_orders)
        else:
            positions, orders = self._open_items_cached(ids, heads)
        cooldowns = self._cooldowns(heads)
        return {
            sid: ExecutionState(
                strategy_id=sid,
                version=heads[sid].version,
                positions=sorted(
                    positions.get(sid, []), key=lambda p: (p.entry_time, p.position_id)
                ),
                orders=sorted(orders.get(sid, []), key=lambda o: (o.created_at, o.order_id)),
                cooldowns=cooldowns.get(sid, {}),
                last_bar=_dt(heads[sid].last_bar_ms),
                realized_pnl=heads[sid].realized_pnl,
                equity_peak=heads[sid].equity_peak,
                halted_at=_dt(heads[sid].halted_at_ms),
            )
            for sid in ids
        }

    def _heads(self, strategies: Sequence[Strategy]) -> dict[str, StateHead]:
        heads: dict[str, StateHead] = {}
        missing: list[str] = []
        for strategy in strategies:
            head = self.snapshots.take(strategy)
            if head is None:
                missing.append(strategy.strategy_id)
            else:
                heads[strategy.strategy_id] = head
        if missing:
            items = batch_get(StrategyModel, missing, self.retry, attributes=_HEAD_ATTRIBUTES)
            for item in items:
                heads[item.strategy_id] = head_of(item)
        empty = StateHead(version=0, cooldown_assets=frozenset())
        for sid in missing:
            heads.setdefault(sid, empty)
        return heads

    def _open_items_cached(
        self, ids: Sequence[str], heads: Mapping[str, StateHead]
    ) -> tuple[dict[str, list[Position]], dict[str, list[Order]]]:
        """_open_items_by_strategy, for the strategies whose head moved since they were last
        read here (copies handed out: the cache keeps its own)."""
        positions: dict[str, list[Position]] = {}
        orders: dict[str, list[Order]] = {}
        unread: list[str] = []
        with self._open_items_lock:
            for sid in ids:
                mark = _head_mark(heads[sid])
                found = self._open_items.get(sid)
                if mark is None or found is None or found[0] != mark:
                    unread.append(sid)
                    continue
                self._open_items.move_to_end(sid)
                positions[sid] = [p.model_copy(deep=True) for p in found[1]]
                orders[sid] = [o.model_copy(deep=True) for o in found[2]]
        if unread:
            read_positions, read_orders = self._open_items_by_strategy(unread)
            positions.update(read_positions)
            orders.update(read_orders)
            with self._open_items_lock:
                for sid in unread:
                    mark = _head_mark(heads[sid])
                    if mark is None:
                        continue
                    self._open_items[sid] = (
                        mark,
                        [p.model_copy(deep=True) for p in read_positions[sid]],
                        [o.model_copy(deep=True) for o in read_orders[sid]],
                    )
                    self._open_items.move_to_end(sid)
                while len(self._open_items) > OPEN_ITEMS_CACHED:
                    self._open_items.popitem(last=False)
        return positions, orders

    def _open_items_by_strategy(
        self, ids: Sequence[str]
    ) -> tuple[dict[str, list[Position]], dict[str, list[Order]]]:
        """Each strategy's open positions and open orders: two queries each, sent together
        (an evaluation by id waits for the slower of them, not for both in turn)."""

        def query_positions(sid: str) -> list[PositionModel]:
            index = PositionModel.strategy_open_positions_index
            return list(index.query(sid, consistent_read=True))

        def query_orders(sid: str) -> list[OrderModel]:
            index = OrderModel.strategy_open_orders_index
            return list(index.query(sid, consistent_read=True))

        def read_positions(sid: str) -> list[Position]:
            items = self.retry.call("Query", partial(query_positions, sid))
            return [position_from_item(i) for i in items]

        def read_orders(sid: str) -> list[OrderModel]:
            return list(self.retry.call("Query", partial(query_orders, sid)))

        pending: dict[str, tuple[Future[list[Position]], Future[list[OrderModel]]]] = {
            sid: (
                _OPEN_ITEM_QUERIES.submit(in_this_context(read_positions), sid),
                _OPEN_ITEM_QUERIES.submit(in_this_context(read_orders), sid),
            )
            for sid in ids
        }
        positions: dict[str, list[Position]] = {}
        orders: dict[str, list[Order]] = {}
        # every query ended before any failure is raised: none is left retrying behind it
        every: list[Future[Any]] = [f for pair in pending.values() for f in pair]
        wait(every)
        for sid, (p_future, o_future) in pending.items():
            order_items = o_future.result()  # a failure is raised as the query raised it
            positions[sid] = with_stop_moves(p_future.result(), order_items)
            orders[sid] = [order_from_item(i) for i in order_items]
        return positions, orders

    def _open_items_from_indexes(
        self, ids: Sequence[str]
    ) -> tuple[dict[str, list[Position]], dict[str, list[Order]]]:
        wanted = set(ids)
        shards = sorted({open_shard(sid) for sid in ids})
        low, high = min(ids), max(ids)
        positions: dict[str, list[Position]] = {}
        orders: dict[str, list[Order]] = {}
        order_items: dict[str, list[OrderModel]] = {}
        for shard in shards:

            def query_positions(shard: str = shard) -> list[PositionModel]:
                return list(
                    PositionModel.open_positions_index.query(
                        shard, range_key_condition=OpenPositionsIndex.strategy_id.between(low, high)
                    )
                )

            def query_orders(shard: str = shard) -> list[OrderModel]:
                return list(
                    OrderModel.open_orders_index.query(
                        shard, range_key_condition=OpenOrdersIndex.strategy_id.between(low, high)
                    )
                )

            for p_item in self.retry.call("Query", query_positions):
                # the index is eventually consistent: trust the item's own status too
                if p_item.strategy_id in wanted and p_item.status == "open":
                    positions.setdefault(p_item.strategy_id, []).append(position_from_item(p_item))
            for o_item in self.retry.call("Query", query_orders):
                if o_item.strategy_id in wanted and o_item.status == "open":
                    order_items.setdefault(o_item.strategy_id, []).append(o_item)
        for sid, items in order_items.items():
            orders[sid] = [order_from_item(i) for i in items]
            positions[sid] = with_stop_moves(positions.get(sid, []), items)
        return positions, orders

    def _cooldowns(self, heads: dict[str, StateHead]) -> dict[str, dict[str, CooldownState]]:
        keys = [
            (sid, asset) for sid, head in heads.items() for asset in sorted(head.cooldown_assets)
        ]
        out: dict[str, dict[str, CooldownState]] = {}
        if not keys:
            return out
        for item in batch_get(CooldownModel, keys, self.retry):
            out.setdefault(item.strategy_id, {})[item.asset] = cooldown_from_item(item)
        return out

    # --- commit -------------------------------------------------------------------------

    def commit(
        self, state: ExecutionState, changes: Changes, evaluated: EvaluatedBar | None = None
    ) -> int:
        """Write `changes` in one transaction conditioned on `state.version`, with the
        `evaluated` bar (`last_bar_ms`, `next_due_ms`) on the strategy item it updates anyway.

        Returns the new version (`state.version` unchanged, and no request at all, when
        `changes` is empty: a quiet evaluation's bar goes through `record_bars`). Raises ConcurrentEvaluation when another commit moved the version
        first, StrategyNotFound when the strategy item does not exist, TransactionTooLarge
        beyond 100 items, StorageUnavailable when DynamoDB keeps failing. Nothing is written
        in any of those cases.
        """
        if changes.empty:
            return state.version
        sid = state.strategy_id
        positions = list({p.position_id: p for p in changes.positions}.values())
        orders = list({o.order_id: o for o in changes.orders}.values())
        cooldowns = list({c.asset: c for c in changes.cooldowns}.values())
        strangers = {p.strategy_id for p in positions} | {o.strategy_id for o in orders}
        strangers.discard(sid)
        if strangers:
            raise ValueError(f"changes for strategy {sid!r} hold items of {sorted(strangers)}")
        # a stop that only moved is one small update of its order; a full write supersedes it
        written = {p.position_id for p in positions} | {o.order_id for o in orders}
        moves = [
            m
            for m in {m.order_id: m for m in changes.stop_moves}.values()
            if m.position_id not in written and m.order_id not in written
        ]
        account = changes.account
        total = COMMIT_OVERHEAD_ITEMS + len(positions) + len(orders) + len(cooldowns) + len(moves)
        if total > MAX_TRANSACTION_ITEMS:
            raise TransactionTooLarge(
                f"strategy {sid}: one evaluation changed {len(positions)} positions, "
                f"{len(orders)} orders, {len(moves)} stop moves and {len(cooldowns)} cooldowns; "
                "with the state version "
                f"and the event outbox that is {total} items, above DynamoDB's "
                f"{MAX_TRANSACTION_ITEMS} per transaction. "
                "Nothing was written; reduce assets or max_open_positions."
            )
        new_version = state.version + 1
        # Taken once: a retry under the same token must send identical parameters, or
        # DynamoDB refuses it with IdempotentParameterMismatchException.
        now = self.clock()
        ttl = self.history_ttl_days
        expires = now // 1000 + ttl * 86_400 if ttl else None
        puts: list[PositionModel | OrderModel | CooldownModel | OutboxModel] = [
            *(position_item(p, expires) for p in positions),
            *(order_item(o, expires) for o in orders),
            *(cooldown_item(sid, c) for c in cooldowns),
        ]
        # The order events of this commit, in the same transaction: they exist exactly
        # when the commit does (DESIGN §12; engine.adapters.dynamodb.outbox).
        events = derive_events(
            state,
            changes,
            version=new_version,
            committed_ms=now,
            bar_ms=None if evaluated is None else evaluated.bar_ms,
        )
        if events:
            puts.append(outbox_item(sid, new_version, events, now))
        condition = version_condition(state.version)
        # One token per logical commit: a retry after a lost response is then answered from
        # DynamoDB's idempotency window instead of failing its own version condition. After a
        # definite cancellation (conflict, throttling) the next attempt takes a fresh token.
        token = [uuid.uuid4().hex]

        def attempt() -> None:
            actions: list[Any] = [
                StrategyModel.state_version.set(new_version),
                StrategyModel.updated_at.set(now),
                StrategyModel.committed_at.set(now),
            ]
            if cooldowns:
                actions.append(StrategyModel.cooldown_assets.add({c.asset for c in cooldowns}))
            if account is not None:
                actions.append(StrategyModel.realized_pnl.set(account.realized_pnl))
                actions += [
                    StrategyModel.equity_peak.set(account.equity_peak)
                    if account.equity_peak is not None
                    else StrategyModel.equity_peak.remove(),
                    StrategyModel.halted_at_ms.set(to_ms(account.halted_at))
                    if account.halted_at is not None
                    else StrategyModel.halted_at_ms.remove(),
                ]
            if evaluated is not None:
                # Unconditionally: this commit's state was evaluated at this bar and no later
                # one. An older bar than one recorded before means a newer bar has closed
                # since on a state that was never evaluated there: due again, rightly.
                actions.append(StrategyModel.last_bar_ms.set(evaluated.bar_ms))
                actions.append(StrategyModel.next_due_ms.set(evaluated.next_due_ms))
            try:
                with TransactWrite(
                    connection=StrategyModel._get_connection().connection,
                    client_request_token=token[0],
                ) as tx:
                    for item in puts:
                        tx.save(item)
                    for move in moves:
                        tx.update(
                            OrderModel(sid, move.order_id),
                            [
                                OrderModel.price.set(move.price),
                                OrderModel.checked_through.set(to_ms(move.checked_through)),
                                OrderModel.trailing_active.set(int(move.trailing_active)),
                            ],
                            condition=OrderModel.status == "open",
                        )
                    tx.update(
                        StrategyModel(sid),
                        actions,
                        condition=condition,
                        return_values="ALL_OLD",
                    )
            except TransactWriteError as exc:
                codes = cancellation_codes(exc)
                if "ConditionalCheckFailed" in codes:
                    raise _condition_failed(
                        sid, state.version, exc, len(puts) + len(moves)
                    ) from None
                if codes or error_code(exc) in THROTTLING_CODES:
                    token[0] = uuid.uuid4().hex
                raise

        self.retry.call("TransactWriteItems", attempt)
        return new_version

    def record_bars(
        self, evaluated: Sequence[tuple[ExecutionState, EvaluatedBar]]
    ) -> Mapping[str, EngineError]:
        """The bars of quiet evaluations, up to 100 strategies per TransactWriteItems.

        A quiet evaluation has nothing else to write, and one UpdateItem per strategy would
        make a bulk run of 1,000 quiet strategies 1,000 requests; a transaction of 100
        updates costs one request (and twice the write units, which is cheap at one item
        per strategy per bar). Each update is conditioned on the version the evaluation read
        and on no newer bar being recorded: a state another evaluation moved on was not
        evaluated at this bar and must stay due. Those updates are dropped from the batch
        (DynamoDB names them in the cancellation reasons) and the rest sent again.

        No idempotency token is needed: a retry after a lost answer finds its bar recorded
        and drops itself. Returns the strategies whose bar could not be written (storage
        failing), by id; the rest were recorded or lost to a newer evaluation.
        """
        latest: dict[str, tuple[ExecutionState, EvaluatedBar]] = {}
        for state, bar in evaluated:
            kept = latest.get(state.strategy_id)
            if kept is None or bar.bar_ms > kept[1].bar_ms:
                latest[state.strategy_id] = (state, bar)
        failures: dict[str, EngineError] = {}
        for batch in chunks(list(latest.values()), MAX_TRANSACTION_ITEMS):
            remaining = list(batch)
            while remaining:

                def attempt(marks: list[tuple[ExecutionState, EvaluatedBar]] = remaining) -> None:
                    _record_bars_once(marks)

                try:
                    self.retry.call("TransactWriteItems", attempt)
                except _BarsLost as lost:
                    log.info("%d recorded bars lost to newer evaluations", len(lost.indexes))
                    remaining = [m for i, m in enumerate(remaining) if i not in lost.indexes]
                    continue
                except EngineError as exc:
                    failures.update({state.strategy_id: exc for state, _ in remaining})
                break
        return failures


class _BarsLost(Exception):
    """Some of a batch's bar updates failed their condition: another evaluation moved on."""

    def __init__(self, indexes: set[int]) -> None:
        super().__init__(f"{len(indexes)} bar updates lost")
        self.indexes = indexes


def _head_mark(head: StateHead) -> tuple[int, int] | None:
    """What identifies the open items a head stands for: its version and commit time (the
    time tells a strategy deleted and made again, whose versions start over). None for a
    strategy never committed, whose items are always read."""
    if head.version <= 0 or head.committed_at is None:
        return None
    return head.version, head.committed_at


def version_condition(version: int) -> Any:
    """The strategy item still holds the state version an evaluation read: what makes two
    concurrent evaluations of one strategy unable to both commit."""
    condition = StrategyModel.state_version == version
    if version == 0:  # an item written before versions existed
        condition = condition | (
            StrategyModel.strategy_id.exists() & StrategyModel.state_version.does_not_exist()
        )
    return condition


def _record_bars_once(marks: Sequence[tuple[ExecutionState, EvaluatedBar]]) -> None:
    try:
        with TransactWrite(connection=StrategyModel._get_connection().connection) as tx:
            for state, bar in marks:
                condition = version_condition(state.version)
                newer = StrategyModel.last_bar_ms.does_not_exist() | (
                    StrategyModel.last_bar_ms < bar.bar_ms
                )
                tx.update(
                    StrategyModel(state.strategy_id),
                    [
                        StrategyModel.last_bar_ms.set(bar.bar_ms),
                        StrategyModel.next_due_ms.set(bar.next_due_ms),
                    ],
                    condition=condition & newer,
                )
    except TransactWriteError as exc:
        reasons = exc.cancellation_reasons
        lost = {
            i
            for i, reason in enumerate(reasons)
            if reason is not None and reason.code == "ConditionalCheckFailed"
        }
        if lost:
            raise _BarsLost(lost) from None
        raise


def _condition_failed(
    sid: str, expected: int, exc: TransactWriteError, update_index: int
) -> Exception:
    reasons = exc.cancellation_reasons
    reason = reasons[update_index] if update_index < len(reasons) else None
    raw = reason.raw_item if reason is not None else None
    if reason is not None and reason.code == "ConditionalCheckFailed" and not raw:
        return StrategyNotFound(f"strategy {sid} does not exist; its state cannot be committed")
    found = (raw or {}).get("state_version", {}).get("N", "?")
    return ConcurrentEvaluation(
        f"strategy {sid}: another evaluation committed first (state version {expected} "
        f"was read, the store holds {found}); nothing was written"
    )


# --- mapping between the engine's state and the items --------------------------------------


def _ms(value: Any) -> int | None:
    return None if value is None else to_ms(value)


def _dt(value: float | None) -> Any:
    return None if value is None else to_datetime(int(value))


def position_item(p: Position, expires_at: int | None = None) -> PositionModel:
    """The item of a position; `expires_at` (epoch s) is set on a closed one only."""
    return PositionModel(
        p.strategy_id,
        p.position_id,
        asset=p.asset,
        side=p.side if p.side != "long" else None,
        status=p.status,
        entry_time=to_ms(p.entry_time),
        entry_price=p.entry_price,
        quantity=p.quantity,
        initial_quantity=p.initial_quantity,
        entry_fee=p.entry_fee,
        realized_pnl=p.realized_pnl or None,
        targets_filled=p.targets_filled or None,
        trailing_active=1 if p.trailing_active else None,
        checked_through=_ms(p.checked_through),
        stop_loss_price=p.stop_loss_price,
        take_profit_price=p.take_profit_price,
        exit_time=_ms(p.exit_time),
        exit_price=p.exit_price,
        exit_fee=p.exit_fee,
        exit_reason=p.exit_reason,
        pnl=p.pnl,
        open_shard=open_shard(p.strategy_id) if p.status == "open" else None,
        expires_at=expires_at if p.status == "closed" else None,
    )


def position_from_item(item: PositionModel) -> Position:
    return Position.model_validate(
        {
            "position_id": item.position_id,
            "strategy_id": item.strategy_id,
            "asset": item.asset,
            "side": item.side or "long",
            "status": item.status,
            "entry_time": _dt(item.entry_time),
            "entry_price": item.entry_price,
            "quantity": item.quantity,
            "initial_quantity": item.initial_quantity,
            "entry_fee": item.entry_fee or 0.0,
            "realized_pnl": float(item.realized_pnl or 0.0),
            "targets_filled": int(item.targets_filled or 0),
            "trailing_active": bool(item.trailing_active),
            "checked_through": _dt(item.checked_through),
            "stop_loss_price": item.stop_loss_price,
            "take_profit_price": item.take_profit_price,
            "exit_time": _dt(item.exit_time),
            "exit_price": item.exit_price,
            "exit_fee": item.exit_fee,
            "exit_reason": item.exit_reason,
            "pnl": item.pnl,
        }
    )


def with_stop_moves(positions: list[Position], order_items: Sequence[OrderModel]) -> list[Position]:
    """Positions with their stop order's level: a stop that only moved was updated in place
    on the order item (price, checked_through, trailing_active), not on the position."""
    moved = {
        i.position_id: i
        for i in order_items
        if i.order_type == "stop_loss" and i.status == "open" and i.checked_through is not None
    }
    out = []
    for p in positions:
        item = moved.get(p.position_id)
        if item is None or (
            p.checked_through is not None and to_ms(p.checked_through) >= item.checked_through
        ):
            out.append(p)
            continue
        out.append(
            p.model_copy(
                update={
                    "stop_loss_price": item.price,
                    "checked_through": _dt(item.checked_through),
                    "trailing_active": p.trailing_active or bool(item.trailing_active),
                }
            )
        )
    return out


def order_item(o: Order, expires_at: int | None = None) -> OrderModel:
    """The item of an order; `expires_at` (epoch s) is set on a filled or cancelled one."""
    return OrderModel(
        o.strategy_id,
        o.order_id,
        position_id=o.position_id,
        asset=o.asset,
        side=o.side,
        order_type=o.type,
        quantity=o.quantity,
        price=o.price,
        status=o.status,
        reason=o.reason,
        created_at=to_ms(o.created_at),
        filled_at=_ms(o.filled_at),
        open_shard=open_shard(o.strategy_id) if o.status == "open" else None,
        expires_at=expires_at if o.status != "open" else None,
    )


def order_from_item(item: OrderModel) -> Order:
    return Order.model_validate(
        {
            "order_id": item.order_id,
            "position_id": item.position_id,
            "strategy_id": item.strategy_id,
            "asset": item.asset,
            "side": item.side,
            "type": item.order_type,
            "quantity": item.quantity,
            "price": item.price,
            "status": item.status,
            "reason": item.reason,
            "created_at": _dt(item.created_at),
            "filled_at": _dt(item.filled_at),
        }
    )


def cooldown_item(strategy_id: str, c: CooldownState) -> CooldownModel:
    return CooldownModel(
        strategy_id,
        c.asset,
        losses=[
            LossAttribute(  # type: ignore[no-untyped-call]
                exit_time=to_ms(loss.exit_time), position_id=loss.position_id
            )
            for loss in c.losses
        ],
        tripped_at=_ms(c.tripped_at),
        blocked_bars=c.blocked_bars,
        tier=c.tier,
    )


def cooldown_from_item(item: CooldownModel) -> CooldownState:
    return CooldownState.model_validate(
        {
            "asset": item.asset,
            "losses": [
                LossRecord(exit_time=to_datetime(int(loss.exit_time)), position_id=loss.position_id)
                for loss in (item.losses or [])
            ],
            "tripped_at": _dt(item.tripped_at),
            "blocked_bars": int(item.blocked_bars or 0),
            "tier": item.tier,
        }
    )
