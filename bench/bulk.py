"""Bulk evaluation benchmark (`make bench`). Prints its figures, the last line one JSON object.

- engine-only strategies/s on one core for 1,000 and 10,000 strategies over 100 markets,
  sharing market data and indicators (the engine's way) vs. the naive way (each strategy
  fetches its candles and computes its indicators alone), and the ratio;
- DynamoDB requests of one quiet bulk run of 1,000 stored strategies, counted at the client
  (moto in-process; market data from memory so that only storage traffic is counted);
- peak memory of the 10,000 run (tracemalloc) and cold import time of each handler module.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.candles_io import read_csv, write_csv  # noqa: E402
from engine.core.candles import Candles  # noqa: E402
from engine.core.evaluate import compile_strategy, evaluate  # noqa: E402
from engine.core.market import MarketData  # noqa: E402
from engine.core.state import ExecutionState  # noqa: E402
from engine.core.strategy import Strategy, parse_strategy  # noqa: E402

H = 3_600_000
BARS = 700
PAIRS = 100
NOW = BARS * H


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


def make_strategies(n: int, seed: int = 1) -> list[Strategy]:
    """Realistic two-to-three indicator strategies drawn from common parameter choices."""
    rnd = random.Random(seed)
    out = []
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
        out.append(
            parse_strategy(
                {
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
            )
        )
    return out


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


def dynamodb_requests_quiet_bulk(n: int = 1000) -> int | None:
    """Requests one quiet bulk run of n stored strategies makes, counted at the client."""
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
        from engine.service import ExecutionService
        from engine.storage import DynamoStateRepository, DynamoStrategyRepository, create_tables
        from engine.storage.models import StrategyModel
        from pynamodb.connection.base import Connection

        create_tables()
        strategies = DynamoStrategyRepository()
        for s in make_strategies(n, seed=3):
            strategies.put(s)
        calls: list[str] = []
        original = Connection._make_api_call

        def counting_call(self: Any, operation_name: str, *args: Any, **kwargs: Any) -> Any:
            calls.append(operation_name)
            return original(self, operation_name, *args, **kwargs)

        class Memory:
            def fetch(self, asset: str, timeframe: str, bars: int, now_ms: int) -> Candles:
                return ALL_CANDLES[(asset, timeframe)]

        # the quiet run comes a minute after the commits, as the next scheduled bar would
        clock = {"offset": 0}
        states = DynamoStateRepository(clock=lambda: int(time.time() * 1000) + clock["offset"])
        service = ExecutionService(
            strategies,
            states,
            Memory(),
            stale_policy="warn",
            clock=lambda: NOW + H,
            max_bulk=n,
        )
        ids = [f"bench-{i:05d}" for i in range(n)]
        # a first run may enter positions; the quiet run is the one at the same bar after it
        service.evaluate_bulk(ids, persist=True)
        _ = StrategyModel  # the models are bound to the mocked client
        clock["offset"] = 60_000
        Connection._make_api_call = counting_call  # type: ignore[method-assign]
        try:
            service.evaluate_bulk(ids, persist=True)
        finally:
            Connection._make_api_call = original  # type: ignore[method-assign]
        print(
            f"  quiet bulk of {n} in one run: {len(calls)} DynamoDB calls: "
            + ", ".join(f"{op} x{calls.count(op)}" for op in sorted(set(calls)))
        )
        return len(calls)


def import_times() -> dict[str, float]:
    out = {}
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        code = (
            f"import sys,time; sys.path.insert(0, {str(app.parent)!r}); t=time.perf_counter(); import app; "
            "print(time.perf_counter()-t)"
        )
        env = {**os.environ, "AWS_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true"}
        answer = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        out[app.parent.name] = round(float(answer.stdout.strip().splitlines()[-1]), 3)
    return out


ALL_CANDLES = markets()


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
    figures["dynamodb_requests_quiet_1000"] = dynamodb_requests_quiet_bulk()
    figures["handler_import_s"] = import_times()
    print(f"handler cold import: {figures['handler_import_s']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
