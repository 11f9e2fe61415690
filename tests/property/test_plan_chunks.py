"""Fan-out chunk planning: nobody lost or doubled, markets kept together, few chunks."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from engine.service.schedule import plan_chunks
from hypothesis import example, given
from hypothesis import strategies as st


@dataclass(frozen=True)
class Due:
    strategy_id: str
    timeframe: str
    assets: tuple[str, ...]


group_sizes = st.lists(st.integers(min_value=1, max_value=40), min_size=0, max_size=25)


@example(sizes=[6] * 25, chunk_size=10)  # no two fit together: 25 chunks is the fewest
@example(sizes=[6, 12, 9, 7, 3, 8], chunk_size=10)  # 45 in 5 (a greedy pass needed 6)
@given(sizes=group_sizes, chunk_size=st.integers(min_value=1, max_value=30))
def test_chunks_hold_everyone_once_keep_markets_whole_and_are_few(
    sizes: list[int], chunk_size: int
) -> None:
    due = [
        Due(f"s{g:02d}-{n:03d}", ("1h", "4h")[g % 2], (f"A{g}/USD",))
        for g, size in enumerate(sizes)
        for n in range(size)
    ]
    chunks = plan_chunks(due, chunk_size)  # type: ignore[arg-type]

    ids = [sid for chunk in chunks for sid in chunk]
    assert sorted(ids) == sorted(d.strategy_id for d in due)
    assert all(1 <= len(chunk) <= chunk_size for chunk in chunks)

    market = {d.strategy_id: (d.timeframe, d.assets[0]) for d in due}
    spread = Counter(m for chunk in chunks for m in {market[sid] for sid in chunk})
    for g, size in enumerate(sizes):
        assert spread[(("1h", "4h")[g % 2], f"A{g}/USD")] == math.ceil(size / chunk_size)

    # first fit: a piece opens a new chunk only when no earlier chunk has room for it, so no
    # two chunks are both at most half full (which bounds them by twice the fewest possible)
    assert sum(1 for chunk in chunks if 2 * len(chunk) <= chunk_size) <= 1
    assert plan_chunks(list(reversed(due)), chunk_size) == chunks  # type: ignore[arg-type]
