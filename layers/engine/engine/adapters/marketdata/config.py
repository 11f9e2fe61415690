"""Choosing the market data provider from configuration (environment variables).

MARKET_DATA_PROVIDER   dynamodb (default) | ccxt | file
CCXT_EXCHANGE          ccxt exchange id, e.g. binance (ccxt)
CCXT_SYMBOL_MAP        JSON object, asset -> exchange symbol, e.g.
                       {"BTC/USDT": "BTC/USDT:USDT"} (ccxt, optional)
MARKET_DATA_DIR        directory of {ASSET}_{timeframe}.csv|.parquet files (file)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from engine.adapters.marketdata.ccxt_provider import CcxtProvider
from engine.adapters.marketdata.files import FileProvider
from engine.adapters.marketdata.repository import RepositoryProvider
from engine.service.ports import CandleRepository, MarketDataProvider

PROVIDERS: Final[tuple[str, ...]] = ("dynamodb", "ccxt", "file")
DEFAULT_PROVIDER: Final = "dynamodb"


def provider_from_config(
    env: Mapping[str, str], *, candle_repository: CandleRepository | None = None
) -> MarketDataProvider:
    """The provider the configuration names; ValueError naming the variable when it is wrong."""
    kind = (env.get("MARKET_DATA_PROVIDER") or DEFAULT_PROVIDER).strip().lower()
    if kind == "dynamodb":
        if candle_repository is None:
            raise ValueError(
                "MARKET_DATA_PROVIDER=dynamodb needs a candle repository (the DynamoDB candle table)"
            )
        raw = (env.get("MARKET_DATA_CONCURRENCY") or "8").strip()
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(
                f"MARKET_DATA_CONCURRENCY must be a whole number of at least 1, not {raw!r}"
            )
        return RepositoryProvider(candle_repository, concurrency=int(raw))
    if kind == "ccxt":
        exchange_id = (env.get("CCXT_EXCHANGE") or "").strip()
        if not exchange_id:
            raise ValueError("MARKET_DATA_PROVIDER=ccxt needs CCXT_EXCHANGE (e.g. binance)")
        return CcxtProvider(exchange_id, symbol_map=_symbol_map(env.get("CCXT_SYMBOL_MAP")))
    if kind == "file":
        directory = (env.get("MARKET_DATA_DIR") or "").strip()
        if not directory:
            raise ValueError("MARKET_DATA_PROVIDER=file needs MARKET_DATA_DIR")
        return FileProvider(directory)
    raise ValueError(f"MARKET_DATA_PROVIDER must be one of {', '.join(PROVIDERS)}, not {kind!r}")


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
