"""Every setting the engine reads, in one frozen object read once at start (`Settings.from_env`).

Entry points (a Lambda's bootstrap, the CLI, the local stack) build it from the environment
and hand it down; nothing below them reads the environment. A wrong value fails here, naming
the variable, rather than in the middle of a request.

Variable                     Meaning (default)
DYNAMODB_ENDPOINT            DynamoDB endpoint; unset means AWS itself (moto's server locally)
AWS_REGION                   region (us-east-1)
STRATEGIES_TABLE, POSITIONS_TABLE, ORDERS_TABLE, COOLDOWNS_TABLE, CANDLES_TABLE, OUTBOX_TABLE
                             table names (execution-strategies, execution-positions, ...)
MARKET_DATA_PROVIDER         dynamodb | ccxt | file (dynamodb)
MARKET_DATA_CONCURRENCY      parallel candle reads of the dynamodb provider (8)
CCXT_EXCHANGE, CCXT_SYMBOL_MAP  the ccxt provider's exchange id and asset -> symbol JSON map
MARKET_DATA_DIR              the file provider's directory of {ASSET}_{timeframe}.csv|.parquet
STALE_DATA_POLICY            reject | warn (reject)
COMMIT_WORKERS               concurrent commits of a bulk run (1)
HISTORY_TTL_DAYS             days closed positions and orders are kept; 0 keeps them (0)
SCHEDULE_INTERVAL_SECONDS    the schedule's tick interval, to tell a late tick (60)
BULK_CHUNK_SIZE              strategies per fan-out chunk (200)
FANOUT_QUEUE_URL             the SQS queue of fan-out chunks; unset evaluates in the tick
POWERTOOLS_SERVICE_NAME      the service name of logs, traces and metrics (execution-engine)
POWERTOOLS_METRICS_NAMESPACE the CloudWatch namespace of the metrics (ExecutionEngine)

The order events' functions (docs/events.md), each needing only its own; a missing one is an
error when that function first asks for it:
EVENT_BUS_NAME               the bus the publisher puts events on
WEBHOOK_URL, WEBHOOK_SECRET_PARAMETER  the subscriber's URL; the SSM parameter of its secret
WEBHOOK_QUEUE_URL, WEBHOOK_DEAD_LETTER_QUEUE_URL  the delivery queue and its dead letters
WEBHOOK_ATTEMPTS             deliveries before the dead-letter queue (8, the queue's maxReceiveCount)
TELEGRAM_BOT_TOKEN_PARAMETER, TELEGRAM_CHAT_ID  the optional Telegram notifier's bot and chat
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Final, Literal

DEFAULT_REGION: Final = "us-east-1"
PROVIDERS: Final[tuple[str, ...]] = ("dynamodb", "ccxt", "file")
STALE_POLICIES: Final[tuple[str, ...]] = ("reject", "warn")

# model name -> (environment variable, default table name): the one list of tables
TABLE_ENV: Final[dict[str, tuple[str, str]]] = {
    "StrategyModel": ("STRATEGIES_TABLE", "execution-strategies"),
    "PositionModel": ("POSITIONS_TABLE", "execution-positions"),
    "OrderModel": ("ORDERS_TABLE", "execution-orders"),
    "CooldownModel": ("COOLDOWNS_TABLE", "execution-cooldowns"),
    "CandleModel": ("CANDLES_TABLE", "execution-candles"),
    "OutboxModel": ("OUTBOX_TABLE", "execution-outbox"),
}
DEFAULT_TABLE_NAMES: Final[dict[str, str]] = {m: name for m, (_, name) in TABLE_ENV.items()}

# EventSettings' field -> its environment variable
EVENT_ENV: Final[dict[str, str]] = {
    "bus_name": "EVENT_BUS_NAME",
    "webhook_url": "WEBHOOK_URL",
    "webhook_secret_parameter": "WEBHOOK_SECRET_PARAMETER",
    "webhook_queue_url": "WEBHOOK_QUEUE_URL",
    "webhook_dead_letter_queue_url": "WEBHOOK_DEAD_LETTER_QUEUE_URL",
    "telegram_bot_token_parameter": "TELEGRAM_BOT_TOKEN_PARAMETER",
    "telegram_chat_id": "TELEGRAM_CHAT_ID",
}

StalePolicy = Literal["reject", "warn"]


@dataclass(frozen=True)
class MarketDataSettings:
    provider: str = "dynamodb"
    concurrency: int = 8
    ccxt_exchange: str | None = None
    ccxt_symbol_map: Mapping[str, str] = field(default_factory=dict)
    directory: str | None = None


@dataclass(frozen=True)
class EventSettings:
    """The order events' functions' settings. Each function needs only its own few, so none
    is required at start: `required` names the variable when the function asks for it."""

    bus_name: str | None = None
    webhook_url: str | None = None
    webhook_secret_parameter: str | None = None
    webhook_queue_url: str | None = None
    webhook_dead_letter_queue_url: str | None = None
    webhook_attempts: int = 8
    telegram_bot_token_parameter: str | None = None
    telegram_chat_id: str | None = None

    def required(self, name: str) -> str:
        value = getattr(self, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{EVENT_ENV[name]} is not set; this function needs it")
        return value


@dataclass(frozen=True)
class Settings:
    dynamodb_endpoint: str | None = None
    region: str = DEFAULT_REGION
    table_names: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TABLE_NAMES))
    market_data: MarketDataSettings = field(default_factory=MarketDataSettings)
    stale_policy: StalePolicy = "reject"
    commit_workers: int = 1
    history_ttl_days: int = 0
    schedule_interval_ms: int = 60_000
    bulk_chunk_size: int = 200
    fanout_queue_url: str | None = None
    service_name: str = "execution-engine"
    metrics_namespace: str = "ExecutionEngine"
    events: EventSettings = field(default_factory=EventSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment gives; ValueError naming the variable when one is wrong."""
        env = os.environ if env is None else env
        return cls(
            dynamodb_endpoint=_text(env, "DYNAMODB_ENDPOINT"),
            region=_text(env, "AWS_REGION") or DEFAULT_REGION,
            table_names={m: _text(env, var) or name for m, (var, name) in TABLE_ENV.items()},
            market_data=market_data_settings(env),
            stale_policy=parse_stale_policy(env.get("STALE_DATA_POLICY", "reject")),
            commit_workers=positive_int(env, "COMMIT_WORKERS", default=1),
            history_ttl_days=whole_number(env, "HISTORY_TTL_DAYS", default=0),
            schedule_interval_ms=positive_int(env, "SCHEDULE_INTERVAL_SECONDS", default=60) * 1000,
            bulk_chunk_size=positive_int(env, "BULK_CHUNK_SIZE", default=200),
            fanout_queue_url=_text(env, "FANOUT_QUEUE_URL"),
            service_name=_text(env, "POWERTOOLS_SERVICE_NAME") or "execution-engine",
            metrics_namespace=_text(env, "POWERTOOLS_METRICS_NAMESPACE") or "ExecutionEngine",
            events=EventSettings(
                **{name: _text(env, var) for name, var in EVENT_ENV.items()},
                webhook_attempts=positive_int(env, "WEBHOOK_ATTEMPTS", default=8),
            ),
        )


