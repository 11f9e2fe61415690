"""A snapshot of market data for one evaluation run, shared by every strategy in it.

Candles are keyed by (asset, timeframe); indicator values are computed once per
(asset, timeframe, function, parameters) and reused by every strategy that asks for them.

Informative-timeframe candles follow one rule: they are resampled from the strategy's own
primary candles, never taken from another strategy's fetch of that timeframe (whose length
is that strategy's business), and the first bucket is dropped unless the candles start at
its open (a window rarely starts on a bucket boundary, and a partial bucket is a wrong bar).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.core.candles import CANDLE_FIELDS, Candles, FloatArray, align_to
from engine.core.indicators import IndicatorCache
from engine.core.strategy import IndicatorDef, Strategy

MarketKey = tuple[str, str]  # (asset, timeframe)


@dataclass(slots=True)
class MarketData:
    candles: Mapping[MarketKey, Candles]
    cache: IndicatorCache = field(default_factory=IndicatorCache)
    _resampled: dict[tuple[str, str, str], Candles] = field(default_factory=dict)
    _aligned: dict[tuple[object, ...], FloatArray] = field(default_factory=dict)
    _frames: dict[tuple[object, ...], dict[str, FloatArray]] = field(default_factory=dict)
    # (asset, timeframe, id of an indicators mapping) -> (that mapping, its frame): the lookup
    # of every evaluation, by identity (a replay's one strategy, a template's strategies share
    # one mapping); holding the mapping keeps its id from being reused while it is cached
    _by_identity: dict[tuple[str, str, int], tuple[object, dict[str, FloatArray]]] = field(
        default_factory=dict
    )

    def get(self, asset: str, timeframe: str) -> Candles | None:
        return self.candles.get((asset, timeframe))

    def frame(self, strategy: Strategy, asset: str) -> dict[str, FloatArray]:
        """Every series the strategy's conditions may name, aligned to its primary candles.

        Strategies with the same indicator definitions share one (read-only) frame.
        """
        indicators = strategy.indicators
        seen = (asset, strategy.timeframe, id(indicators))
        known = self._by_identity.get(seen)
        if known is not None and known[0] is indicators:
            return known[1]
        key = (asset, strategy.timeframe, strategy.indicators_key)
        found = self._frames.get(key)
        if found is None:
            found = self._build_frame(strategy, asset)
            self._frames[key] = found
        self._by_identity[seen] = (indicators, found)
        return found

    def _build_frame(self, strategy: Strategy, asset: str) -> dict[str, FloatArray]:
        primary = self.candles[(asset, strategy.timeframe)]
        frame: dict[str, FloatArray] = {f: primary.field(f) for f in CANDLE_FIELDS}
        for name, ind in strategy.indicators.items():
            outputs = self._series(asset, strategy.timeframe, primary, ind)
            if len(outputs) == 1:
                frame[name] = next(iter(outputs.values()))
            for out, values in outputs.items():
                frame[f"{name}.{out}"] = values
        return frame

    def _series(
        self, asset: str, timeframe: str, primary: Candles, ind: IndicatorDef
    ) -> dict[str, FloatArray]:
        source_tf = ind.timeframe or timeframe
        if source_tf == timeframe:
            key = (asset, timeframe, ind.fn, ind.params_key)
            return self.cache.get_or_compute(key, ind.fn, ind.params, primary)
        source = self._informative_candles(asset, timeframe, primary, source_tf)
        # resampled from this primary timeframe's candles: another primary makes other bars
        ikey = (asset, timeframe, source_tf, ind.fn, ind.params_key)
        values = self.cache.get_or_compute(ikey, ind.fn, ind.params, source)
        aligned: dict[str, FloatArray] = {}
        for out, series in values.items():
            akey = (*ikey, out)
            found = self._aligned.get(akey)
            if found is None:
                found = align_to(series, source.time, source_tf, primary.time, timeframe)
                self._aligned[akey] = found
            aligned[out] = found
        return aligned

    def _informative_candles(
        self, asset: str, timeframe: str, primary: Candles, source_tf: str
    ) -> Candles:
        rkey = (asset, timeframe, source_tf)
        found = self._resampled.get(rkey)
        if found is None:
            found = primary.resample(timeframe, source_tf, whole_first=True)
            self._resampled[rkey] = found
        return found
