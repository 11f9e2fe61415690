"""backtesting.py 0.6.6 deciding for itself, on its bundled GOOG data, for
tests/unit/test_breadth_vs_backtesting.py (run in .venv-yardstick; see run_backtesting.py).

Unlike run_backtesting.py, which follows the engine's decisions, each case here is an
ordinary backtesting.py strategy: its own SMA crossover signals, its own `sell()`, its own
`TrailingStrategy` ratchet. Input: argv[1] is the case name, argv[2] the SMA periods as
"fast,slow", argv[3] the units per trade, argv[4] the trailing percent.
Output (JSON on stdout): the candles and the closed trades.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import numpy as np
import pandas as pd
from backtesting import Backtest, Strategy
from backtesting.lib import TrailingStrategy, crossover
from backtesting.test import GOOG, SMA

FAST, SLOW = (int(x) for x in sys.argv[2].split(","))
SIZE = int(sys.argv[3])
PCT = float(sys.argv[4])


class Crossing(Strategy):
    def init(self) -> None:
        self.fast = self.I(SMA, self.data.Close, FAST)
        self.slow = self.I(SMA, self.data.Close, SLOW)


class ShortOnly(Crossing):
    def next(self) -> None:
        if crossover(self.fast, self.slow) and self.position:
            self.position.close()
        if crossover(self.slow, self.fast) and not self.position:
            self.sell(size=SIZE)


class Reversal(Crossing):
    def next(self) -> None:
        if crossover(self.fast, self.slow):
            self.position.close()
            self.buy(size=SIZE)
        elif crossover(self.slow, self.fast):
            self.position.close()
            self.sell(size=SIZE)


class PercentTrail(TrailingStrategy):
    """TrailingStrategy's own ratchet at each close, with a distance of close·pct in place of
    its ATR multiple: stop = max(stop, close - close·pct)."""

    def init(self) -> None:
        super().init()
        self.fast = self.I(SMA, self.data.Close, FAST)
        self.slow = self.I(SMA, self.data.Close, SLOW)
        self._TrailingStrategy__atr = np.asarray(self.data.Close) * PCT
        self.set_trailing_sl(1)

    def next(self) -> None:
        super().next()
        if crossover(self.fast, self.slow) and not self.position:
            self.buy(size=SIZE, sl=self.data.Close[-1] * (1 - PCT))


CASES: dict[str, type[Strategy]] = {
    "short_only": ShortOnly,
    "reversal": Reversal,
    "trailing_percent": PercentTrail,
}


def main() -> None:
    data = GOOG
    run = Backtest(data, CASES[sys.argv[1]], cash=1_000_000, trade_on_close=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = run.run()
    out: dict[str, Any] = {
        "time": [int(t.value // 1_000_000) for t in pd.DatetimeIndex(data.index)],
        **{k.lower(): data[k].astype(float).tolist() for k in ("Open", "High", "Low", "Close")},
        "volume": data["Volume"].astype(float).tolist(),
        "trades": [
            {
                "size": int(row.Size),
                "entry_ms": int(row.EntryTime.value // 1_000_000),
                "exit_ms": int(row.ExitTime.value // 1_000_000),
                "entry_price": float(row.EntryPrice),
                "exit_price": float(row.ExitPrice),
                "pnl": float(row.PnL),
            }
            for row in stats["_trades"].itertuples()
        ],
    }
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
