"""Bulk evaluation benchmark (`make bench`). Prints its figures, the last line one JSON object.

- engine-only strategies/s on one core for 1,000 and 10,000 strategies over 100 markets,
  sharing market data and indicators (the engine's way) vs. the naive way (each strategy
  fetches its candles and computes its indicators alone), and the ratio;
- seconds of a bulk run of 500 strategies that all act on the bar with a simulated 20 ms per
  commit, committing one at a time and with 8 workers (as deployed);
- DynamoDB requests of a bulk run of 1,000 stored strategies at a new bar (which records each
  one's bar for the schedule), of a quiet rerun at the same bar, counted at the client (moto
  in-process; market data from memory so that only storage traffic is counted), and of a
  scheduled minute tick that finds none of them due;
- peak memory of the 10,000 run (tracemalloc);
- what DESIGN §11's features cost (shorts, trailing stops, scale-outs, sizing from the
  account, guards, all in every strategy): one bar for 10,000, 48 bars in turn with the state
  carried for 1,000, and the whole bulk call, each against the plain mix (`breadth_cost`);
- a replay of 100,000 hourly bars, and what its report (stats, stats.json, equity.csv,
  report.html) adds to it, as a ratio (`replay_100k_report_overhead_ratio`);
- strategies/s of one whole bulk call over 10,000 strategies stored as JSON: parsing,
  compiling, evaluating and answering all count (ExecutionService, dry run, market data from
  memory); and the peak RSS of a fresh process making one such call over 50,000;
- one evaluation by id against moto's DynamoDB server over HTTP, as a ratio to one GetItem
  round trip in the same run (a strategy needing 1,100+ bars of warm-up from the packed
  candle table), and those 1,122 candles read packed vs. as rows of one item per bar;
- replay speed against backtesting.py 0.6.6 and TA-Lib's floor (bench/replay_speed.py, which
  runs alone too: `python bench/replay_speed.py`);
- each handler module's import time, and its cold start up to the first network call, in the
  environment Lambda gives it (bench/lambda_env.py).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.adapters.candle_files import read_csv, write_csv  # noqa: E402
from engine.core.candles import Candles  # noqa: E402
from engine.core.evaluate import compile_strategy, evaluate  # noqa: E402
from engine.core.market import MarketData  # noqa: E402
from engine.core.state import EvaluationResult, ExecutionState  # noqa: E402
from engine.core.strategy import Strategy, parse_strategy  # noqa: E402
from lambda_env import LIBRARIES, handler_environment, library_modules, python_output  # noqa: E402  (bench/, first on sys.path)

H = 3_600_000
BARS = 700
PAIRS = 100
NOW = BARS * H
WALK_BARS = 48


def make_candles(seed: int) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, BARS)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 0.003, BARS)) * close
    return Candles(
        time=np.arange(BARS, dtype=np.int64) * H,
        open=open_,
        high=np.maximum(open_, close) + spread,
        low=np.minimum(open_, close) - spread,
        close=close,
        volume=rng.uniform(1, 100, BARS),
    )


def markets() -> dict[tuple[str, str], Candles]:
    return {(f"ASSET{i:03d}/USDT", "1h"): make_candles(i) for i in range(PAIRS)}


def make_strategies(n: int, seed: int = 1, breadth: bool = False) -> list[Strategy]:
    """Realistic two-to-three indicator strategies drawn from common parameter choices;
    with `breadth`, each also uses DESIGN §11's features (see `add_breadth`)."""
    return [parse_strategy(d) for d in strategy_documents(n, seed, breadth)]


def strategy_documents(n: int, seed: int = 1, breadth: bool = False) -> list[dict[str, Any]]:
    """make_strategies' strategies as the JSON documents a client sends."""
    return list(iter_strategy_documents(n, seed, breadth))


