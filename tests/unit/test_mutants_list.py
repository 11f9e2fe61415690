"""bench/mutants.toml stays aimed at the code: `make mutants` is not part of `make test`, so a
mutant whose text no longer occurs (the code it guarded was rewritten) would go unnoticed
until someone ran it, and the rule it guarded would be unguarded meanwhile."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_mutant_changes_text_that_occurs_exactly_once_in_its_file() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import mutants
    finally:
        sys.path.remove(str(ROOT / "bench"))
    off = {m.name: n for m in mutants.load() if (n := mutants.occurrences(m)) != 1}
    assert off == {}, f"mutants whose text occurs other than once (occurrences): {off}"
