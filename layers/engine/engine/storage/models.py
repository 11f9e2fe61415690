"""The DynamoDB tables as PynamoDB models: the one definition of the tables in Python.

`template.yaml` declares the same tables for AWS; `table_definitions()` describes these models
in the template's own terms so a test can compare the two.

Configuration is read from the environment when this module is imported:

- table names: STRATEGIES_TABLE, POSITIONS_TABLE, ORDERS_TABLE, COOLDOWNS_TABLE, CANDLES_TABLE
  (defaults `execution-strategies`, `execution-positions`, ...);
- DYNAMODB_ENDPOINT: the endpoint (moto's server locally); unset means real AWS;
- AWS_REGION: the region, default us-east-1.

`bind()` points the models somewhere else afterwards (tests, the local stack).

Times (entry, exit, fill and creation times, `updated_at`, `committed_at`, `last_bar_ms`,
`next_due_ms`, candle open times) are stored as
UTC epoch milliseconds in number attributes, the way the engine counts bars.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from typing import Any, Final

import botocore.session
import pynamodb.connection.base
from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.exceptions import TableError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, LocalSecondaryIndex
from pynamodb.models import Model

from engine.storage._retry import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, error_code

DEFAULT_REGION: Final = "us-east-1"
PAY_PER_REQUEST: Final = "PAY_PER_REQUEST"
# Open positions and orders are spread over this many partitions of their sparse indexes.
OPEN_SHARDS: Final = 4
# Item-level retries are ours (engine.storage._retry): botocore makes exactly one attempt, so
# the policy, its bounds and the request count live in one place.
BOTOCORE_RETRIES: Final = 0

# model name -> (environment variable, default table name)
TABLE_ENV: Final[dict[str, tuple[str, str]]] = {
    "StrategyModel": ("STRATEGIES_TABLE", "execution-strategies"),
    "PositionModel": ("POSITIONS_TABLE", "execution-positions"),
    "OrderModel": ("ORDERS_TABLE", "execution-orders"),
    "CooldownModel": ("COOLDOWNS_TABLE", "execution-cooldowns"),
    "CandleModel": ("CANDLES_TABLE", "execution-candles"),
}


# PynamoDB gives every connection (one per model) a botocore session of its own, and each
# session loads the endpoint and service data again: five models, five times the client set-up
# on a Lambda cold start. One session per thread serves them all (PynamoDB keeps sessions
# per thread because botocore client creation is not thread-safe; so does this).
_sessions = threading.local()


def _thread_session() -> botocore.session.Session:
    session: botocore.session.Session | None = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = botocore.session.get_session()
    return session


pynamodb.connection.base.get_session = _thread_session  # type: ignore[attr-defined]


def _table_name(model_name: str) -> str:
    env, default = TABLE_ENV[model_name]
    return os.environ.get(env) or default


def _host() -> str | None:
    return os.environ.get("DYNAMODB_ENDPOINT") or None


def _region() -> str:
    return os.environ.get("AWS_REGION") or DEFAULT_REGION


def open_shard(strategy_id: str) -> str:
    """The sparse-index partition of a strategy's open items: stable across processes."""
    return f"open#{zlib.crc32(strategy_id.encode()) % OPEN_SHARDS}"


def all_open_shards() -> list[str]:
    return [f"open#{n}" for n in range(OPEN_SHARDS)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Meta:
    host = _host()
    region = _region()
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
        table_name = _table_name("StrategyModel")

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
        table_name = _table_name("PositionModel")

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
        table_name = _table_name("OrderModel")

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
        table_name = _table_name("CooldownModel")

    strategy_id = UnicodeAttribute(hash_key=True)
    asset = UnicodeAttribute(range_key=True)
    losses = ListAttribute(of=LossAttribute, default=list)
    tripped_at = NumberAttribute(null=True)  # epoch ms
    blocked_bars = NumberAttribute(default=0)
    tier = UnicodeAttribute(null=True)  # short | long


# --- candles ----------------------------------------------------------------------------


class CandleModel(Model):
    """Candles for the DynamoDB market data provider, packed CANDLE_PERIOD_BARS bars per item.

    One item per (asset, timeframe, period): the period is CANDLE_PERIOD_BARS bars of the
    timeframe, aligned like its bars (engine.storage.candles.period_start), and `data` holds
    that period's bars as little-endian arrays, one after the other: open times (int64 epoch
    ms), then open, high, low, close, volume (float64), `bars` values each. At 48 bytes a bar
    an item stays under 25 KB, far below DynamoDB's 400 KB. docs/storage.md says more.
    """

    class Meta(_Meta):
        table_name = _table_name("CandleModel")

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
)


