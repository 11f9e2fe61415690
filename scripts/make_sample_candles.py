"""Generate examples/candles/btc_1h_sample.csv: synthetic but realistic-looking BTC/USDT 1h bars.

Deterministic (fixed seed): log returns with slowly varying volatility (GARCH-like), trend
regimes that switch every few weeks, occasional jumps, a daily volume cycle and volume that
rises with the size of the move. Prices are rounded to cents, volumes to 1e-5 BTC.

    .venv/bin/python scripts/make_sample_candles.py [--bars N] [--seed S] [--out FILE]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from engine.adapters.candle_files import write_csv
from engine.core.candles import Candles

HOUR_MS = 3_600_000
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "examples" / "candles" / "btc_1h_sample.csv"


def generate(bars: int, seed: int, start_price: float = 42_250.0) -> Candles:
    rng = np.random.default_rng(seed)
    start_ms = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    time = start_ms + np.arange(bars, dtype=np.int64) * HOUR_MS

    # volatility: GARCH(1,1)-like recursion around ~0.55% per hour
    base_var = 0.0055**2
    var = np.empty(bars)
    ret = np.empty(bars)
    v = base_var
    # trend regimes of 2-6 weeks, drift between -0.015% and +0.02% per hour
    drift = np.empty(bars)
    i = 0
    while i < bars:
        length = int(rng.integers(14 * 24, 42 * 24))
        drift[i : i + length] = rng.uniform(-0.00015, 0.0002)
        i += length
    shock = rng.standard_t(df=4, size=bars) / np.sqrt(2.0)  # unit variance, fat tails
    jumps = rng.random(bars) < 0.002
    for k in range(bars):
        var[k] = v
        r = drift[k] + np.sqrt(v) * shock[k]
        if jumps[k]:
            r += rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.05)
        ret[k] = r
        v = 0.05 * base_var + 0.85 * v + 0.10 * r * r

    close = start_price * np.exp(np.cumsum(ret))
    open_ = np.r_[start_price, close[:-1]] * (1 + rng.normal(0, 0.0002, bars))
    sigma = np.sqrt(var)
    wick_up = np.abs(rng.normal(0, 0.6, bars)) * sigma
    wick_down = np.abs(rng.normal(0, 0.6, bars)) * sigma
    high = np.maximum(open_, close) * (1 + wick_up)
    low = np.minimum(open_, close) * (1 - wick_down)

    hour = (time // HOUR_MS) % 24
    daily_cycle = 1 + 0.45 * np.sin((hour - 9) / 24 * 2 * np.pi)  # busiest around 15:00 UTC
    move = np.abs(ret) / np.sqrt(base_var)
    volume = 900 * daily_cycle * (0.6 + 0.5 * move) * rng.lognormal(0, 0.35, bars)

    open_, close = np.round(open_, 2), np.round(close, 2)
    high = np.maximum(np.round(high, 2), np.maximum(open_, close))
    low = np.minimum(np.round(low, 2), np.minimum(open_, close))
    return Candles(
        time=time,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=np.round(volume, 5),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=4320, help="number of 1h bars (180 days)")
    parser.add_argument("--seed", type=int, default=20240117)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(args.out, generate(args.bars, args.seed))
    print(f"wrote {args.bars} bars to {args.out}")


if __name__ == "__main__":
    main()