@cache
def settings() -> Settings:
    """The process's settings, read from its environment the first time they are needed."""
    return Settings.from_env()


def positive_int(env: Mapping[str, str], name: str, *, default: int) -> int:
    """A whole-number setting of at least 1; a ValueError naming the variable otherwise."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


def whole_number(env: Mapping[str, str], name: str, *, default: int) -> int:
    """A setting of 0 or more; a ValueError naming the variable otherwise."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number of 0 or more, not {raw!r}")
    return int(raw)


def _text(env: Mapping[str, str], name: str) -> str | None:
    return (env.get(name) or "").strip() or None


def parse_stale_policy(raw: str) -> StalePolicy:
    value = raw.strip().lower()
    if value == "reject":
        return "reject"
    if value == "warn":
        return "warn"
    raise ValueError(f"STALE_DATA_POLICY must be one of {', '.join(STALE_POLICIES)}, not {raw!r}")


def market_data_settings(env: Mapping[str, str]) -> MarketDataSettings:
    kind = (_text(env, "MARKET_DATA_PROVIDER") or "dynamodb").lower()
    if kind not in PROVIDERS:
        raise ValueError(
            f"MARKET_DATA_PROVIDER must be one of {', '.join(PROVIDERS)}, not {kind!r}"
        )
    exchange = _text(env, "CCXT_EXCHANGE")
    directory = _text(env, "MARKET_DATA_DIR")
    if kind == "ccxt" and exchange is None:
        raise ValueError("MARKET_DATA_PROVIDER=ccxt needs CCXT_EXCHANGE (e.g. binance)")
    if kind == "file" and directory is None:
        raise ValueError("MARKET_DATA_PROVIDER=file needs MARKET_DATA_DIR")
    return MarketDataSettings(
        provider=kind,
        concurrency=positive_int(env, "MARKET_DATA_CONCURRENCY", default=8),
        ccxt_exchange=exchange,
        ccxt_symbol_map=_symbol_map(env.get("CCXT_SYMBOL_MAP")),
        directory=directory,
    )


def _symbol_map(raw: str | None) -> dict[str, str]:
    if raw is None or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"CCXT_SYMBOL_MAP is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
    ):
        raise ValueError(
            "CCXT_SYMBOL_MAP must be a JSON object of asset to exchange symbol, "
            'e.g. {"BTC/USDT": "BTC/USDT:USDT"}'
        )
    return parsed
