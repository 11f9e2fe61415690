"""Strategies in DynamoDB: the definition as canonical JSON, plus status and timeframe for the
schedule's index. The state version and cooldown assets on the same item belong to the state
repository; `put` never touches them."""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Iterable, Sequence

from pynamodb.exceptions import DeleteError, DoesNotExist, UpdateError
from pynamodb.expressions.update import Action

from engine.adapters.dynamodb._batch import batch_get
from engine.adapters.dynamodb._retry import RetryPolicy, error_code
from engine.adapters.dynamodb.errors import StoredStrategyInvalid
from engine.adapters.dynamodb.models import DueIndex, StatusTimeframeIndex, StrategyModel, now_ms
from engine.adapters.dynamodb.snapshots import StateHead, StrategySnapshots
from engine.core.strategy import STRATEGY_ID_PATTERN, Strategy, StrategyInvalid
from engine.service.strategy_cache import STRATEGY_CACHE, StrategyCache

log = logging.getLogger(__name__)

_VALID_ID = re.compile(STRATEGY_ID_PATTERN)


def head_of(item: StrategyModel) -> StateHead:
    return StateHead(
        version=int(item.state_version or 0),
        cooldown_assets=frozenset(item.cooldown_assets or ()),
        committed_at=None if item.committed_at is None else int(item.committed_at),
        last_bar_ms=None if item.last_bar_ms is None else int(item.last_bar_ms),
        realized_pnl=float(item.realized_pnl or 0.0),
        equity_peak=None if item.equity_peak is None else float(item.equity_peak),
        halted_at_ms=None if item.halted_at_ms is None else int(item.halted_at_ms),
    )