def iter_strategy_documents(
    n: int, seed: int = 1, breadth: bool = False
) -> Iterator[dict[str, Any]]:
    """strategy_documents, one at a time. The plain mix draws the same strategies whether or
    not `breadth` is set: its extra draws come from a generator of its own."""
    rnd = random.Random(seed)
    extra = random.Random(seed + 1_000_003)
    for i in range(n):
        asset = f"ASSET{rnd.randrange(PAIRS):03d}/USDT"
        rsi_period = rnd.choice([7, 14, 21])
        sma_period = rnd.choice([20, 50, 100, 200])
        indicators: dict[str, Any] = {
            "rsi": {"fn": "RSI", "params": {"timeperiod": rsi_period}},
            "sma": {"fn": "SMA", "params": {"timeperiod": sma_period}},
        }
        config: dict[str, Any] = {
            "position_sizing": {"type": "fixed_notional", "value": 1000},
            "stop_loss": {"type": "percent", "value": rnd.choice([0.01, 0.02, 0.03])},
            "take_profit": {"type": "risk_reward", "ratio": rnd.choice([1.5, 2.0, 3.0])},
            "fee_rate": 0.001,
            "cooldown_config": {"1h": {"short_loss_limit": 2, "short_window_bars": 12}},
        }
        if rnd.random() < 0.5:
            indicators["atr"] = {"fn": "ATR", "params": {"timeperiod": 14}}
            config["stop_loss"] = {"type": "atr", "indicator": "atr", "multiplier": 2}
        document = {
            "strategy_id": f"bench-{i:05d}",
            "name": f"bench {i}",
            "assets": [asset],
            "timeframe": "1h",
            "indicators": indicators,
            "entry": {
                "all": [
                    {"left": "rsi", "op": "<", "right": rnd.choice([25, 30, 35])},
                    {"left": "close", "op": ">", "right": "sma"},
                ]
            },
            "exit": {"left": "rsi", "op": "crosses_above", "right": 70},
            "execution_config": config,
        }
        if breadth:
            add_breadth(document, extra)
        yield document


def add_breadth(document: dict[str, Any], rnd: random.Random) -> None:
    """DESIGN §11 on a plain bench strategy, every feature at once (issue 12 asks what they
    cost): the mirrored short side, a trailing stop (percent with an activation threshold, or
    ATR), two scale-out targets with break-even after the first, sizing from the account
    (risk or equity percent of `capital` plus realized PnL), the total-positions cap and the
    drawdown halt."""
    document["indicators"].setdefault("atr", {"fn": "ATR", "params": {"timeperiod": 14}})
    threshold = document["entry"]["all"][0]["right"]
    document["short_entry"] = {
        "all": [
            {"left": "rsi", "op": ">", "right": 100 - threshold},
            {"left": "close", "op": "<", "right": "sma"},
        ]
    }
    document["short_exit"] = {"left": "rsi", "op": "crosses_below", "right": 30}
    config = document["execution_config"]
    config["capital"] = 10_000
    config["position_sizing"] = rnd.choice(
        [{"type": "risk_percent", "value": 0.01}, {"type": "equity_percent", "value": 0.1}]
    )
    config["stop_loss"] = rnd.choice(
        [
            {"type": "trailing_percent", "value": rnd.choice([0.01, 0.02]), "activation": 0.005},
            {"type": "trailing_atr", "indicator": "atr", "multiplier": rnd.choice([2, 3])},
        ]
    )
    config["take_profit"] = [
        {"type": "risk_reward", "ratio": 1, "fraction": 0.5},
        {"type": "risk_reward", "ratio": rnd.choice([2.0, 3.0]), "fraction": 0.5},
    ]
    config["break_even_after"] = 1
    config["max_open_positions_total"] = 1
    config["max_drawdown"] = {"value": rnd.choice([0.01, 0.02]), "halt_bars": 24}


def shared_run(
    strategies: list[Strategy], candles: dict[tuple[str, str], Candles]
) -> tuple[float, int]:
    """The engine's way: one market snapshot, one indicator cache, for every strategy."""
    compiled = [compile_strategy(s) for s in strategies]
    start = time.perf_counter()
    market = MarketData(dict(candles))  # one fetch per pair, shared
    for c in compiled:
        evaluate(c, ExecutionState(strategy_id=c.strategy.strategy_id), market, NOW)
    return time.perf_counter() - start, market.cache.computations


def walk_run(
    strategies: list[Strategy], candles: dict[tuple[str, str], Candles], bars: int = WALK_BARS
) -> tuple[float, dict[str, int]]:
    """Evaluations/s of each strategy at each of the last `bars` bars in turn, its state
    carried from one to the next (as the schedule does): unlike one bar from an empty state,
    positions open here, trailing stops move, targets fill, guards trip. The market data and
    indicators are shared (one snapshot per bar, as a bulk run at that bar has). Also counts
    what happened, so that a reader sees the features were exercised."""
    compiled = [compile_strategy(s) for s in strategies]
    states = {
        c.strategy.strategy_id: ExecutionState(strategy_id=c.strategy.strategy_id) for c in compiled
    }
    seen = {
        "open_position_evaluations": 0,
        "stop_moves": 0,
        "closed_trades": 0,
        "halted_evaluations": 0,
    }
    markets = [MarketData(dict(candles)) for _ in range(bars)]  # indicators cached per bar
    start = time.perf_counter()
    for k, market in enumerate(markets):
        now = NOW - (bars - 1 - k) * H
        for c in compiled:
            sid = c.strategy.strategy_id
            result = evaluate(c, states[sid], market, now)
            states[sid] = result.state
            seen["open_position_evaluations"] += bool(result.positions)
            seen["stop_moves"] += len(result.changes.stop_moves)
            seen["closed_trades"] += len(result.closed_trades)
            seen["halted_evaluations"] += any(
                g.guard == "max_drawdown" and g.active for g in result.guards
            )
    return len(compiled) * bars / (time.perf_counter() - start), seen


