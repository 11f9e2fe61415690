"""Mutation check (`make mutants`): named wrong changes to the engine, each of which the suite
must catch.

Each mutant in bench/mutants.toml names a file, an exact text in it (found exactly once), its
replacement, and the tests that must fail because of it. The tree (tracked and untracked,
not ignored, files) is copied once into a temporary directory; each mutant is applied to
that copy alone, its tests run there (`pytest -x -q -p no:cacheprovider`, one process),
and the file is restored before the next. The working tree is never written to, so an
interrupted run (Ctrl-C) leaves nothing behind but the removed temporary copy.

    python bench/mutants.py [--only SUBSTRING ...] [--list] [--no-baseline] [--timeout S]

A mutant is *killed* when its tests fail (pytest exit status 1), *survived* when they pass,
*stale* when its text is not found exactly once (the code moved on: update the entry), and
*broken* on any other status or a timeout (a collection or syntax error, or tests too slow
to finish, prove nothing about the tests).
Before the mutants, a baseline runs every named test on the unmutated copy; it must pass.
The last line printed is JSON with the totals; the exit status is 1 unless every mutant was
killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIST = Path(__file__).with_name("mutants.toml")
PYTEST = ["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str = ""


def occurrences(mutant: Mutant, tree: Path = ROOT) -> int:
    """How often the mutant's text occurs in its file under `tree`: anything but once makes
    it stale (the code moved on)."""
    path = tree / mutant.file
    return path.read_text(encoding="utf-8").count(mutant.old) if path.is_file() else 0


def load(path: Path = LIST) -> list[Mutant]:
    """The mutants of the list, checked for the fields each needs and for unique names."""
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("mutant", [])
    mutants: list[Mutant] = []
    for n, entry in enumerate(entries, 1):
        missing = {"name", "file", "old", "new", "tests"} - set(entry)
        if missing:
            raise SystemExit(f"{path.name}: mutant #{n} lacks {', '.join(sorted(missing))}")
        if entry["old"] == entry["new"]:
            raise SystemExit(f"{path.name}: mutant {entry['name']} changes nothing")
        mutants.append(
            Mutant(
                name=entry["name"],
                file=entry["file"],
                old=entry["old"],
                new=entry["new"],
                tests=tuple(entry["tests"]),
                why=entry.get("why", ""),
            )
        )
    names = [m.name for m in mutants]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise SystemExit(f"{path.name}: mutant names used twice: {', '.join(doubled)}")
    return mutants


def copy_tree(target: Path) -> None:
    """The files git would see (tracked, and untracked but not ignored), as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree but still tracked
            continue
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """pytest's exit status on `tests` in `tree` (importing the engine from that tree)."""
    env = dict(os.environ)
    # the copy's engine first: the editable install points at the working tree
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree / "layers" / "engine"), str(tree), env.get("PYTHONPATH", "")]
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    try:
        done = subprocess.run(
            [sys.executable, *PYTEST, *tests],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f}s (raise --timeout, or name fewer tests)"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


def check_engine_comes_from(tree: Path) -> None:
    """Refuse to run if the tests would import the working tree's engine, not the copy's."""
    env = dict(os.environ, PYTHONPATH=f"{tree / 'layers' / 'engine'}{os.pathsep}{tree}")
    found = subprocess.run(
        [sys.executable, "-c", "import engine; print(engine.__file__)"],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the engine would be imported from {found}, not from the copy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=[], help="run mutants whose name has this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per test run")
    args = parser.parse_args()

    mutants = load()
    if args.only:
        mutants = [m for m in mutants if any(s in m.name for s in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.name:40} {m.file}  -> {' '.join(m.tests)}")
        return 0

    started = time.perf_counter()
    outcome: dict[str, list[str]] = {"killed": [], "survived": [], "stale": [], "broken": []}
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        check_engine_comes_from(tree)
        if not args.no_baseline:
            every = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
            status, last = run_tests(tree, every, args.timeout * 4)
            print(f"baseline   ({len(every)} test selections): {last}", flush=True)
            if status != 0:
                print("the unmutated tree fails its tests: fix that first", file=sys.stderr)
                return 2
        for m in mutants:
            path = tree / m.file
            original = path.read_text(encoding="utf-8") if path.is_file() else ""
            found = occurrences(m, tree)
            if found != 1:
                outcome["stale"].append(m.name)
                print(f"STALE      {m.name}: its text occurs {found} times in {m.file}")
                continue
            began = time.perf_counter()
            try:
                path.write_text(original.replace(m.old, m.new), encoding="utf-8")
                status, last = run_tests(tree, m.tests, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            took = time.perf_counter() - began
            verdict = {1: "killed", 0: "survived"}.get(status, "broken")
            outcome[verdict].append(m.name)
            label = verdict.upper() if verdict != "killed" else verdict
            print(f"{label:10} {m.name} ({took:.1f}s): {last}", flush=True)

    totals = {key: len(names) for key, names in outcome.items()}
    report = {
        "mutants": len(mutants),
        **totals,
        "not_killed": outcome["survived"] + outcome["stale"] + outcome["broken"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))
    return 0 if totals["killed"] == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
