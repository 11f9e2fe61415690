"""load_market fetches pairs `provider.concurrency` at a time (issue 10: a 50-asset draft
waited for 50 round trips one after another)."""

from __future__ import annotations

import threading
import time

from engine.adapters.marketdata import RepositoryProvider, load_market
from engine.core.candles import Candles

H = 3_600_000
NOW = 100 * H


class SlowCandles:
    """A candle repository whose every query takes `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def latest(
        self, asset: str, timeframe: str, limit: int, *, closed_by_ms: int | None = None
    ) -> Candles:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        rows = [(t * H, 1.0, 1.0, 1.0, 1.0, 1.0) for t in range(90, 99)]
        return Candles.from_rows(rows)


def _load(provider: RepositoryProvider, pairs: list[tuple[str, str]]) -> tuple[float, object]:
    start = time.monotonic()
    loaded = load_market(pairs, provider, 5, NOW, "reject")
    return time.monotonic() - start, loaded


def test_pairs_are_fetched_concurrently_and_the_result_is_the_same() -> None:
    pairs = [(f"A{n}/USDT", "1h") for n in range(16)]
    slow = SlowCandles(0.1)
    together, shared = _load(RepositoryProvider(slow, concurrency=8), pairs)
    assert slow.most == 8
    alone = SlowCandles(0.1)
    one_by_one, serial = _load(RepositoryProvider(alone, concurrency=1), pairs)
    assert alone.most == 1
    assert together < one_by_one / 3
    assert list(shared.candles) == list(serial.candles) == pairs  # type: ignore[attr-defined]
    assert shared.fetches == serial.fetches == 16  # type: ignore[attr-defined]