def naive_run(strategies: list[Strategy], files: dict[tuple[str, str], Path]) -> float:
    """Each strategy fetches its own candles and computes its own indicators.

    The fetch is the cheapest real one there is, parsing a local CSV file; from an exchange
    or DynamoDB each fetch would cost a network round trip on top.
    """
    compiled = [compile_strategy(s) for s in strategies]
    start = time.perf_counter()
    for c in compiled:
        own = {(asset, "1h"): read_csv(files[(asset, "1h")]) for asset in c.strategy.assets}
        evaluate(c, ExecutionState(strategy_id=c.strategy.strategy_id), MarketData(own), NOW)
    return time.perf_counter() - start


def shared_fetch_run(strategies: list[Strategy], files: dict[tuple[str, str], Path]) -> float:
    """The engine's way with the same fetches: each market read once, then shared."""
    compiled = [compile_strategy(s) for s in strategies]
    start = time.perf_counter()
    pairs = {(a, "1h") for c in compiled for a in c.strategy.assets}
    market = MarketData({p: read_csv(files[p]) for p in pairs})
    for c in compiled:
        evaluate(c, ExecutionState(strategy_id=c.strategy.strategy_id), market, NOW)
    return time.perf_counter() - start


def dynamodb_requests_quiet(n: int = 1000, breadth: bool = False) -> tuple[int, int, int] | None:
    """Requests one quiet bulk run of n stored strategies makes, counted at the client, those
    of a scheduled minute tick that finds none of them due, and those of the bulk run at a new
    bar (which records every strategy's bar: the schedule's bookkeeping; each strategy that
    acts adds its own transaction). With `breadth`, of strategies using DESIGN §11's features."""
    try:
        from moto import mock_aws
    except ImportError:
        return None
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    os.environ.pop("DYNAMODB_ENDPOINT", None)
    with mock_aws():
        from engine.adapters.dynamodb import (
            DynamoStateRepository,
            DynamoStrategyRepository,
            StrategySnapshots,
            create_tables,
        )
        from engine.adapters.dynamodb.models import StrategyModel
        from engine.service.execution import ExecutionService
        from pynamodb.connection.base import Connection

        create_tables()
        snapshots = StrategySnapshots()  # wired together, as bootstrap does
        strategies = DynamoStrategyRepository(snapshots=snapshots)
        for s in make_strategies(n, seed=3, breadth=breadth):
            strategies.put(s)
        calls: list[str] = []
        original = Connection._make_api_call

        def counting_call(self: Any, operation_name: str, *args: Any, **kwargs: Any) -> Any:
            calls.append(operation_name)
            return original(self, operation_name, *args, **kwargs)

        @contextlib.contextmanager
        def counted() -> Iterator[list[str]]:
            calls.clear()
            Connection._make_api_call = counting_call  # type: ignore[method-assign]
            try:
                yield calls
            finally:
                Connection._make_api_call = original  # type: ignore[method-assign]

        class Memory:
            """The candles up to `limit` bars: the market as it stood at the clock."""

            limit = BARS

            def fetch(self, asset: str, timeframe: str, bars: int, now_ms: int) -> Candles:
                return ALL_CANDLES[(asset, timeframe)].head(self.limit)

        market = Memory()
        clock = {"offset": 0, "now": NOW - H + 30 * 60_000}
        states = DynamoStateRepository(
            snapshots=snapshots, clock=lambda: int(time.time() * 1000) + clock["offset"]
        )
        service = ExecutionService(
            strategies,
            states,
            market,
            stale_policy="warn",
            clock=lambda: clock["now"],
            max_bulk=n,
        )
        ids = [f"bench-{i:05d}" for i in range(n)]
        # the bar before: strategies enter positions, every bar is recorded
        market.limit = BARS - 1
        service.evaluate_bulk(ids, persist=True)
        _ = StrategyModel  # the models are bound to the mocked client
        # the next bar closes: the schedule's hourly run (the commits above are a minute old,
        # so their states come from the sharded indexes, as they would)
        market.limit, clock["now"], clock["offset"] = BARS, NOW + 30 * 60_000, 60_000
        with counted():
            result = service.evaluate_bulk(ids, persist=True)
        acted = sum(
            1 for r in result.results if isinstance(r, EvaluationResult) and not r.changes.empty
        )
        print(
            f"  bulk of {n} at a new bar ({acted} acted): {len(calls)} DynamoDB calls: "
            + ", ".join(f"{op} x{calls.count(op)}" for op in sorted(set(calls)))
        )
        new_bar = len(calls)
        # the same bar again (a retry, an API call): quiet, every bar already recorded
        clock["offset"] = 120_000
        with counted():
            service.evaluate_bulk(ids, persist=True)
        print(
            f"  quiet bulk of {n} in one run: {len(calls)} DynamoDB calls: "
            + ", ".join(f"{op} x{calls.count(op)}" for op in sorted(set(calls)))
        )
        quiet_bulk = len(calls)
        # the schedule's minute tick between two hourly closes: nothing is due
        with counted():
            due = service.due_strategies(NOW + 37 * 60_000)
        assert due == []
        print(f"  minute tick between hourly closes, {n} hourly strategies: {len(calls)} calls")
        return quiet_bulk, len(calls), new_bar