# --- configuration ----------------------------------------------------------------------


def reset_connections() -> None:
    """Drop the models' cached connections (and botocore clients); the next call reconnects."""
    for model in ALL_MODELS:
        model._connection = None


def bind(
    *,
    host: str | None,
    region: str | None = None,
    table_names: dict[str, str] | None = None,
) -> None:
    """Point every model at `host` (None = AWS) in `region`, optionally renaming tables.

    `table_names` maps a model name (`StrategyModel`) to its table name. Cached connections
    are dropped so the next request uses the new settings.
    """
    for model in ALL_MODELS:
        model.Meta.host = host
        model.Meta.region = region or DEFAULT_REGION
        if table_names and model.__name__ in table_names:
            model.Meta.table_name = table_names[model.__name__]
    reset_connections()


def create_tables(wait: bool = True) -> list[str]:
    """Create the tables that do not exist yet (local stack, tests); returns those created.

    Idempotent: existing tables are left alone, and a table another process is creating at
    the same moment counts as existing.
    """
    created: list[str] = []
    for model in ALL_MODELS:
        if model.exists():
            continue
        try:
            model.create_table(wait=wait, billing_mode=PAY_PER_REQUEST)
        except TableError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
        else:
            created.append(model.Meta.table_name)
    return created


def delete_tables() -> None:
    """Delete every table that exists (tests and local resets only)."""
    for model in ALL_MODELS:
        if model.exists():
            model.delete_table()


def table_definitions() -> dict[str, dict[str, Any]]:
    """Each model's table as plain data, in CloudFormation's `AWS::DynamoDB::Table` terms.

    Keyed by model name; each value holds `TableNameEnv` and `DefaultTableName` (how the
    functions find the table) and `BillingMode`, `AttributeDefinitions`, `KeySchema`,
    `GlobalSecondaryIndexes`, `LocalSecondaryIndexes` as template.yaml writes them. Lists are
    sorted so that a comparison does not depend on declaration order.
    """
    out: dict[str, dict[str, Any]] = {}
    for model in ALL_MODELS:
        schema = model._get_schema()
        attributes: dict[str, str] = {}
        for attr in schema["attribute_definitions"]:
            attributes[attr["AttributeName"]] = attr["AttributeType"]
        indexes: dict[str, list[dict[str, Any]]] = {}
        for kind in ("global_secondary_indexes", "local_secondary_indexes"):
            indexes[kind] = []
            for index in sorted(schema[kind], key=lambda i: i["index_name"]):
                for attr in index.get("attribute_definitions", []):
                    attributes[attr["AttributeName"]] = attr["AttributeType"]
                indexes[kind].append(
                    {
                        "IndexName": index["index_name"],
                        "KeySchema": _key_schema(index["key_schema"]),
                        "Projection": {"ProjectionType": index["projection"]["ProjectionType"]},
                    }
                )
        env, default = TABLE_ENV[model.__name__]
        out[model.__name__] = {
            "TableNameEnv": env,
            "DefaultTableName": default,
            "BillingMode": PAY_PER_REQUEST,
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": kind}
                for name, kind in sorted(attributes.items())
            ],
            "KeySchema": _key_schema(schema["key_schema"]),
            "GlobalSecondaryIndexes": indexes["global_secondary_indexes"],
            "LocalSecondaryIndexes": indexes["local_secondary_indexes"],
        }
    return out


def _key_schema(keys: Any) -> list[dict[str, str]]:
    # HASH first, then RANGE: the order DynamoDB requires.
    ordered = sorted(keys, key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
    return [{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in ordered]
