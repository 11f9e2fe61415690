"""Market data providers and the per-run loading the service layer uses.

Providers implement `engine.service.ports.MarketDataProvider` and are chosen by configuration
(`provider_from_config`): the DynamoDB candle table (`RepositoryProvider`), an exchange
through ccxt (`CcxtProvider`) or CSV/Parquet files (`FileProvider`). `load_market` fetches
each (asset, timeframe) of a run once, checks freshness and isolates failures per pair.

Importing this package stays light: ccxt and pyarrow are imported only when used.
"""

from engine.adapters.marketdata.ccxt_provider import CcxtProvider
from engine.adapters.marketdata.config import (
    PROVIDERS,
    provider_from_config,
    provider_from_settings,
)
from engine.adapters.marketdata.files import FileProvider, candles_file_stem
from engine.adapters.marketdata.freshness import (
    MAX_AGE_BARS,
    StalePolicy,
    check_freshness,
    parse_stale_policy,
)
from engine.adapters.marketdata.repository import RepositoryProvider
from engine.adapters.marketdata.shared import Pair, SharedMarketData, load_market

__all__ = [
    "MAX_AGE_BARS",
    "PROVIDERS",
    "CcxtProvider",
    "FileProvider",
    "Pair",
    "RepositoryProvider",
    "SharedMarketData",
    "StalePolicy",
    "candles_file_stem",
    "check_freshness",
    "load_market",
    "parse_stale_policy",
    "provider_from_config",
    "provider_from_settings",
]
