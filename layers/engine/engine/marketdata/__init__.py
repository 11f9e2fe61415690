"""Market data providers and the per-run loading the service layer uses.

Providers implement `engine.ports.MarketDataProvider`: an exchange through ccxt
(`CcxtProvider`). `load_market` fetches
each (asset, timeframe) of a run once, checks freshness and isolates failures per pair.

Importing this package stays light: ccxt and pyarrow are imported only when used.
"""

from engine.marketdata.ccxt_provider import CcxtProvider
from engine.marketdata.freshness import (
    MAX_AGE_BARS,
    StalePolicy,
    check_freshness,
    parse_stale_policy,
)
from engine.marketdata.shared import Pair, SharedMarketData, load_market

__all__ = [
    "MAX_AGE_BARS",
    "CcxtProvider",
    "Pair",
    "SharedMarketData",
    "StalePolicy",
    "check_freshness",
    "load_market",
    "parse_stale_policy",
]
