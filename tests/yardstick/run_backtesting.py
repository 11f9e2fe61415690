"""Runs backtesting.py 0.6.6 for tests/unit/test_report_vs_backtesting.py, in its own virtual
environment (.venv-yardstick: backtesting.py and pandas, nothing of the engine).

Input (JSON file, argv[1]): the replayed candles, the indicator series (for backtesting.py's
warm-up), the engine's decisions (entries with stop and target, signal and time exits at a
close), cash, commission, and optionally an equity curve to compute stats on.
Output (JSON on stdout): backtesting.py's stats of its own run, its trades and equity, and,
given an equity curve, its stats on that curve with its own trades.

Why a separate environment: with pandas importable, TA-Lib imports it (and pyarrow) when the
engine imports TA-Lib and wraps every function, which would change what the engine's tests
and benchmarks of import time and speed measure.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from backtesting import Backtest, Strategy
from backtesting._stats import compute_stats


class Follow(Strategy):
    """Takes the engine's decisions; backtesting.py's broker does the rest."""

    entries: ClassVar[dict[int, list[list[Any]]]] = {}
    exits: ClassVar[dict[int, list[int]]] = {}  # bar -> entry bars of trades closed at its close
    series: ClassVar[list[np.ndarray]] = []

    def init(self) -> None:
        for k, values in enumerate(self.series):  # attributes: how backtesting.py finds them
            setattr(self, f"ind{k}", self.I(lambda v=values: v, name=f"ind{k}"))

    def next(self) -> None:
        i = len(self.data) - 1
        for entry_bar in self.exits.get(i, []):
            (trade,) = [t for t in self.trades if t.entry_bar == entry_bar]
            trade.close()
        for size, stop, target in self.entries.get(i, []):
            self.buy(size=size, sl=stop, tp=target)


def plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, pd.Timedelta):
        return value.total_seconds()
    if value is pd.NaT:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None


def figures(stats: pd.Series) -> dict[str, Any]:
    return {k: plain(v) for k, v in stats.items() if not k.startswith("_")}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    data = pd.DataFrame(
        {name.capitalize(): spec[name] for name in ("open", "high", "low", "close", "volume")},
        index=pd.to_datetime(np.array(spec["time"], dtype=np.int64), unit="ms"),
    )
    Follow.entries = {int(k): v for k, v in spec["entries"].items()}
    Follow.exits = {int(k): v for k, v in spec["exits"].items()}
    Follow.series = [np.array(s, dtype=float) for s in spec["series"]]
    run = Backtest(
        data, Follow, cash=spec["cash"], commission=spec["commission"], trade_on_close=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # open trades at the end; pandas deprecations
        stats = run.run()
        trades = stats["_trades"]
        out: dict[str, Any] = {
            "stats": figures(stats),
            "equity": stats["_equity_curve"]["Equity"].tolist(),
            "trades": [
                {
                    "entry_ms": int(row.EntryTime.value // 1_000_000),
                    "exit_ms": int(row.ExitTime.value // 1_000_000),
                    "entry_price": float(row.EntryPrice),
                    "exit_price": float(row.ExitPrice),
                    "pnl": float(row.PnL),
                    "commission": float(row.Commission),
                    "return": float(row.ReturnPct),
                }
                for row in trades.itertuples()
            ],
        }
        if spec.get("equity") is not None:
            same = compute_stats(
                trades=trades,
                equity=np.array(spec["equity"], dtype=float),
                ohlc_data=data,
                strategy_instance=None,
            )
            out["stats_on_equity"] = figures(same)
    text = json.dumps(out, allow_nan=True)
    assert all(math.isfinite(x) for x in out["equity"])
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