def commit_concurrency(n: int = 500, latency_s: float = 0.02) -> dict[str, float]:
    """Seconds of one bulk run of n strategies that all act on the bar, each commit taking
    `latency_s` (a TransactWriteItems round trip, simulated: no network here), with the
    commits one at a time and with COMMIT_WORKERS=8 as deployed."""
    from engine.service.execution import ExecutionService

    from tests.support.fakes import MemoryMarket, MemoryStates, MemoryStrategies

    class RoundTrips(MemoryStates):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()

        def commit(self, state: ExecutionState, changes: Any, evaluated: Any | None = None) -> int:
            if not changes.empty:
                time.sleep(latency_s)
            with self.lock:
                return int(super().commit(state, changes, evaluated))

    strategies = [
        parse_strategy(
            {
                "strategy_id": f"acts-{i:04d}",
                "name": "acts on every bar",
                "assets": [f"ASSET{i % PAIRS:03d}/USDT"],
                "timeframe": "1h",
                "indicators": {"atr": {"fn": "ATR", "params": {"timeperiod": 14}}},
                "entry": {"left": "volume", "op": ">", "right": 0},
                "execution_config": {
                    "stop_loss": {"type": "atr", "indicator": "atr", "multiplier": 2},
                    "take_profit": {"type": "risk_reward", "ratio": 2},
                },
            }
        )
        for i in range(n)
    ]
    out = {}
    for workers in (1, 8):
        service = ExecutionService(
            MemoryStrategies(strategies),
            RoundTrips(),
            MemoryMarket(ALL_CANDLES),
            stale_policy="warn",
            clock=lambda: NOW,
            max_bulk=n,
            commit_workers=workers,
        )
        start = time.perf_counter()
        result = service.evaluate_bulk([s.strategy_id for s in strategies])
        out[f"workers_{workers}"] = round(time.perf_counter() - start, 2)
        assert result.summary.succeeded == n, result.summary
    return out


_RSS = """
import gc, itertools, json, resource, sys, time
sys.path[:0] = [{bench!r}, {root!r}]
import bulk
from engine.service.execution import ExecutionService
from engine.service.strategy_cache import StrategyCache
from tests.support.fakes import MemoryMarket, MemoryStates, MemoryStrategies

n = {n}
cache = StrategyCache()


class StoredAsJson(MemoryStrategies):
    # definitions as a read returns them, slice by slice: the table holds them, not here

    def __init__(self):
        super().__init__()
        self.documents = bulk.iter_strategy_documents(n, seed=5)

    def get_many(self, strategy_ids):
        read = {{d["strategy_id"]: json.dumps(d) for d in itertools.islice(self.documents, len(strategy_ids))}}
        assert list(read) == list(strategy_ids)
        return {{i: cache.parse(text) for i, text in read.items()}}


service = ExecutionService(
    StoredAsJson(), MemoryStates(), MemoryMarket(bulk.ALL_CANDLES), stale_policy="warn",
    clock=lambda: bulk.NOW, max_bulk=n, strategy_cache=cache,
)


def peak_mib():
    # VmHWM: this process's own peak. ru_maxrss would not do: Linux carries it over from
    # the parent across fork and exec, so a child of a big process reports the parent's.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


gc.collect()
before = peak_mib()
start = time.perf_counter()
result = service.evaluate_bulk([f"bench-{{i:05d}}" for i in range(n)], persist=False)
elapsed = time.perf_counter() - start
assert result.summary.succeeded == n, result.summary
print(before, peak_mib(), n / elapsed)
"""


