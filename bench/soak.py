"""Idempotency soak (`make soak`): the randomized delivery trials of
tests/integration/test_idempotency.py, for longer, with the five patterns mixed in every run.

Each trial delivers one evaluation of one bar in one of five ways (ten times in a row, eight
at once, a crash before or after the commit then a retry, a duplicated EventBridge tick, an SQS
redelivery) to a stored random strategy, on the real DynamoDB adapters over moto in-process,
and compares the tables with a twin strategy evaluated once per bar: no duplicate position or
order, the same positions, orders, cooldowns and state version.

    python bench/soak.py [--trials 20000] [--seconds N] [--seed S] [--steps 6]

Stops at whichever limit comes first. Prints progress about every ten seconds, then one JSON
line: trials run, per pattern, duplicates found and mismatches (both must be 0; the exit status
is 1 otherwise). Each problem is printed to stderr as it is found.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "layers" / "engine"))

# The bulk handler's Powertools logger would print a line per delivery (and its metrics
# print their EMF lines to stdout: the trials run with stdout silenced, see main).
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
warnings.simplefilter("ignore")

from tests.support.trials import (  # noqa: E402
    PATTERNS,
    SEED,
    IdempotencyTrials,
    moto_tables,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20_000, help="stop after this many")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--steps", type=int, default=6, help="bars per stored strategy")
    parser.add_argument(
        "--patterns", default=",".join(PATTERNS), help=f"comma-separated, of {PATTERNS}"
    )
    args = parser.parse_args(argv)
    patterns = [p.strip() for p in args.patterns.split(",") if p.strip()]
    unknown = set(patterns) - set(PATTERNS)
    if unknown or not patterns:
        parser.error(f"unknown patterns {sorted(unknown)}; choose from {PATTERNS}")

    started = time.monotonic()
    deadline = None if args.seconds is None else started + args.seconds
    next_report = started + 10
    out = sys.stdout
    with moto_tables(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        runner = IdempotencyTrials(args.seed)
        try:
            tally = runner.tally
            while tally.trials < args.trials:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                seen = len(tally.duplicates), len(tally.mismatches)
                runner.run(patterns, min(args.steps, args.trials - tally.trials))
                for problem in tally.duplicates[seen[0] :] + tally.mismatches[seen[1] :]:
                    print(problem, file=sys.stderr, flush=True)
                now = time.monotonic()
                if now >= next_report:
                    next_report = now + 10
                    elapsed = now - started
                    print(
                        f"[{elapsed:7.1f}s] trials {tally.trials} "
                        f"({tally.trials / elapsed:.1f}/s), bars that changed something "
                        f"{tally.changed}, 409s {tally.conflicts}, "
                        f"duplicates {len(tally.duplicates)}, mismatches {len(tally.mismatches)}",
                        file=out,
                        flush=True,
                    )
        finally:
            runner.close()
    elapsed = time.monotonic() - started
    summary = {
        **tally.as_dict(),
        "seed": args.seed,
        "patterns": patterns,
        "seconds": round(elapsed, 1),
        "trials_per_second": round(tally.trials / elapsed, 2) if elapsed else None,
    }
    print(json.dumps(summary), flush=True)
    return 1 if tally.duplicates or tally.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
