"""What a strategy item said about its execution state when its definition was read.

Loading states needs each strategy item's `state_version` (the commit condition) and
`cooldown_assets` (which cooldown items exist). The strategy repository reads both in the same
request that returns the definition, and leaves them here for the state repository, keyed by
the very Strategy object it returned. The two repositories share a `StrategySnapshots` only
when they are wired together (`dynamo_repositories`, which `bootstrap` uses); one built alone
has its own and reads the strategy items itself. A bulk evaluation (get_many, then load) therefore reads
each strategy item once, not twice.

Using a version read before the positions is safe: if another evaluation commits in between,
the version is older than the positions, and the commit fails with ConcurrentEvaluation (it
never overwrites). A snapshot is used at most once and only within `max_age_s`; without one
the state repository reads the strategy items itself.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from engine.core.strategy import Strategy


@dataclass(frozen=True)
class StateHead:
    """The state-related attributes of one strategy item."""

    version: int
    cooldown_assets: frozenset[str]
    committed_at: int | None = None  # epoch ms of the last commit
    last_bar_ms: int | None = None  # open time of the newest bar an evaluation recorded
    realized_pnl: float = 0.0
    equity_peak: float | None = None
    halted_at_ms: int | None = None


@dataclass(frozen=True)
class _Entry:
    strategy: weakref.ref[Strategy]
    head: StateHead
    read_at: float


class StrategySnapshots:
    def __init__(self, *, max_age_s: float = 300.0, max_entries: int = 20_000) -> None:
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def record(self, strategy: Strategy, head: StateHead) -> None:
        entry = _Entry(weakref.ref(strategy), head, time.monotonic())
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._prune()
            self._entries[strategy.strategy_id] = entry

    def take(self, strategy: Strategy) -> StateHead | None:
        """The head recorded with this very object, once; None when there is none or it aged."""
        with self._lock:
            entry = self._entries.get(strategy.strategy_id)
            if entry is None or entry.strategy() is not strategy:
                return None
            del self._entries[strategy.strategy_id]
        if time.monotonic() - entry.read_at > self.max_age_s:
            return None
        return entry.head

    def __len__(self) -> int:
        return len(self._entries)

    def _prune(self) -> None:
        now = time.monotonic()
        for key, entry in list(self._entries.items()):
            if entry.strategy() is None or now - entry.read_at > self.max_age_s:
                del self._entries[key]
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
