"""Market data for one run: each (asset, timeframe) fetched once, failures kept per pair."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from engine.adapters.marketdata.freshness import StalePolicy, check_freshness, parse_stale_policy
from engine.core.candles import Candles
from engine.service.deadline import has_time_for, in_this_context
from engine.service.errors import (
    OUT_OF_TIME,
    STEP_RESERVE_S,
    EngineError,
    MarketDataUnavailable,
    NotDone,
)
from engine.service.ports import MarketDataProvider

logger = logging.getLogger("engine.adapters.marketdata")

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

    def load(pair: Pair) -> tuple[Candles | None, EngineError | None, list[str]]:
        asset, timeframe = pair
        bars = bars_by_pair if isinstance(bars_by_pair, int) else bars_by_pair[pair]
        if not has_time_for(STEP_RESERVE_S):  # the request's budget (engine.service.deadline)
            error = NotDone(f"market data for {asset} {timeframe} was not fetched: {OUT_OF_TIME}")
            return None, error, []
        try:
            fetched = provider.fetch(asset, timeframe, bars, now_ms)
            return fetched, None, check_freshness(fetched, timeframe, now_ms, checked, asset=asset)
        except EngineError as exc:
            logger.warning("market data for %s %s failed: %s", asset, timeframe, exc.message)
            return None, exc, []
        except Exception as exc:  # one pair's failure must not sink the others
            logger.exception("market data provider failed for %s %s", asset, timeframe)
            unavailable = MarketDataUnavailable(
                f"market data for {asset} {timeframe} unavailable: {type(exc).__name__}: {exc}"
            )
            unavailable.__cause__ = exc
            return None, unavailable, []

    # Pairs are fetched `provider.concurrency` at a time (a draft of 50 assets waits for the
    # slowest few round trips, not their sum); providers that do not say fetch one at a time.
    workers = min(int(getattr(provider, "concurrency", 1)), len(unique))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            loaded = list(pool.map(in_this_context(load), unique))
    else:
        loaded = [load(pair) for pair in unique]
    fetches = 0
    for pair, (fetched, error, found) in zip(unique, loaded, strict=True):
        if error is not None:
            failures[pair] = error
            fetches += not isinstance(error, NotDone)
            continue
        fetches += 1
        candles[pair] = fetched  # type: ignore[assignment]
        if found:
            warnings[pair] = found
    return SharedMarketData(candles, failures, warnings, fetches)
