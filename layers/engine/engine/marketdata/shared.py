"""Market data for one run: each (asset, timeframe) fetched once, failures kept per pair."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from engine.core.candles import Candles
from engine.errors import EngineError, MarketDataUnavailable
from engine.marketdata.freshness import StalePolicy, check_freshness, parse_stale_policy
from engine.ports import MarketDataProvider

logger = logging.getLogger("engine.marketdata")

Pair = tuple[str, str]  # (asset, timeframe)


class SharedMarketData(NamedTuple):
    """What `load_market` answers; unpacks as (candles, failures, warnings, fetches)."""

    candles: dict[Pair, Candles]
    """Candles of every pair that loaded (fresh, or stale under the warn policy)."""
    failures: dict[Pair, EngineError]
    """Pairs that did not load: MarketDataUnavailable or MarketDataStale (both 503)."""
    warnings: dict[Pair, list[str]]
    """Warning messages per pair (stale data under the warn policy); absent when none."""
    fetches: int
    """Calls made to the provider: one per unique pair."""

    @property
    def fetch_count(self) -> int:
        return self.fetches

    def get(self, asset: str, timeframe: str) -> Candles:
        """The pair's candles, or raise the error that kept it from loading."""
        pair = (asset, timeframe)
        failure = self.failures.get(pair)
        if failure is not None:
            raise failure
        try:
            return self.candles[pair]
        except KeyError:
            raise MarketDataUnavailable(
                f"market data for {asset} {timeframe} was not requested in this run"
            ) from None


def load_market(
    pairs: Iterable[Pair],
    provider: MarketDataProvider,
    bars_by_pair: Mapping[Pair, int] | int,
    now_ms: int,
    policy: StalePolicy | str,
) -> SharedMarketData:
    """Fetch each unique (asset, timeframe) once and check it is fresh.

    `bars_by_pair` is the number of closed bars each pair needs (or one number for all).
    A provider error or stale data for one pair lands in `failures` and never stops the
    others; an unexpected exception from the provider counts as MarketDataUnavailable.
    """
    checked = parse_stale_policy(policy)
    unique = list(dict.fromkeys(pairs))
    candles: dict[Pair, Candles] = {}
    failures: dict[Pair, EngineError] = {}
    warnings: dict[Pair, list[str]] = {}
    fetches = 0
    for pair in unique:
        asset, timeframe = pair
        bars = bars_by_pair if isinstance(bars_by_pair, int) else bars_by_pair[pair]
        fetches += 1
        try:
            fetched = provider.fetch(asset, timeframe, bars, now_ms)
            found = check_freshness(fetched, timeframe, now_ms, checked, asset=asset)
        except EngineError as exc:
            logger.warning("market data for %s %s failed: %s", asset, timeframe, exc.message)
            failures[pair] = exc
            continue
        except Exception as exc:  # one pair's failure must not sink the others
            logger.exception("market data provider failed for %s %s", asset, timeframe)
            error = MarketDataUnavailable(
                f"market data for {asset} {timeframe} unavailable: {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            failures[pair] = error
            continue
        candles[pair] = fetched
        if found:
            warnings[pair] = found
    return SharedMarketData(candles, failures, warnings, fetches)
