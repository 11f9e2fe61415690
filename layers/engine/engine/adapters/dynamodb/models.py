"""The DynamoDB tables as PynamoDB models: the one definition of the tables in Python.

`template.yaml` declares the same tables for AWS; `admin.table_definitions()` describes these
models in the template's own terms so a test can compare the two.

Importing this module reads no configuration: the models start on AWS in the default region
with the default table names (`engine.settings.TABLE_ENV`), and `connection.configure(settings)`
points them where the settings say (a Lambda's bootstrap, the CLI, the local stack, tests).

Times (entry, exit, fill and creation times, `updated_at`, `committed_at`, `last_bar_ms`,
`next_due_ms`, candle open times) are stored as
UTC epoch milliseconds in number attributes, the way the engine counts bars.
"""

from __future__ import annotations

import time
import zlib
from typing import Any, Final

from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, LocalSecondaryIndex
from pynamodb.models import Model

from engine.adapters.dynamodb._retry import CONNECT_TIMEOUT_S, READ_TIMEOUT_S
from engine.settings import DEFAULT_REGION, DEFAULT_TABLE_NAMES

PAY_PER_REQUEST: Final = "PAY_PER_REQUEST"
# Open positions and orders are spread over this many partitions of their sparse indexes.
OPEN_SHARDS: Final = 4
# Item-level retries are ours (engine.adapters.dynamodb._retry): botocore makes exactly one attempt, so
# the policy, its bounds and the request count live in one place.
BOTOCORE_RETRIES: Final = 0


def open_shard(strategy_id: str) -> str:
    """The sparse-index partition of a strategy's open items: stable across processes."""
    return f"open#{zlib.crc32(strategy_id.encode()) % OPEN_SHARDS}"


