"""Parsed and compiled strategies kept by a warm container between invocations.

The schedule evaluates the same strategies bar after bar; parsing a stored definition
(pydantic validation against TA-Lib's metadata) and compiling it cost more than evaluating it.
A definition is parsed once per content (its canonical JSON, keyed by a BLAKE2b digest of the
text): an edited strategy has other text, so it is parsed afresh, and the stale entry ages out.
A Strategy is compiled once per object (entries hold the object, so its identity cannot be
reused while cached). Both are pure functions of immutable inputs (Strategy is a frozen
model, CompiledStrategy a frozen dataclass), so sharing their results changes no decision.

Bounded (least recently used out first) and thread-safe. A bulk call runs with the cyclic
garbage collector paused (`loading`); after compiling many new strategies the newly
cached objects are moved out of the garbage collector's sight (`gc.freeze`): they live as long
as the container anyway, and otherwise every collection during the evaluations walks the
objects of ten thousand compiled strategies again. A collection of the young generations
just before freezing keeps this call's garbage out of the frozen set; frozen objects are still
freed by reference counting when evicted. Strategies sharing a body share its parsed and
compiled parts (engine.service.strategy_parts), so there are far fewer objects to begin with.
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, Generic, TypeVar

from engine.core.evaluate import CompiledStrategy
from engine.core.strategy import Strategy
from engine.service.strategy_parts import StrategyParts

DEFAULT_MAX_ENTRIES: Final = 20_000
# Misses since the last gc.freeze() that make the next call freeze again.
FREEZE_AFTER_MISSES: Final = 1_000

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found
        value = make()  # outside the lock: a failure caches nothing
        with self._lock:
            self.misses += 1
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


class StrategyCache:
    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._parsed: _Lru[bytes, Strategy] = _Lru(max_entries)
        self._compiled: _Lru[int, tuple[Strategy, CompiledStrategy]] = _Lru(max_entries)
        self._misses_at_freeze = 0
        # distinct bodies validated and compiled once (engine.service.strategy_parts)
        self.parts = StrategyParts()

    def parse(self, definition: str) -> Strategy:
        """parse_strategy(json.loads(definition)), the same object for the same text.
        Raises what parsing raises (nothing is cached then)."""
        key = hashlib.blake2b(definition.encode(), digest_size=16).digest()
        return self._parsed.get_or_make(key, lambda: self.parts.parse(json.loads(definition)))

    def compile(self, strategy: Strategy) -> CompiledStrategy:
        """compile_strategy(strategy), once per Strategy object."""
        held, compiled = self._compiled.get_or_make(
            id(strategy), lambda: (strategy, self.parts.compile(strategy))
        )
        if held is not strategy:  # unreachable while the entry holds the object; be sure
            return self.parts.compile(strategy)
        return compiled

    @contextmanager
    def loading(self) -> Iterator[None]:
        """A bulk call, with the cyclic garbage collector paused: nearly everything it builds
        (strategies, compiled rules, indicator arrays, results) lives until the call ends,
        so collections during it would find nearly nothing and walk everything each time;
        reference counting still frees what dies, and the few cycles wait for the next
        collection after the call (or `settle`'s)."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if was_enabled:
                gc.enable()

    def settle(self) -> None:
        """After a call that filled the cache: keep the garbage collector off what it
        holds (see the module's docstring). Cheap when there was little new."""
        misses = self._parsed.misses + self._compiled.misses
        if misses - self._misses_at_freeze >= FREEZE_AFTER_MISSES:
            self._misses_at_freeze = misses
            # Garbage frozen now would never be collected: collect first, but only the young
            # generations, where everything made since the collector was paused sits; the
            # old one (the imported modules, what earlier calls cached) is not walked again.
            gc.collect(1)
            gc.freeze()

    @property
    def stats(self) -> dict[str, int]:
        return {
            "parsed": len(self._parsed),
            "parse_hits": self._parsed.hits,
            "parse_misses": self._parsed.misses,
            "compiled": len(self._compiled),
            "compile_hits": self._compiled.hits,
            "compile_misses": self._compiled.misses,
            **self.parts.stats,
        }


# The warm container's cache, shared by the strategy repository and the service.
STRATEGY_CACHE: Final = StrategyCache()