class DynamoStrategyRepository:
    """engine.service.ports.StrategyRepository on the strategies table.

    Reads are strongly consistent (the scan and the index query excepted, which DynamoDB only
    serves eventually consistent). Each read leaves the item's state version and cooldown
    assets in `snapshots`, so a following StateRepository.load need not read the items again.
    """

    def __init__(
        self,
        *,
        snapshots: StrategySnapshots | None = None,
        retry: RetryPolicy | None = None,
        cache: StrategyCache | None = None,
    ) -> None:
        self.snapshots = snapshots if snapshots is not None else StrategySnapshots()
        self.retry = retry or RetryPolicy()
        # definitions parsed once per content in a warm container (engine.service.strategy_cache)
        self.cache = cache if cache is not None else STRATEGY_CACHE

    def get(self, strategy_id: str) -> Strategy | None:
        if not _VALID_ID.match(strategy_id):
            return None  # no such item can exist; DynamoDB would reject an empty key

        def request() -> StrategyModel | None:
            try:
                return StrategyModel.get(strategy_id, consistent_read=True)
            except DoesNotExist:
                return None

        item = self.retry.call("GetItem", request)
        if item is None:
            return None
        strategy = self._parse(item)
        if strategy is None:
            raise StoredStrategyInvalid(
                f"stored strategy {strategy_id!r} is no longer valid; put a corrected definition"
            )
        return strategy

    def get_many(self, strategy_ids: Sequence[str]) -> dict[str, Strategy]:
        """BatchGetItem, 100 keys per request; unknown ids are absent from the answer.

        A stored definition that no longer parses is logged and left out too.
        """
        ids = [sid for sid in dict.fromkeys(strategy_ids) if _VALID_ID.match(sid)]
        items = batch_get(StrategyModel, ids, self.retry)
        found = self._parse_all(items)
        return {sid: found[sid] for sid in ids if sid in found}

    def put(self, strategy: Strategy) -> None:
        """Create the item, or update definition, status and timeframe of an existing one.

        A new strategy is due at once (`next_due_ms` 0). So is one whose status or timeframe
        changes, and its last evaluated bar is forgotten: bars of another timeframe, or bars
        passed while paused, are not bars the schedule missed. That takes a second request;
        an edit that keeps both takes one.
        """
        item = StrategyModel(strategy.strategy_id)
        actions: builtins.list[Action] = [
            StrategyModel.definition.set(strategy.canonical_json()),
            StrategyModel.status.set(strategy.status),
            StrategyModel.timeframe.set(strategy.timeframe),
            StrategyModel.updated_at.set(now_ms()),
            # a new item starts at version 0; an existing one keeps its version
            StrategyModel.state_version.set(StrategyModel.state_version | 0),
        ]
        same_terms = (StrategyModel.status == strategy.status) & (
            StrategyModel.timeframe == strategy.timeframe
        )

        def edit() -> bool:
            try:
                item.update(actions=actions, condition=same_terms)
            except UpdateError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
            return True

        if self.retry.call("UpdateItem", edit):
            return
        reset: builtins.list[Action] = [
            *actions,
            StrategyModel.next_due_ms.set(0),
            StrategyModel.last_bar_ms.remove(),
        ]
        self.retry.call("UpdateItem", lambda: item.update(actions=reset))

    def due(self, now_ms: int) -> list[Strategy]:
        """Active strategies with `next_due_ms` <= now, through the due index: one query
        (plus pages) however many strategies are not due. Sorted by id.

        The index is eventually consistent: a strategy evaluated a moment ago may still show
        as due. Callers re-check against the item (strongly consistent) before evaluating.
        """

        def query() -> builtins.list[StrategyModel]:
            return builtins.list(
                StrategyModel.due_index.query(
                    "active", range_key_condition=DueIndex.next_due_ms <= now_ms
                )
            )

        found = self._parse_all(self.retry.call("Query", query))
        return [found[sid] for sid in sorted(found)]

    def list(self, *, status: str | None = None, timeframe: str | None = None) -> list[Strategy]:
        """All strategies, or those with `status` (and `timeframe`) through the status index.

        Sorted by strategy id.
        """
        if status is not None:
            condition = StatusTimeframeIndex.timeframe == timeframe if timeframe else None

            def query() -> builtins.list[StrategyModel]:
                return builtins.list(
                    StrategyModel.status_timeframe_index.query(
                        status, range_key_condition=condition
                    )
                )

            items = self.retry.call("Query", query)
        else:
            condition = StrategyModel.timeframe == timeframe if timeframe else None

            def scan() -> builtins.list[StrategyModel]:
                return builtins.list(StrategyModel.scan(filter_condition=condition))

            items = self.retry.call("Scan", scan)
        found = self._parse_all(items)
        return [found[sid] for sid in sorted(found)]

    def backfill_schedule(self) -> int:
        """Make every strategy stored before the due index existed (no `next_due_ms`) due at
        the next tick; returns how many. A scan: run once when upgrading a stack."""

        def scan() -> builtins.list[StrategyModel]:
            return builtins.list(
                StrategyModel.scan(
                    filter_condition=StrategyModel.next_due_ms.does_not_exist(),
                    attributes_to_get=["strategy_id"],
                )
            )

        count = 0
        for item in self.retry.call("Scan", scan):

            def mark(sid: str = item.strategy_id) -> bool:
                try:
                    StrategyModel(sid).update(
                        actions=[StrategyModel.next_due_ms.set(0)],
                        condition=StrategyModel.strategy_id.exists()
                        & StrategyModel.next_due_ms.does_not_exist(),
                    )
                except UpdateError as exc:
                    if error_code(exc) == "ConditionalCheckFailedException":
                        return False  # deleted, or put (and so scheduled) meanwhile
                    raise
                return True

            count += self.retry.call("UpdateItem", mark)
        return count

    def delete(self, strategy_id: str) -> bool:
        """Delete the strategy item; False when there was none.

        Its positions (trade history), orders and cooldown items stay.
        """
        if not _VALID_ID.match(strategy_id):
            return False

        def request() -> bool:
            try:
                StrategyModel(strategy_id).delete(condition=StrategyModel.strategy_id.exists())
            except DeleteError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
            return True

        return self.retry.call("DeleteItem", request)

    # --- helpers ------------------------------------------------------------------------

    def _parse(self, item: StrategyModel) -> Strategy | None:
        try:
            strategy = self.cache.parse(item.definition)
        except (StrategyInvalid, ValueError) as exc:
            log.error("stored strategy %r does not parse: %s", item.strategy_id, exc)
            return None
        self.snapshots.record(strategy, head_of(item))
        return strategy

    def _parse_all(self, items: Iterable[StrategyModel]) -> dict[str, Strategy]:
        found: dict[str, Strategy] = {}
        for item in items:
            strategy = self._parse(item)
            if strategy is not None:
                found[strategy.strategy_id] = strategy
        return found
