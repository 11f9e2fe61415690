"""backtesting.py 0.6.6 running bench/replay_speed.py's SMA-cross + RSI strategy on its own, as
its users write it: pandas reads the candles file, the strategy computes its indicators in
`init` and decides in `next`. Run by bench/replay_speed.py in .venv-yardstick (backtesting.py
and pandas, nothing of the engine) as a whole process, timed from outside.

argv: CANDLES_CSV OUT_JSON [FILES_DIR]. Writes the closed trades (entry and exit bar open times
in epoch ms, prices) as JSON. With FILES_DIR, also writes there what `python -m engine replay`
writes (DESIGN §10), the way backtesting.py's users get it: every trade
(`stats["_trades"]`), the stats, the equity curve with its drawdown (`stats["_equity_curve"]`)
and the HTML chart (`Backtest.plot`, its defaults: candles resampled above 10,000 bars).

The rules are the engine's (DESIGN §4), as backtesting.py expresses them with
`trade_on_close=True`: enter at the close of the bar where SMA 10 crosses above SMA 30 and RSI 14
is below 70, with a stop 2 % below and a target 4 % above that close (backtesting.py's broker
fills them from the next bar on, at the open on a gap, the stop first when a bar touches
both); leave at the close when SMA 10 crosses below SMA 30. The engine's crossings compare
the previous bar with <= and the current one with >, written out the same way here.
RSI is Wilder's (as TA-Lib computes it): the first average is the mean of 14 changes, then
exponential smoothing with alpha 1/14.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from backtesting import Backtest, Strategy

FAST, SLOW, RSI_PERIOD, RSI_MAX = 10, 30, 14, 70.0
STOP, TARGET = 0.02, 0.04


def sma(values: np.ndarray, period: int) -> np.ndarray:
    return np.asarray(pd.Series(values).rolling(period).mean(), dtype=float)


def rsi(values: np.ndarray, period: int) -> np.ndarray:
    change = np.diff(np.asarray(values, dtype=float))
    gain, loss = np.clip(change, 0, None), np.clip(-change, 0, None)
    out = np.full(len(values), np.nan)
    if len(change) < period:
        return out
    smooth = {}
    for name, series in (("gain", gain), ("loss", loss)):
        seeded = np.r_[series[:period].mean(), series[period:]]
        smooth[name] = np.asarray(
            pd.Series(seeded).ewm(alpha=1 / period, adjust=False).mean(), dtype=float
        )
    total = smooth["gain"] + smooth["loss"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[period:] = np.where(total != 0, 100 * smooth["gain"] / total, 0.0)
    return out


class SmaCrossRsi(Strategy):
    def init(self) -> None:
        self.fast = self.I(sma, self.data.Close, FAST)
        self.slow = self.I(sma, self.data.Close, SLOW)
        self.rsi = self.I(rsi, self.data.Close, RSI_PERIOD)

    def next(self) -> None:
        fast, slow = self.fast, self.slow
        if len(fast) < 2:
            return
        if self.position:
            if fast[-2] >= slow[-2] and fast[-1] < slow[-1]:
                self.position.close()
        elif fast[-2] <= slow[-2] and fast[-1] > slow[-1] and self.rsi[-1] < RSI_MAX:
            close = self.data.Close[-1]
            self.buy(size=1, sl=close * (1 - STOP), tp=close * (1 + TARGET))


def main() -> None:
    frame = pd.read_csv(sys.argv[1])
    data = pd.DataFrame(
        {
            name.capitalize(): frame[name].to_numpy(float)
            for name in ("open", "high", "low", "close", "volume")
        },
        index=pd.to_datetime(frame["time"], utc=True).dt.tz_localize(None),
    )
    run = Backtest(data, SmaCrossRsi, cash=1e9, commission=0.001, trade_on_close=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a trade still open at the end
        stats = run.run()
    trades = [
        {
            "entry_ms": int(row.EntryTime.value // 1_000_000),
            "exit_ms": int(row.ExitTime.value // 1_000_000),
            "entry_price": float(row.EntryPrice),
            "exit_price": float(row.ExitPrice),
        }
        for row in stats["_trades"].itertuples()
    ]
    with open(sys.argv[2], "w", encoding="utf-8") as handle:
        json.dump(trades, handle)
    if len(sys.argv) > 3:
        write_files(Path(sys.argv[3]), run, stats)


def write_files(out: Path, run: Backtest, stats: pd.Series) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stats["_trades"].to_json(out / "trades.json", orient="records", date_format="iso")
    figures = {k: v for k, v in stats.items() if not k.startswith("_")}
    (out / "stats.json").write_text(json.dumps(figures, default=str), encoding="utf-8")
    stats["_equity_curve"].to_csv(out / "equity.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bokeh's and backtesting.py's notes on resampling
        run.plot(filename=str(out / "report.html"), open_browser=False)


if __name__ == "__main__":
    main()
