"""bench/mutants.toml stays aimed at the code: `make mutants` is not part of `make test`, so a
mutant whose text no longer occurs (the code it guarded was rewritten) would go unnoticed
until someone ran it, and the rule it guarded would be unguarded meanwhile."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_mutant_changes_text_that_occurs_exactly_once_in_its_file() -> None:
    mutants = tomllib.loads((ROOT / "bench" / "mutants.toml").read_text(encoding="utf-8"))
    off = {
        m["name"]: count
        for m in mutants["mutant"]
        if (count := (ROOT / m["file"]).read_text(encoding="utf-8").count(m["old"])) != 1
    }
    assert off == {}, f"mutants whose text occurs other than once (occurrences): {off}"
