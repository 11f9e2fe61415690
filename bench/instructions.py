"""Instructions per evaluation, counted by valgrind: the evaluation's cost without the clock.

On a shared machine one replay's time moves by half from one minute to the next, which hides
any change under ~30 %. Instructions do not move with the load: this counts them with
`valgrind --tool=cachegrind --cache-sim=no`, as the difference between a run that repeats
the evaluations REPEATS times and one that does not (imports, reading and set-up cancel),
with hash randomization off, numpy's BLAS threads off (valgrind would count their spinning)
and the garbage collector paused during the evaluations. Repeated runs agree to within
0.1 %, so figures from different runs and different commits compare directly (same Python,
same numpy); `--root` measures the other commit in the same run all the same.

The evaluations are those of bench/replay_speed.py's SMA-cross + RSI replay over its first
BARS synthetic bars, recorded as the replay makes them and evaluated again alone, in three
kinds: `quiet` (every bar of a stretch without a position, mostly nothing to do: what a bulk
run's strategies mostly are), `entry` (replay's evaluations from a flat state: the bars that
open a position) and `exit` (from a state holding a position: the bars that close it).

Then each function's cold import (`import app` in Lambda's environment, from bytecode, as
bench/bulk.py's `handler_import_s` times it), against a peer: a bare interpreter importing
numpy and pydantic's BaseModel, which every evaluation function needs, and against its floor:
the third-party modules that `import app` loads, imported alone in the same order with the
collector paused as app.py pauses it (bench/lambda_env.py). Whole processes, interpreter
start included.

`python bench/instructions.py [--root CHECKOUT]` prints a line per figure and, last, one JSON
object; `--root` measures another checkout's engine (an A/B of two commits). Needs valgrind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BARS = 3_000
REPEATS = 5
KINDS = ("quiet", "entry", "exit")

# Run under valgrind: argv = engine root, candles CSV, kind, repeats.
_WORKLOAD = """
import gc, json, sys
sys.path.insert(0, sys.argv[1])
import engine.service.replay as replay_module
from engine.adapters.candle_files import read_csv
from engine.core.evaluate import compile_strategy
from engine.core.market import MarketData
from engine.core.state import ExecutionState
from engine.core.strategy import parse_strategy

candles = read_csv(sys.argv[2], "1h")
strategy = parse_strategy(json.loads(sys.argv[5]))
kind, repeats = sys.argv[3], int(sys.argv[4])
evaluate = replay_module.evaluate
if kind == "quiet":
    compiled = compile_strategy(strategy)
    market = MarketData({(strategy.assets[0], "1h"): candles})
    flat = ExecutionState(strategy_id=strategy.strategy_id)
    step = 3_600_000
    calls = [(compiled, flat, market, int(t) + step) for t in candles.time[100:1100]]
else:
    calls = []

    def record(*args):
        calls.append(args)
        return evaluate(*args)

    replay_module.evaluate = record
    replay_module.replay(strategy, candles, progress=False)
    replay_module.evaluate = evaluate
    holding = kind == "exit"
    calls = [c for c in calls if bool(c[1].positions) == holding]
gc.collect()
gc.disable()
for _ in range(repeats):
    for call in calls:
        evaluate(*call)
print(len(calls))
"""


def _valgrind(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str]:
    """(instructions of the whole process `python args...`, its standard output)."""
    with tempfile.NamedTemporaryFile(suffix=".out") as out:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={out.name}",
                sys.executable,
                *args,
            ],
            capture_output=True,
            text=True,
            # no BLAS threads: valgrind runs threads one at a time and would count their spinning
            env={**(env or os.environ), "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"},
            cwd=cwd,
            check=True,
        )
        # the totals line of cachegrind's own output file: "summary: N"
        summary = next(
            line for line in Path(out.name).read_text().splitlines() if line.startswith("summary:")
        )
    return int(summary.split()[1]), done.stdout


def _count(engine: Path, csv: Path, kind: str, repeats: int, strategy: str) -> tuple[int, int]:
    """(instructions of the whole process, evaluations per repeat)."""
    total, out = _valgrind(["-c", _WORKLOAD, str(engine), str(csv), kind, str(repeats), strategy])
    return total, int(out.split()[-1])


def instructions(engine: Path) -> dict[str, int]:
    sys.path.insert(0, str(ROOT / "bench"))
    from engine.adapters.candle_files import write_csv
    from replay_speed import STRATEGY, synthetic_candles

    strategy = json.dumps(STRATEGY)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        csv = Path(tmp) / "candles.csv"
        write_csv(csv, synthetic_candles(BARS))
        # once without valgrind, so that every counted run loads the same written bytecode
        subprocess.run(
            [sys.executable, "-c", _WORKLOAD, str(engine), str(csv), "entry", "0", strategy],
            capture_output=True,
            check=True,
        )
        for kind in KINDS:
            base, _ = _count(engine, csv, kind, 0, strategy)
            total, calls = _count(engine, csv, kind, REPEATS, strategy)
            each = round((total - base) / (REPEATS * calls))
            figures[f"instructions_{kind}_evaluation"] = each
            print(f"{kind:>5}: {each:>9,} instructions per evaluation ({calls} evaluations)")
    return figures


_PEER = "from pydantic import BaseModel; import numpy"


def _warm_count(args: list[str], env: dict[str, str], cwd: Path) -> int:
    """Instructions of `python args...`, run once before without valgrind to write its
    bytecode."""
    subprocess.run([sys.executable, *args], env=env, cwd=cwd, check=True)
    return _valgrind(args, env=env, cwd=cwd)[0]


def import_instructions(root: Path) -> dict[str, Any]:
    """Instructions of each function's `import app`, and of the peer, each in a fresh
    interpreter run once before (without valgrind) to write its bytecode."""
    sys.path.insert(0, str(ROOT / "bench"))
    from lambda_env import LIBRARIES, handler_environment, library_modules

    figures: dict[str, int] = {}
    libraries: dict[str, int] = {}
    peer = 0
    with tempfile.TemporaryDirectory(prefix="bench-instructions-pyc-") as pycache:
        for function in sorted((root / "functions").glob("*/app.py")):
            env = handler_environment(function.parent, root / "layers" / "engine", pycache)
            cwd = function.parent
            names = library_modules(env, cwd)
            figures[function.parent.name] = _warm_count(["-c", "import app"], env, cwd)
            libraries[function.parent.name] = _warm_count(["-c", LIBRARIES, *names], env, cwd)
            peer = peer or _warm_count(["-c", _PEER], env, cwd)
    for name, count in figures.items():
        print(
            f"import {name}: {count:>13,} instructions, {count / peer:.2f}x the peer's; "
            f"the libraries it loads, alone: {libraries[name]:,} ({libraries[name] / count:.0%})"
        )
    print(f"peer ({_PEER}): {peer:,}")
    return {
        "import_instructions": figures,
        "import_instructions_libraries": libraries,
        "import_instructions_peer": peer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to measure")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench/instructions.py needs valgrind (Debian: apt-get install valgrind)")
    root = args.root.resolve()
    figures: dict[str, Any] = dict(instructions(root / "layers" / "engine"))
    figures.update(import_instructions(root))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
