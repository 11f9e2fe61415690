"""The warm container's cache of parsed and compiled strategies: the same object for the
same content, a fresh parse for an edit, bounded, and a bulk call that compiles each
strategy once however often it is evaluated, with the same decisions as without the cache."""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest
from engine.core.strategy import StrategyInvalid
from engine.service.execution import ExecutionService
from engine.service.strategy_cache import FREEZE_AFTER_MISSES, StrategyCache

from tests.support.fakes import MemoryMarket, MemoryStates, MemoryStrategies
from tests.support.service import NOW, candles


def document(sid: str, period: int = 14) -> dict[str, Any]:
    return {
        "strategy_id": sid,
        "name": sid,
        "assets": ["BTC/USDT"],
        "timeframe": "1h",
        "indicators": {"rsi": {"fn": "RSI", "params": {"timeperiod": period}}},
        "entry": {"left": "volume", "op": ">", "right": 5},
        "execution_config": {"stop_loss": {"type": "percent", "value": 0.5}},
    }


def test_a_definition_is_parsed_once_per_content() -> None:
    cache = StrategyCache()
    text = json.dumps(document("a"))
    first = cache.parse(text)
    assert cache.parse(text) is first
    assert cache.parse(json.dumps(document("a"))) is first  # same text, another string
    edited = cache.parse(json.dumps(document("a", period=21)))
    assert edited is not first
    assert edited.indicators["rsi"].params["timeperiod"] == 21
    assert cache.stats["parse_hits"] == 2 and cache.stats["parse_misses"] == 2


def test_an_invalid_definition_is_not_cached() -> None:
    cache = StrategyCache()
    bad = json.dumps({**document("a"), "timeframe": "3h"})
    for _ in range(2):
        with pytest.raises(StrategyInvalid):
            cache.parse(bad)
    assert cache.stats["parsed"] == 0 and cache.stats["parse_misses"] == 0


def test_a_strategy_is_compiled_once_per_object_and_the_oldest_goes_first() -> None:
    cache = StrategyCache(max_entries=2)
    a, b, c = (cache.parse(json.dumps(document(sid))) for sid in "abc")
    assert cache.stats["parsed"] == 2  # a went out
    compiled_a = cache.compile(a)
    assert cache.compile(a) is compiled_a and compiled_a.strategy is a
    cache.compile(b)
    cache.compile(a)  # a used most recently
    cache.compile(c)  # b goes out
    assert cache.compile(a) is compiled_a
    assert cache.stats["compiled"] == 2
    misses = cache.stats["compile_misses"]
    cache.compile(b)
    assert cache.stats["compile_misses"] == misses + 1


class StoredAsJson(MemoryStrategies):
    """Strategies read from JSON text on every call, as the strategies table holds them."""

    def __init__(self, cache: StrategyCache, documents: list[dict[str, Any]]) -> None:
        super().__init__()
        self.cache = cache
        self.definitions = {d["strategy_id"]: json.dumps(d) for d in documents}

    def get_many(self, strategy_ids: Any) -> dict[str, Any]:
        return {i: self.cache.parse(self.definitions[i]) for i in strategy_ids}


def test_bulk_calls_compile_each_strategy_once_and_decide_the_same() -> None:
    documents = [document(f"s{n}", period=p) for n, p in enumerate([7, 14, 21, 14])]
    market = {("BTC/USDT", "1h"): candles(3, spike_at=299)}
    ids = [d["strategy_id"] for d in documents]

    def run(cache: StrategyCache, calls: int) -> list[Any]:
        svc = ExecutionService(
            StoredAsJson(cache, documents),
            MemoryStates(),
            MemoryMarket(market),
            stale_policy="reject",
            clock=lambda: NOW,
            strategy_cache=cache,
        )
        return [
            [r.model_dump() for r in svc.evaluate_bulk(ids, persist=False).results]
            for _ in range(calls)
        ]

    cache = StrategyCache()
    warm = run(cache, 3)
    assert cache.stats["compile_misses"] == 4 and cache.stats["compile_hits"] == 8
    assert cache.stats["parse_misses"] == 4
    cold = run(StrategyCache(), 1)
    assert warm == [cold[0]] * 3
    assert all(len(r["orders"]) == 2 for r in cold[0])  # entered, with a stop: not vacuous


def test_many_new_strategies_freeze_what_the_cache_holds() -> None:
    cache = StrategyCache()
    before = gc.get_freeze_count()
    try:
        cache.settle()
        assert gc.get_freeze_count() == before  # nothing new: no freeze
        for n in range(FREEZE_AFTER_MISSES // 2 + 1):
            cache.compile(cache.parse(json.dumps(document(f"f{n}"))))
        cache.settle()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()


def test_a_bulk_call_pauses_the_collector_and_gives_it_back() -> None:
    cache = StrategyCache()
    seen: list[bool] = []

    class Spying(MemoryStrategies):
        def get_many(self, strategy_ids: Any) -> dict[str, Any]:
            seen.append(gc.isenabled())
            return {}

    svc = ExecutionService(
        Spying(), MemoryStates(), MemoryMarket({}), clock=lambda: NOW, strategy_cache=cache
    )
    assert gc.isenabled()
    svc.evaluate_bulk(["x"], persist=False)
    assert seen == [False] and gc.isenabled()
    with pytest.raises(RuntimeError), cache.loading():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with cache.loading():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


class Recording:
    """Candles closed by the clock, the newest `bars`; logs what was asked."""

    def __init__(self, candles: Any) -> None:
        self.candles = candles
        self.asked: list[tuple[str, int]] = []

    def fetch(self, asset: str, timeframe: str, bars: int, now_ms: int) -> Any:
        self.asked.append((asset, bars))
        return self.candles.closed_by(timeframe, now_ms).tail(bars)


def test_market_data_is_fetched_while_states_load_and_again_only_when_they_need_more() -> None:
    from tests.support.service import H, strategy

    history = candles(4, bars=1_500, spike_at=100)
    spiky = strategy("pos", period=14)  # enters on the volume spike, a 50 % stop holds it
    strategies = MemoryStrategies([spiky])
    states = MemoryStates(strategies)
    provider = Recording({("BTC/USDT", "1h"): history}[("BTC/USDT", "1h")])
    clock = {"now": 101 * H}
    svc = ExecutionService(
        strategies, states, provider, stale_policy="reject", clock=lambda: clock["now"]
    )
    warmup = StrategyCache().compile(spiky).history_needed(None, clock["now"])
    entered = svc.evaluate_by_id("pos")
    assert len(entered.positions) == 1
    assert provider.asked == [("BTC/USDT", warmup)]  # no position yet: one fetch, early

    clock["now"] = 1_500 * H  # 1,400 bars after the entry: catch-up needs more than warm-up
    provider.asked.clear()
    later = svc.evaluate_by_id("pos", persist=False)
    state = states.load([spiky])["pos"]
    need = StrategyCache().compile(spiky).history_needed(state, clock["now"])
    assert need > warmup
    assert provider.asked == [("BTC/USDT", warmup), ("BTC/USDT", need)]
    # the same decisions as an evaluation handed the state (no early fetch at all)
    provider.asked.clear()
    direct = svc._evaluate_one(spiky, persist=False, state=state)
    assert provider.asked == [("BTC/USDT", need)]
    assert later.model_dump() == direct.model_dump()