def rss_whole(n: int) -> tuple[float, float, float]:
    """Peak RSS (MiB, VmHWM) of a fresh process making one whole bulk call over n
    strategies stored as JSON (as `bulk_whole`, the definitions made as each slice is read,
    as a DynamoDB read would return them), the peak before the call (interpreter, imports,
    market data), and that call's strategies/s."""
    code = _RSS.format(bench=str(ROOT / "bench"), root=str(ROOT), n=n)
    answer = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    before, peak, rate = (float(x) for x in answer.stdout.split())
    return peak, before, rate


def breadth_cost(plain_shared_10000: float) -> dict[str, Any]:
    """What DESIGN §11's features (`add_breadth`, all in every strategy) cost, as ratios of
    the plain mix's time to theirs' (> 1 = slower) on the same machine in the same run:
    one bar from an empty state for 10,000 strategies (entries on both sides, sizing from
    the account), and 48 bars carried in turn for 1,000 (open positions, trailing stops,
    scale-outs, guards). The whole bulk call's ratio is added by `main`."""
    shared = 10_000 / shared_run(make_strategies(10_000, breadth=True), ALL_CANDLES)[0]
    plain_walk, plain_seen = walk_run(make_strategies(1000), ALL_CANDLES)
    walk, seen = walk_run(make_strategies(1000, breadth=True), ALL_CANDLES)
    print(
        f"DESIGN §11's features in every strategy: one bar for 10000 {shared:,.0f}/s (plain "
        f"{plain_shared_10000:,.0f}/s); {WALK_BARS} bars in turn for 1000 {walk:,.0f} "
        f"evaluations/s (plain {plain_walk:,.0f}/s); what happened: {seen} (plain {plain_seen})"
    )
    return {
        "shared_10000_breadth_per_s": round(shared),
        f"walk_1000x{WALK_BARS}_per_s": round(plain_walk),
        f"walk_1000x{WALK_BARS}_breadth_per_s": round(walk),
        "walk_breadth_happened": seen,
        "breadth_cost": {
            "shared": round(plain_shared_10000 / shared, 2),
            "walk": round(plain_walk / walk, 2),
        },
    }


def bulk_whole(n: int, breadth: bool = False) -> tuple[float, float]:
    """Strategies/s of one whole bulk call (ExecutionService.evaluate_bulk, dry run) over n
    strategies stored as JSON definitions, the way the strategies table holds them: parsing,
    compiling, fetching (from memory), evaluating and building the answer all count. First
    in a fresh container (every definition parsed and compiled), then the same call again in
    the warm container (engine.service.strategy_cache: parsed and compiled strategies kept)."""
    from engine.service.execution import ExecutionService
    from engine.service.strategy_cache import StrategyCache

    from tests.support.fakes import MemoryMarket, MemoryStates, MemoryStrategies

    cache = StrategyCache()

    class StoredAsJson(MemoryStrategies):
        """Parses each definition on every read, as DynamoStrategyRepository does."""

        def __init__(self, documents: list[dict[str, Any]]) -> None:
            super().__init__()
            self.definitions = {d["strategy_id"]: json.dumps(d) for d in documents}

        def get_many(self, strategy_ids: Any) -> dict[str, Strategy]:
            return {
                i: cache.parse(self.definitions[i]) for i in strategy_ids if i in self.definitions
            }

    documents = strategy_documents(n, seed=5, breadth=breadth)
    service = ExecutionService(
        StoredAsJson(documents),
        MemoryStates(),
        MemoryMarket(ALL_CANDLES),
        stale_policy="warn",
        clock=lambda: NOW,
        max_bulk=n,
        strategy_cache=cache,
    )
    ids = [d["strategy_id"] for d in documents]
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        result = service.evaluate_bulk(ids, persist=False)
        rates.append(n / (time.perf_counter() - start))
        assert result.summary.succeeded == n, result.summary
    gc.unfreeze()  # leave the rest of the benchmark as it found the collector
    return rates[0], rates[1]


BY_ID_RUNS = 30