def all_open_shards() -> list[str]:
    return [f"open#{n}" for n in range(OPEN_SHARDS)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Meta:
    host: str | None = None
    region = DEFAULT_REGION
    billing_mode = PAY_PER_REQUEST
    max_retry_attempts = BOTOCORE_RETRIES
    connect_timeout_seconds = CONNECT_TIMEOUT_S
    read_timeout_seconds = READ_TIMEOUT_S


# --- strategies -------------------------------------------------------------------------


class StatusTimeframeIndex(GlobalSecondaryIndex["StrategyModel"]):  # type: ignore[no-untyped-call]
    """Strategies by status (and primary timeframe): what the schedule evaluates."""

    class Meta:
        index_name = "status-timeframe-index"
        projection = AllProjection()

    status = UnicodeAttribute(hash_key=True)
    timeframe = UnicodeAttribute(range_key=True)


class DueIndex(GlobalSecondaryIndex["StrategyModel"]):  # type: ignore[no-untyped-call]
    """Strategies by status and the time they are next due: a scheduled tick reads the active
    ones due by now in one query, however many are not (a quiet minute costs one request)."""

    class Meta:
        index_name = "due-index"
        projection = AllProjection()  # the tick plans its fan-out chunks from the definitions

    status = UnicodeAttribute(hash_key=True)
    next_due_ms = NumberAttribute(range_key=True)


class StrategyModel(Model):
    """One item per strategy: its definition and the version of its execution state."""

    class Meta(_Meta):
        table_name = DEFAULT_TABLE_NAMES["StrategyModel"]

    strategy_id = UnicodeAttribute(hash_key=True)
    definition = UnicodeAttribute()  # Strategy.canonical_json()
    status = UnicodeAttribute()
    timeframe = UnicodeAttribute()
    # Moves by one with every committed evaluation; commits are conditioned on it.
    state_version = NumberAttribute(default=0)
    # Assets that have a cooldown item (a string set; absent while empty).
    cooldown_assets = UnicodeSetAttribute(null=True)
    updated_at = NumberAttribute(null=True)  # epoch ms of the last put or commit
    # Epoch ms of the last commit: a bulk load reads strategies committed within the last
    # seconds through the local indexes, not the (eventually consistent) global ones.
    committed_at = NumberAttribute(null=True)
    # Open time (epoch ms) of the newest bar an evaluation was at, and when the strategy is
    # next due: the close of the bar after it. Written with the evaluation's commit (or, for
    # a quiet one, by itself); absent until the first evaluation.
    last_bar_ms = NumberAttribute(null=True)
    next_due_ms = NumberAttribute(null=True)  # 0 for a strategy never evaluated: due now
    # The account (DESIGN §11): realized PnL of every fill, the equity peak the drawdown
    # guard measures from, and the bar (epoch ms) at which that guard last halted entries.
    realized_pnl = NumberAttribute(null=True)
    equity_peak = NumberAttribute(null=True)
    halted_at_ms = NumberAttribute(null=True)

    status_timeframe_index = StatusTimeframeIndex()
    due_index = DueIndex()


# --- positions --------------------------------------------------------------------------


class OpenPositionsIndex(GlobalSecondaryIndex["PositionModel"]):  # type: ignore[no-untyped-call]
    """Sparse: only open positions carry `open_shard`."""

    class Meta:
        index_name = "open-positions-index"
        projection = AllProjection()

    open_shard = UnicodeAttribute(hash_key=True)
    strategy_id = UnicodeAttribute(range_key=True)


class StrategyOpenPositionsIndex(LocalSecondaryIndex["PositionModel"]):  # type: ignore[no-untyped-call]
    """Sparse and local: one strategy's open positions, read strongly consistent, without
    reading its closed trades (a filtered query of the table would read them all)."""

    class Meta:
        index_name = "strategy-open-positions-index"
        projection = AllProjection()

    strategy_id = UnicodeAttribute(hash_key=True)
    open_shard = UnicodeAttribute(range_key=True)


class PositionModel(Model):
    """Open and closed positions; a closed position is a trade."""

    class Meta(_Meta):
        table_name = DEFAULT_TABLE_NAMES["PositionModel"]

    strategy_id = UnicodeAttribute(hash_key=True)
    position_id = UnicodeAttribute(range_key=True)
    asset = UnicodeAttribute()
    side = UnicodeAttribute(null=True)  # long (when absent) | short
    status = UnicodeAttribute()  # open | closed
    entry_time = NumberAttribute()  # epoch ms of the entry bar
    entry_price = NumberAttribute()
    quantity = NumberAttribute()  # still held (at the last fill once closed)
    initial_quantity = NumberAttribute(null=True)  # entered, when targets filled part of it
    entry_fee = NumberAttribute(default=0)
    realized_pnl = NumberAttribute(null=True)  # PnL of its partial fills so far
    targets_filled = NumberAttribute(null=True)
    trailing_active = NumberAttribute(null=True)  # 1 once a trailing stop's activation passed
    checked_through = NumberAttribute(null=True)  # epoch ms: bar its levels last changed at
    stop_loss_price = NumberAttribute(null=True)
    take_profit_price = NumberAttribute(null=True)
    exit_time = NumberAttribute(null=True)  # epoch ms
    exit_price = NumberAttribute(null=True)
    exit_fee = NumberAttribute(null=True)
    exit_reason = UnicodeAttribute(null=True)
    pnl = NumberAttribute(null=True)
    open_shard = UnicodeAttribute(null=True)  # set only while open
    expires_at = NumberAttribute(null=True)  # epoch s for DynamoDB's TTL: closed, if configured

    open_positions_index = OpenPositionsIndex()
    strategy_open_positions_index = StrategyOpenPositionsIndex()


# --- orders -----------------------------------------------------------------------------


class OpenOrdersIndex(GlobalSecondaryIndex["OrderModel"]):  # type: ignore[no-untyped-call]
    """Sparse: only open (resting) orders carry `open_shard`."""

    class Meta:
        index_name = "open-orders-index"
        projection = AllProjection()

    open_shard = UnicodeAttribute(hash_key=True)
    strategy_id = UnicodeAttribute(range_key=True)


class StrategyOpenOrdersIndex(LocalSecondaryIndex["OrderModel"]):  # type: ignore[no-untyped-call]
    """Sparse and local: one strategy's resting orders, read strongly consistent, without
    reading its filled and cancelled ones."""

    class Meta:
        index_name = "strategy-open-orders-index"
        projection = AllProjection()

    strategy_id = UnicodeAttribute(hash_key=True)
    open_shard = UnicodeAttribute(range_key=True)


class OrderModel(Model):
    class Meta(_Meta):
        table_name = DEFAULT_TABLE_NAMES["OrderModel"]

    strategy_id = UnicodeAttribute(hash_key=True)
    order_id = UnicodeAttribute(range_key=True)
    position_id = UnicodeAttribute()
    asset = UnicodeAttribute()
    side = UnicodeAttribute()  # enter_long | exit_long | enter_short | exit_short
    order_type = UnicodeAttribute(attr_name="type")  # market | stop_loss | take_profit
    quantity = NumberAttribute()
    price = NumberAttribute(null=True)
    status = UnicodeAttribute()  # filled | open | cancelled
    reason = UnicodeAttribute()
    created_at = NumberAttribute()  # epoch ms of the bar that created the order
    filled_at = NumberAttribute(null=True)  # epoch ms
    # A trailing stop that moved while nothing else changed is updated in place: its level
    # (`price`), the bar it moved at and whether its activation passed (the position's own
    # `checked_through` and `trailing_active` are behind it then; loading takes the later).
    checked_through = NumberAttribute(null=True)
    trailing_active = NumberAttribute(null=True)
    open_shard = UnicodeAttribute(null=True)  # set only while status == open
    expires_at = NumberAttribute(null=True)  # epoch s for DynamoDB's TTL: done, if configured

    open_orders_index = OpenOrdersIndex()
    strategy_open_orders_index = StrategyOpenOrdersIndex()


# --- cooldowns --------------------------------------------------------------------------


class LossAttribute(MapAttribute[str, Any]):
    exit_time = NumberAttribute()  # epoch ms
    position_id = UnicodeAttribute()


class CooldownModel(Model):
    """Per (strategy, asset): recent losing exits and the trip that currently governs."""

    class Meta(_Meta):
        table_name = DEFAULT_TABLE_NAMES["CooldownModel"]

    strategy_id = UnicodeAttribute(hash_key=True)
    asset = UnicodeAttribute(range_key=True)
    losses = ListAttribute(of=LossAttribute, default=list)
    tripped_at = NumberAttribute(null=True)  # epoch ms
    blocked_bars = NumberAttribute(default=0)
    tier = UnicodeAttribute(null=True)  # short | long


# --- event outbox -----------------------------------------------------------------------


class OutboxModel(Model):
    """The order events of one commit (DESIGN §12), written in the commit's own transaction.

    One item per (strategy, state version): a commit's events, packed, cost the transaction
    one item whatever their number. The table's stream (new images) feeds the publisher,
    which puts the events on the EventBridge bus; the stream keeps one strategy's items in
    the order they were written. Items expire (TTL `expires_at`) after OUTBOX_TTL_DAYS, long
    after the stream (24 hours) has passed them on: they are what a republish reads.
    """

    class Meta(_Meta):
        table_name = DEFAULT_TABLE_NAMES["OutboxModel"]
        stream_view_type = "NEW_IMAGE"

    strategy_id = UnicodeAttribute(hash_key=True)
    state_version = NumberAttribute(range_key=True)  # the version the commit wrote
    events = UnicodeAttribute()  # a JSON array of engine.core.events.Event, in sequence order
    committed_at = NumberAttribute()  # epoch ms
    expires_at = NumberAttribute(null=True)  # epoch s (DynamoDB TTL)


# Days an outbox item is kept (the stream itself keeps records for 24 hours).
OUTBOX_TTL_DAYS: Final = 7


# --- candles ----------------------------------------------------------------------------


class CandleModel(Model):
    """Candles for the DynamoDB market data provider, packed CANDLE_PERIOD_BARS bars per item.

    One item per (asset, timeframe, period): the period is CANDLE_PERIOD_BARS bars of the
    timeframe, aligned like its bars (engine.adapters.dynamodb.candles.period_start), and `data` holds
    that period's bars as little-endian arrays, one after the other: open times (int64 epoch
    ms), then open, high, low, close, volume (float64), `bars` values each. At 48 bytes a bar
    an item stays under 25 KB, far below DynamoDB's 400 KB. docs/storage.md says more.
    """

    class Meta(_Meta):
        table_name = DEFAULT_TABLE_NAMES["CandleModel"]

    market = UnicodeAttribute(hash_key=True)  # market_key(asset, timeframe)
    open_time = NumberAttribute(range_key=True)  # epoch ms: where the item's period starts
    bars = NumberAttribute()  # how many bars `data` holds (1 to CANDLE_PERIOD_BARS)
    data = BinaryAttribute(legacy_encoding=False)
    # Moves by one with every write of the item; a write is conditioned on the one it read.
    revision = NumberAttribute(default=0)


# Bars per candle item; part of the partition key, so a future change of it can live beside
# today's items while a migration rewrites them.
CANDLE_PERIOD_BARS: Final = 500


def market_key(asset: str, timeframe: str) -> str:
    """The partition of (asset, timeframe)'s packed candles, e.g. `BTC/USDT#1h#p500`."""
    return f"{asset}#{timeframe}#p{CANDLE_PERIOD_BARS}"


def legacy_market_key(asset: str, timeframe: str) -> str:
    """The partition of the one-item-per-bar rows stored before candles were packed
    (attributes open, high, low, close, volume; scripts/pack_candles.py rewrites them)."""
    return f"{asset}#{timeframe}"


ALL_MODELS: Final[tuple[type[Model], ...]] = (
    StrategyModel,
    PositionModel,
    OrderModel,
    CooldownModel,
    CandleModel,
    OutboxModel,
)
