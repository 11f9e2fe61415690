"""Small builders for driving the pure engine core by hand in tests.

Import as `from tests.support.core import ...`. Candles are written as (open, high, low,
close, volume) per bar on an hourly (or daily) clock starting at T0; the helpers evaluate a strategy at "the bar that opened at index t" by passing
now = that bar's close time. Everything here is plain data so that expectations stay
hand-computable in the tests themselves.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.core.candles import Candles
from engine.core.evaluate import evaluate
from engine.core.market import MarketData
from engine.core.state import EvaluationResult, ExecutionState
from engine.core.strategy import Strategy, parse_strategy
from engine.core.timeframes import TIMEFRAME_MS

# The example strategy of DESIGN §3, as examples/ ships it (and the README uses it).
DESIGN_EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "examples/strategies/rsi_meanrev.json").read_text()
)

H = 3_600_000
D = 24 * H
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday

FLAT = (100.0, 100.0, 100.0, 100.0, 1.0)  # a bar that triggers nothing
SIGNAL = (100.0, 100.0, 100.0, 100.0, 10.0)  # volume > 5: the default entry fires, close 100

# entry on a volume spike: lets a test choose exactly which bar enters, at close(t)
ENTRY_ON_VOLUME = {"left": "volume", "op": ">", "right": 5}
# exit on a volume dip: lets a test choose exactly which bar signal-exits
EXIT_ON_LOW_VOLUME = {"left": "volume", "op": "<", "right": 0.5}


def ts(index: int, step: int = H, start: int = T0) -> int:
    """Open time (ms) of bar `index` on a contiguous clock."""
    return start + index * step


def dt(time_ms: int) -> datetime:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC)


def hour(h: int, day: int = 0) -> datetime:
    """Open time of the hourly bar at hh:00 of 2024-01-(1+day)."""
    return dt(T0 + day * D + h * H)


def strategy_doc(**overrides: Any) -> dict[str, Any]:
    """A valid strategy document; keyword arguments replace its top-level keys, except
    `execution_config`, whose keys are merged into the (empty) default."""
    base: dict[str, Any] = {
        "strategy_id": "test-strategy",
        "name": "test",
        "assets": ["BTC/USDT"],
        "timeframe": "1h",
        "indicators": {},
        "entry": ENTRY_ON_VOLUME,
        "execution_config": {},
    }
    overrides = copy.deepcopy(overrides)
    base["execution_config"].update(overrides.pop("execution_config", {}))
    base.update(overrides)
    return base


def make_strategy(**overrides: Any) -> Strategy:
    return parse_strategy(strategy_doc(**overrides))


def candles(
    bars: Sequence[Sequence[float]],
    *,
    times: Sequence[int] | None = None,
    step: int = H,
    start: int = T0,
) -> Candles:
    """Candles from (open, high, low, close, volume) tuples, on a contiguous clock by default."""
    if times is None:
        times = [start + i * step for i in range(len(bars))]
    assert len(times) == len(bars)
    return Candles.from_rows([(t, *bar) for t, bar in zip(times, bars, strict=True)])


def flat_bars(n: int, **at: Sequence[float]) -> list[tuple[float, ...]]:
    """n FLAT bars; keyword `b<index>=(o, h, l, c, v)` replaces single bars."""
    bars: list[tuple[float, ...]] = [FLAT] * n
    for key, bar in at.items():
        assert key.startswith("b"), key
        bars[int(key[1:])] = tuple(bar)
    return bars


def market(strategy: Strategy, by_asset: Mapping[str, Candles]) -> MarketData:
    return MarketData({(asset, strategy.timeframe): c for asset, c in by_asset.items()})


def now_after(c: Candles, index: int, timeframe: str = "1h") -> int:
    """The clock at which bar `index` of `c` has just closed (so it is bar t)."""
    return int(c.time[index]) + TIMEFRAME_MS[timeframe]


def empty_state(strategy: Strategy) -> ExecutionState:
    return ExecutionState(strategy_id=strategy.strategy_id)


class Driver:
    """Evaluates one strategy at chosen bars, carrying the state from one call to the next."""

    def __init__(
        self,
        strategy: Strategy,
        data: Candles | Mapping[str, Candles],
        state: ExecutionState | None = None,
    ) -> None:
        self.strategy = strategy
        by_asset = data if isinstance(data, Mapping) else {strategy.assets[0]: data}
        self.candles = dict(by_asset)
        self.market = market(strategy, by_asset)
        self.state = state or empty_state(strategy)
        self.results: list[EvaluationResult] = []

    @property
    def primary(self) -> Candles:
        return self.candles[self.strategy.assets[0]]

    def at(self, index: int) -> EvaluationResult:
        """Evaluate when bar `index` (of the first asset's candles) has just closed."""
        now = now_after(self.primary, index, self.strategy.timeframe)
        result = evaluate(self.strategy, self.state, self.market, now)
        self.state = result.state
        self.results.append(result)
        return result

    def over(self, indices: Iterable[int]) -> list[EvaluationResult]:
        return [self.at(i) for i in indices]

    @property
    def closed_trades(self) -> list[Any]:
        return [trade for r in self.results for trade in r.closed_trades]


def entries(result: EvaluationResult) -> list[Any]:
    return [o for o in result.changes.orders if o.side == "enter_long"]


def cooldown_of(result: EvaluationResult, asset: str = "BTC/USDT") -> Any:
    (status,) = [c for c in result.cooldowns if c.asset == asset]
    return status


def warning_codes(result: EvaluationResult) -> list[str]:
    return [w.code for w in result.warnings]
