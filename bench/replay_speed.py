"""Replay speed against its peers (issue 14, goal 1). `python bench/replay_speed.py` prints its
figures, the last line one JSON object; `make bench` (bench/bulk.py) includes them.

- `replay_vs_backtesting_py`: `python -m engine replay` of an SMA-cross + RSI strategy over
  200,000 deterministic synthetic 1h candles (a CSV file), whole process (start-up, reading,
  replay, trades/orders/stats/equity/report files), against backtesting.py 0.6.6 running the
  same strategy on the same file in .venv-yardstick, whole process too
  (bench/yardstick_sma_rsi.py): backtesting.py's seconds / the engine's (> 1 = faster).
  Medians of RUNS, the four processes below alternating. Both must close the same trades
  (same entry and exit bars and prices), else the figure is refused.
- `replay_vs_backtesting_py_same_files`: the same, with backtesting.py also writing what the
  engine's replay writes (DESIGN §10) the way its users get it: every trade, the stats, the
  equity curve and its HTML chart (`Backtest.plot`).
- `replay_vs_backtesting_py_ceiling`: backtesting.py's seconds (trades only, as in the first
  key) / the engine's whole process for the same strategy with an entry that never holds
  (same indicators, reading, pre-pass and files; no bar to evaluate, no trade): the ratio the
  first key would reach if every evaluation cost nothing.
- `replay_vs_talib_floor`: in-process, `engine.service.replay.replay` (indicators, compile and every
  bar) / the time TA-Lib takes to compute the strategy's three indicators: how far above the
  floor of computing anything at all replay is. Best of several runs each, in CPU seconds of
  this process (a wall clock on a shared machine would compare a 1 ms run that fits
  between other work with a second-long one that cannot).
- `replay_records_vs_talib_floor`: the CPU seconds of building only the records that replay
  reports (orders, closed trades, positions, each with its id; nothing decided) / the same
  TA-Lib floor: the least `replay_vs_talib_floor` can be while replay reports these records
  as the engine's models.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.adapters.candle_files import read_csv, write_csv  # noqa: E402
from engine.core.candles import Candles  # noqa: E402
from engine.core.strategy import parse_strategy  # noqa: E402
from engine.service.replay import ReplayResult  # noqa: E402

H = 3_600_000
BARS = 200_000
RUNS = 3
YARDSTICK = Path(__file__).resolve().parent / "yardstick_sma_rsi.py"

# The strategy of bench/yardstick_sma_rsi.py, in the engine's terms.
STRATEGY: dict[str, Any] = {
    "strategy_id": "sma-cross-rsi",
    "name": "SMA cross + RSI",
    "assets": ["BTC/USDT"],
    "timeframe": "1h",
    "indicators": {
        "fast": {"fn": "SMA", "params": {"timeperiod": 10}},
        "slow": {"fn": "SMA", "params": {"timeperiod": 30}},
        "rsi": {"fn": "RSI", "params": {"timeperiod": 14}},
    },
    "entry": {
        "all": [
            {"left": "fast", "op": "crosses_above", "right": "slow"},
            {"left": "rsi", "op": "<", "right": 70},
        ]
    },
    "exit": {"left": "fast", "op": "crosses_below", "right": "slow"},
    "execution_config": {
        "position_sizing": {"type": "fixed_quantity", "value": 1},
        "max_open_positions": 1,
        "stop_loss": {"type": "percent", "value": 0.02},
        "take_profit": {"type": "percent", "value": 0.04},
        "fee_rate": 0.001,
    },
}


# STRATEGY with an entry that never holds (RSI is never below 0): the pre-pass finds no bar to
# evaluate, and everything else a replay does is left.
NEVER_ENTERS: dict[str, Any] = {
    **STRATEGY,
    "strategy_id": "sma-cross-rsi-never",
    "entry": {"all": [*STRATEGY["entry"]["all"], {"left": "rsi", "op": "<", "right": 0}]},
}


def synthetic_candles(n: int = BARS, seed: int = 14) -> Candles:
    """A random walk around 100 (small steps, so 200,000 bars stay in a sane range), opens
    that gap a little from the previous close."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.r_[100.0, close[:-1]] * (1 + rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.003, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.003, n)))
    start = 1_577_836_800_000  # 2020-01-01
    return Candles(
        time=start + np.arange(n, dtype=np.int64) * H,
        open=np.round(open_, 4),
        high=np.round(high, 4),
        low=np.round(low, 4),
        close=np.round(close, 4),
        volume=np.round(rng.uniform(1, 100, n), 3),
    )


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of a whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])}... failed: {done.stderr.strip()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def _same_trades(engine: list[dict[str, Any]], yardstick: list[dict[str, Any]]) -> None:
    from datetime import datetime

    from engine.core.timeframes import to_ms
    from pydantic import TypeAdapter

    moment = TypeAdapter(datetime)
    ours = [
        (
            to_ms(moment.validate_python(t["entry_time"])),
            to_ms(moment.validate_python(t["exit_time"])),
            round(t["entry_price"], 6),
            round(t["exit_price"], 6),
        )
        for t in engine
    ]
    theirs = [
        (t["entry_ms"], t["exit_ms"], round(t["entry_price"], 6), round(t["exit_price"], 6))
        for t in yardstick
    ]
    if ours != theirs:
        differ = next(
            (k for k, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
            min(len(ours), len(theirs)),
        )
        raise RuntimeError(
            f"not the same trades: engine {len(ours)}, backtesting.py {len(theirs)}; first "
            f"difference at trade {differ}: engine {ours[differ : differ + 1]}, "
            f"backtesting.py {theirs[differ : differ + 1]}"
        )


def talib_floor(candles: Candles, repeats: int = 20) -> float:
    """Best CPU seconds TA-Lib takes for the strategy's indicators (SMA 10, SMA 30, RSI 14)."""
    import talib

    close = candles.close
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        talib.SMA(close, timeperiod=10)
        talib.SMA(close, timeperiod=30)
        talib.RSI(close, timeperiod=14)
        best = min(best, time.process_time() - started)
    return best


def in_process_replay(candles: Candles, repeats: int = 3) -> tuple[float, ReplayResult]:
    from engine.service.replay import replay

    strategy = parse_strategy(STRATEGY)
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        result = replay(strategy, candles, progress=False)
        best = min(best, time.process_time() - started)
    return best, result


def records_floor(result: ReplayResult, repeats: int = 5) -> float:
    """Best CPU seconds to build only the records a replay must report, with nothing decided:
    each order, closed trade and position in its final version, named by its deterministic
    id, as `assemble` builds them (the engine's cheapest way to make a model). A replay builds
    more (each order open then filled or cancelled, a state and a result per evaluation), so
    this is a floor under any replay that reports these records, however it decides."""
    from engine.core import ids
    from engine.core.state import ClosedTrade, Order, Position, assemble
    from engine.core.timeframes import to_ms

    orders = [o.__dict__ for o in result.orders]
    trades = [t.__dict__ for t in result.trades]
    positions = [p.__dict__ for p in result.positions.values()]
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for fields in positions:
            ids.position_id(result.strategy_id, fields["asset"], to_ms(fields["entry_time"]))
            assemble(Position, **fields)
        for fields in orders:
            # an id of the same form: a resting order's kind is its type, not its side, which
            # changes the text hashed and not its cost
            ids.order_id(fields["position_id"], fields["side"], to_ms(fields["created_at"]))
            assemble(Order, **fields)
        for fields in trades:
            assemble(ClosedTrade, **fields)
        best = min(best, time.process_time() - started)
    return best


def replay_speed(runs: int = RUNS) -> dict[str, float]:
    from tests.yardstick.venv import yardstick_python

    yardstick = yardstick_python()
    candles = synthetic_candles()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        work = Path(tmp)
        csv_path = work / "BTC_USDT_1h.csv"
        write_csv(csv_path, candles)
        (work / "strategy.json").write_text(json.dumps(STRATEGY))
        (work / "never.json").write_text(json.dumps(NEVER_ENTERS))

        def engine_replay(strategy: str, out: str) -> list[str]:
            return [
                *(sys.executable, "-m", "engine", "replay", "--no-progress"),
                *("--strategy", str(work / strategy), "--candles", str(csv_path)),
                *("--out", str(work / out)),
            ]

        backtest = [str(yardstick), str(YARDSTICK), str(csv_path)]
        commands = {
            "engine": engine_replay("strategy.json", "out"),
            "yardstick": [*backtest, str(work / "bt.json")],
            "engine_never": engine_replay("never.json", "never"),
            "yardstick_files": [*backtest, str(work / "bt_files.json"), str(work / "bt_out")],
        }
        # Both run from bytecode, as installed packages do: an untimed first run of each
        # writes it into a cache of this bench's own, even where the environment forbids
        # writing .pyc files (PYTHONDONTWRITEBYTECODE; the engine is an editable install,
        # which pip does not compile).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        for command in commands.values():
            _timed(command, ROOT, env)
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, command in commands.items():
                timings[name].append(_timed(command, ROOT, env))
        engine_trades = json.loads((work / "out" / "trades.json").read_text())
        _same_trades(engine_trades, json.loads((work / "bt.json").read_text()))
        _same_trades(engine_trades, json.loads((work / "bt_files.json").read_text()))
        if json.loads((work / "never" / "trades.json").read_text()):
            raise RuntimeError("the strategy that never enters closed trades")
        read = read_csv(csv_path, "1h")
    floor = talib_floor(read)
    replay_s, result = in_process_replay(read)
    trades = len(result.trades)
    records_s = records_floor(result)
    wall = {name: statistics.median(w for w, _ in runs_) for name, runs_ in timings.items()}
    cpu = {name: statistics.median(c for _, c in runs_) for name, runs_ in timings.items()}
    engine_med, yardstick_med = wall["engine"], wall["yardstick"]
    engine_cpu, yardstick_cpu = cpu["engine"], cpu["yardstick"]
    figures: dict[str, float] = {
        "replay_200k_process_s": round(engine_med, 3),
        "backtesting_py_200k_process_s": round(yardstick_med, 3),
        "replay_vs_backtesting_py": round(yardstick_med / engine_med, 2),
        "replay_vs_backtesting_py_cpu": round(yardstick_cpu / engine_cpu, 2),
        "backtesting_py_200k_files_process_s": round(wall["yardstick_files"], 3),
        "replay_vs_backtesting_py_same_files": round(wall["yardstick_files"] / engine_med, 2),
        "replay_200k_no_trades_process_s": round(wall["engine_never"], 3),
        "replay_vs_backtesting_py_ceiling": round(yardstick_med / wall["engine_never"], 2),
        "replay_200k_trades": trades,
        "replay_200k_in_process_s": round(replay_s, 4),
        "talib_floor_200k_s": round(floor, 5),
        "replay_vs_talib_floor": round(replay_s / floor, 1),
        "replay_200k_records_s": round(records_s, 4),
        "replay_records_vs_talib_floor": round(records_s / floor, 1),
    }
    print(
        f"replay of {BARS:,} bars, SMA cross + RSI, {trades:,} trades (backtesting.py: the "
        f"same): engine {engine_med:.2f}s vs backtesting.py {yardstick_med:.2f}s whole process "
        f"-> {figures['replay_vs_backtesting_py']}x (CPU {engine_cpu:.2f}s vs "
        f"{yardstick_cpu:.2f}s -> {figures['replay_vs_backtesting_py_cpu']}x); in-process {replay_s * 1000:.0f} ms vs "
        f"TA-Lib's indicators {floor * 1000:.2f} ms -> {figures['replay_vs_talib_floor']}x the floor"
    )
    print(
        f"backtesting.py writing the same files (trades, stats, equity, HTML chart) "
        f"{wall['yardstick_files']:.2f}s -> {figures['replay_vs_backtesting_py_same_files']}x; "
        f"the engine with nothing to evaluate (an entry that never holds) "
        f"{wall['engine_never']:.2f}s -> at most "
        f"{figures['replay_vs_backtesting_py_ceiling']}x however fast evaluation gets"
    )
    print(
        f"building only the records replay reports ({len(result.orders):,} orders, {trades:,} "
        f"trades, {len(result.positions):,} positions, with their ids): {records_s * 1000:.0f} ms "
        f"-> {figures['replay_records_vs_talib_floor']}x the TA-Lib floor, before deciding anything"
    )
    return figures


if __name__ == "__main__":
    print(json.dumps(replay_speed()))