def evaluate_by_id_on_moto() -> dict[str, float]:
    """One evaluation by id against moto's DynamoDB server over HTTP (in a process of its
    own), median of BY_ID_RUNS, and one GetItem round trip of the same strategy item in
    the same run; the strategy (RSI 14 and MACD 12/26/9) needs over 1,100 hourly bars of
    warm-up, read from the packed candle table. Also the same 1,122 bars read as the rows
    of one item per bar that the table held before packing (a paginated Query)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # a process of its own, as DynamoDB is: in this one it would share the interpreter lock
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto's server did not start") from None
            time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    from engine.adapters.dynamodb import (
        DynamoCandleRepository,
        DynamoStateRepository,
        DynamoStrategyRepository,
        StrategySnapshots,
        bind,
        create_tables,
    )
    from engine.adapters.dynamodb.models import CandleModel, StrategyModel
    from engine.adapters.marketdata import RepositoryProvider
    from engine.service.execution import ExecutionService

    try:
        bind(host=endpoint, region="us-east-1")
        create_tables()
        bars = 2_000
        history = make_long_candles(bars)
        candles = DynamoCandleRepository()
        candles.put("BYID/USDT", "1h", history)
        snapshots = StrategySnapshots()  # wired together, as bootstrap does
        strategies = DynamoStrategyRepository(snapshots=snapshots)
        strategy = parse_strategy(
            {
                "strategy_id": "by-id",
                "name": "RSI and MACD",
                "assets": ["BYID/USDT"],
                "timeframe": "1h",
                "indicators": {
                    "rsi": {"fn": "RSI", "params": {"timeperiod": 14}},
                    "macd": {
                        "fn": "MACD",
                        "params": {"fastperiod": 12, "slowperiod": 26, "signalperiod": 9},
                    },
                },
                "entry": {"left": "macd.macd", "op": ">", "right": "macd.macdsignal"},
                "exit": {"left": "rsi", "op": ">", "right": 70},
                "execution_config": {
                    "stop_loss": {"type": "percent", "value": 0.02},
                    "take_profit": {"type": "risk_reward", "ratio": 2},
                },
            }
        )
        strategies.put(strategy)
        now = int(history.time[-1]) + H + 60_000
        service = ExecutionService(
            strategies,
            DynamoStateRepository(snapshots=snapshots),
            RepositoryProvider(candles),
            stale_policy="warn",
            clock=lambda: now,
        )
        first = service.evaluate_by_id("by-id")  # commits what it decides, records the bar
        # the two alternate, so that the machine's changing speed (it is shared) weighs on
        # both alike instead of on whichever block ran at the slower moment
        evaluations: list[float] = []
        gets: list[float] = []
        for _ in range(BY_ID_RUNS):
            start = time.perf_counter()
            service.evaluate_by_id("by-id")
            evaluations.append(time.perf_counter() - start)
            start = time.perf_counter()
            StrategyModel.get("by-id", consistent_read=True)
            gets.append(time.perf_counter() - start)
        packed = []
        for _ in range(BY_ID_RUNS):
            start = time.perf_counter()
            got = candles.latest("BYID/USDT", "1h", 1_122, closed_by_ms=now)
            packed.append(time.perf_counter() - start)
        assert len(got) == 1_122
        # the same bars as rows, one item per bar (the layout before packing)
        client = CandleModel._get_connection().connection.client
        table = CandleModel.Meta.table_name
        for lo in range(0, bars, 25):
            client.batch_write_item(
                RequestItems={
                    table: [
                        {
                            "PutRequest": {
                                "Item": {
                                    "market": {"S": "BYID/USDT#1h"},
                                    "open_time": {"N": str(int(history.time[i]))},
                                    **{
                                        name: {"N": repr(float(history.field(name)[i]))}
                                        for name in ("open", "high", "low", "close", "volume")
                                    },
                                }
                            }
                        }
                        for i in range(lo, min(lo + 25, bars))
                    ]
                }
            )
        rows = []
        for _ in range(BY_ID_RUNS // 3):
            start = time.perf_counter()
            items: list[Any] = []
            kwargs: dict[str, Any] = {
                "TableName": table,
                "KeyConditionExpression": "market = :m",
                "ExpressionAttributeValues": {":m": {"S": "BYID/USDT#1h"}},
                "ScanIndexForward": False,
                "Limit": 1_122,
            }
            while len(items) < 1_122:
                page = client.query(**kwargs)
                items += page["Items"]
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
                kwargs["Limit"] = 1_122 - len(items)
            rows.append(time.perf_counter() - start)
        assert len(items) == 1_122
        assert first.bar is not None
    finally:
        bind(host=None, region="us-east-1")
        server.terminate()
        server.wait(timeout=10)
    by_id, get_item = statistics.median(evaluations), statistics.median(gets)
    return {
        "evaluate_by_id_ms": round(by_id * 1000, 2),
        "getitem_ms": round(get_item * 1000, 2),
        "evaluate_by_id_vs_getitem": round(by_id / get_item, 1),
        "candles_1122_packed_ms": round(statistics.median(packed) * 1000, 2),
        "candles_1122_rows_ms": round(statistics.median(rows) * 1000, 2),
    }


def make_long_candles(n: int) -> Candles:
    rng = np.random.default_rng(42)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 0.003, n)) * close
    start = 1_735_689_600_000  # 2025-01-01
    return Candles(
        time=start + np.arange(n, dtype=np.int64) * H,
        open=open_,
        high=np.maximum(open_, close) + spread,
        low=np.minimum(open_, close) - spread,
        close=close,
        volume=rng.uniform(1, 100, n),
    )


IMPORT_RUNS = 5

# Import the handler, then do what the first invocation does before its first network
# call: patch botocore for X-Ray, wire the service (storage and market-data adapters) and
# create the DynamoDB client.
_COLD_START = """
import sys, time
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
from engine.entrypoints.observability import patch_once
patch_once()
from engine.bootstrap import service
service()
from engine.adapters.dynamodb.models import StrategyModel
StrategyModel._get_connection().connection.client
t2 = time.perf_counter()
print(t1 - t0, t2 - t0)
"""


def import_times() -> dict[str, dict[str, float]]:
    """Median over fresh interpreters of (module import, cold start before the first request,
    and the import of the third-party modules the handler loads, alone: its floor).

    The layer ships bytecode (layers/engine/Makefile); so does this measurement, in a cache of
    its own, whether or not the environment forbids writing .pyc files.
    """
    out = {}
    bytecode = tempfile.TemporaryDirectory(prefix="bench-pycache-")
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        env = handler_environment(app.parent, ROOT / "layers" / "engine", bytecode.name)

        def run(*argv: str, env: dict[str, str] = env, cwd: Path = app.parent) -> str:
            return python_output(argv, env, cwd)

        libraries = library_modules(env, app.parent)
        rounds = []
        # alternated, so that a slow minute slows both; the first round writes the bytecode,
        # as sam build does
        for _ in range(IMPORT_RUNS + 1):
            imported, cold = map(float, run("-c", _COLD_START).split())
            rounds.append((imported, cold, float(run("-c", LIBRARIES, *libraries))))
        imports, colds, floor = (statistics.median(c) for c in zip(*rounds[1:], strict=True))
        out[app.parent.name] = {
            "import": round(imports, 3),
            "cold_start": round(colds, 3),
            "libraries": round(floor, 3),
        }
    bytecode.cleanup()
    return out


ALL_CANDLES = markets()

REPLAY_BARS = 100_000


def replay_report_overhead(bars: int = REPLAY_BARS) -> dict[str, float]:
    """Seconds of a replay of `bars` hourly bars (DESIGN's example strategy on a random walk)
    and of its report (stats, stats.json, equity.csv, report.html, bokeh's import included),
    and their ratio: what the report adds to the replay (issue 11: at most 0.2)."""
    from engine.service.replay import replay

    rng = np.random.default_rng(42)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.006, bars)))
    open_ = np.r_[100.0, close[:-1]]
    spread = np.abs(rng.normal(0, 0.003, bars)) * close
    history = Candles(
        time=np.arange(bars, dtype=np.int64) * H,
        open=open_,
        high=np.maximum(open_, close) + spread,
        low=np.minimum(open_, close) - spread,
        close=close,
        volume=rng.uniform(1, 100, bars),
    )
    strategy = parse_strategy(
        json.loads((ROOT / "examples" / "strategies" / "rsi_meanrev.json").read_text())
    )
    started = time.perf_counter()
    result = replay(strategy, history, progress=False)
    replay_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        started = time.perf_counter()
        from engine.service.report.build import build_report, write_equity_csv, write_stats
        from engine.service.report.html import write_report_html

        report = build_report(result)
        write_stats(out / "stats.json", report.stats)
        write_equity_csv(out / "equity.csv", report.curve)
        write_report_html(out / "report.html", result, report)
        report_s = time.perf_counter() - started
        size_mb = (out / "report.html").stat().st_size / 2**20
    print(
        f"replay of {bars:,} bars: {replay_s:.2f}s ({len(result.trades)} trades); its report "
        f"{report_s:.2f}s (report.html {size_mb:.1f} MiB) -> +{report_s / replay_s:.1%}"
    )
    return {
        "replay_s": round(replay_s, 2),
        "report_s": round(report_s, 2),
        "report_html_mib": round(size_mb, 1),
    } | {"ratio": round(report_s / replay_s, 3)}


def main() -> None:
    figures: dict[str, Any] = {}
    for n in (1000, 10000):
        strategies = make_strategies(n)
        shared_run(strategies[:50], ALL_CANDLES)  # warm up imports and caches outside the timing
        elapsed, computations = shared_run(strategies, ALL_CANDLES)
        tracemalloc.start()  # a separate pass: tracing slows Python down several times
        shared_run(strategies, ALL_CANDLES)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rate = n / elapsed
        figures[f"shared_{n}_per_s"] = round(rate)
        figures[f"shared_{n}_indicator_computations"] = computations
        figures[f"peak_mb_{n}"] = round(peak / 2**20, 1)
        print(
            f"{n} strategies shared: {elapsed:.3f}s = {rate:,.0f}/s, {computations} indicator computations, peak {peak / 2**20:.1f} MiB"
        )
    breadth_figures = breadth_cost(figures["shared_10000_per_s"])
    figures.update(breadth_figures)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for pair, candles in ALL_CANDLES.items():
            files[pair] = Path(tmp) / (pair[0].replace("/", "_") + "_1h.csv")
            write_csv(files[pair], candles)
        # The naive way costs the same per strategy however many there are: time 1,000.
        naive_rate = 1000 / naive_run(make_strategies(1000), files)
        figures["naive_per_s"] = round(naive_rate)
        for n in (1000, 10000):
            shared = n / shared_fetch_run(make_strategies(n), files)
            figures[f"shared_with_fetch_{n}_per_s"] = round(shared)
            figures[f"shared_vs_naive_{n}"] = round(shared / naive_rate, 1)
            print(
                f"{n} strategies incl. fetching from CSV: shared {shared:,.0f}/s, "
                f"naive {naive_rate:,.0f}/s -> {shared / naive_rate:.1f}x"
            )
    quiet = dynamodb_requests_quiet()
    if quiet is not None:
        (
            figures["dynamodb_requests_quiet_1000"],
            figures["dynamodb_requests_quiet_tick_1000"],
            figures["dynamodb_requests_new_bar_1000"],
        ) = quiet
    quiet = dynamodb_requests_quiet(breadth=True)
    if quiet is not None:
        (
            figures["dynamodb_requests_quiet_1000_breadth"],
            figures["dynamodb_requests_quiet_tick_1000_breadth"],
            figures["dynamodb_requests_new_bar_1000_breadth"],
        ) = quiet
    peak, before, rate = rss_whole(50_000)
    figures["rss_mib_50000"] = round(peak)
    figures["rss_mib_before_call"] = round(before)
    figures["bulk_whole_50000_per_s"] = round(rate)
    print(
        f"whole bulk call over 50000 strategies in a fresh process: peak RSS {peak:.0f} MiB "
        f"({before:.0f} MiB before the call), {rate:,.0f}/s"
    )
    whole, warm = bulk_whole(10_000)
    figures["bulk_whole_10000_per_s"] = round(whole)
    figures["bulk_whole_10000_warm_per_s"] = round(warm)
    print(
        f"whole bulk call, 10000 strategies from JSON (parse, compile, evaluate): {whole:,.0f}/s "
        f"in a fresh container, {warm:,.0f}/s again in the warm one"
    )
    whole_breadth, _ = bulk_whole(10_000, breadth=True)
    figures["bulk_whole_10000_breadth_per_s"] = round(whole_breadth)
    figures["breadth_cost"]["bulk_whole"] = round(whole / whole_breadth, 2)
    print(
        f"the same with DESIGN §11's features in every strategy: {whole_breadth:,.0f}/s "
        f"fresh -> {whole / whole_breadth:.2f}x the time"
    )
    by_id = evaluate_by_id_on_moto()
    figures.update(by_id)
    print(
        f"evaluation by id on moto's server: {by_id['evaluate_by_id_ms']} ms, GetItem "
        f"{by_id['getitem_ms']} ms -> {by_id['evaluate_by_id_vs_getitem']}x; 1,122 candles "
        f"packed {by_id['candles_1122_packed_ms']} ms, as rows {by_id['candles_1122_rows_ms']} ms"
    )
    commits = commit_concurrency()
    figures["bulk_500_acting_commit_20ms_s"] = commits
    print(
        "bulk of 500 strategies that all act, 20 ms per commit (simulated): "
        f"{commits['workers_1']} s one at a time, {commits['workers_8']} s with 8 workers"
    )
    overhead = replay_report_overhead()
    figures["replay_100k_s"] = overhead["replay_s"]
    figures["replay_100k_report_s"] = overhead["report_s"]
    figures["replay_100k_report_overhead_ratio"] = overhead["ratio"]
    from replay_speed import replay_speed  # bench/, first on sys.path

    try:
        figures.update(replay_speed())
    except Exception as exc:  # backtesting.py's environment could not be made, trades differ
        print(f"replay vs backtesting.py not measured: {exc}")
    handlers = import_times()
    figures["handler_import_s"] = {name: t["import"] for name, t in handlers.items()}
    figures["handler_cold_start_s"] = {name: t["cold_start"] for name, t in handlers.items()}
    figures["handler_import_libraries_s"] = {n: t["libraries"] for n, t in handlers.items()}
    print(
        "handler import / cold start before the first request / the libraries it loads, "
        f"alone (median of {IMPORT_RUNS}, Lambda's environment): "
        + ", ".join(
            f"{n} {t['import']:.3f}s / {t['cold_start']:.3f}s / {t['libraries']:.3f}s"
            for n, t in handlers.items()
        )
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
