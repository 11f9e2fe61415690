"""Choosing the market data provider from the settings (engine.settings reads the variables).

MARKET_DATA_PROVIDER   dynamodb (default) | ccxt | file
CCXT_EXCHANGE          ccxt exchange id, e.g. binance (ccxt)
CCXT_SYMBOL_MAP        JSON object, asset -> exchange symbol, e.g.
                       {"BTC/USDT": "BTC/USDT:USDT"} (ccxt, optional)
MARKET_DATA_DIR        directory of {ASSET}_{timeframe}.csv|.parquet files (file)
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.adapters.marketdata.ccxt_provider import CcxtProvider
from engine.adapters.marketdata.files import FileProvider
from engine.adapters.marketdata.repository import RepositoryProvider
from engine.service.ports import CandleRepository, MarketDataProvider
from engine.settings import PROVIDERS, MarketDataSettings, market_data_settings

__all__ = ["PROVIDERS", "provider_from_config", "provider_from_settings"]


def provider_from_config(
    env: Mapping[str, str], *, candle_repository: CandleRepository | None = None
) -> MarketDataProvider:
    """The provider the environment names; ValueError naming the variable when it is wrong."""
    return provider_from_settings(market_data_settings(env), candle_repository=candle_repository)


def provider_from_settings(
    settings: MarketDataSettings, *, candle_repository: CandleRepository | None = None
) -> MarketDataProvider:
    if settings.provider == "dynamodb":
        if candle_repository is None:
            raise ValueError(
                "MARKET_DATA_PROVIDER=dynamodb needs a candle repository (the DynamoDB candle table)"
            )
        return RepositoryProvider(candle_repository, concurrency=settings.concurrency)
    if settings.provider == "ccxt":
        assert settings.ccxt_exchange is not None  # Settings refuses ccxt without it
        return CcxtProvider(settings.ccxt_exchange, symbol_map=dict(settings.ccxt_symbol_map))
    assert settings.directory is not None  # Settings refuses file without it
    return FileProvider(settings.directory)
