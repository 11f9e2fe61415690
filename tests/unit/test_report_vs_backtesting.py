"""stats.json against backtesting.py 0.6.6 on the same strategies and data (DESIGN §10).

backtesting.py runs a strategy that takes the engine's decisions (entries with their stop and
target, signal and time exits at the close) and leaves everything else to its own broker:
the stop and target fills, the equity, the trades' PnL and every statistic. The test asserts
that its trades are the replay's trades and its figures are stats.json's (relative 1e-6;
annualized figures 1e-4).

backtesting.py charges the fee of a fill at the close one bar late in its equity (it fills
"on close" orders in the next bar's loop, after recording that bar's equity), so with fees the
equity-based figures are compared with backtesting.py's `compute_stats` on the replay's own
equity and backtesting.py's trades; the trade figures still come from its full run.

backtesting.py runs in its own virtual environment (tests/yardstick: pandas must not be
importable next to the engine's TA-Lib), which the first run makes.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine.adapters.candle_files import read_csv
from engine.core.candles import Candles
from engine.core.strategy import Strategy, parse_strategy
from engine.core.timeframes import to_ms
from engine.service.replay import ReplayResult, replay
from engine.service.report.build import build_report

from tests.support.core import DESIGN_EXAMPLE, T0, H
from tests.yardstick.venv import yardstick_python

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CANDLES = REPO / "examples" / "candles" / "btc_1h_sample.csv"

# stats.json key -> (backtesting.py key, relative tolerance)
EXACT, ANNUAL = 1e-6, 1e-4
FIGURES: dict[str, tuple[str, float]] = {
    "exposure_time_pct": ("Exposure Time [%]", EXACT),
    "equity_final": ("Equity Final [$]", EXACT),
    "equity_peak": ("Equity Peak [$]", EXACT),
    "return_pct": ("Return [%]", EXACT),
    "buy_and_hold_return_pct": ("Buy & Hold Return [%]", EXACT),
    "return_ann_pct": ("Return (Ann.) [%]", ANNUAL),
    "volatility_ann_pct": ("Volatility (Ann.) [%]", ANNUAL),
    "sharpe_ratio": ("Sharpe Ratio", ANNUAL),
    "sortino_ratio": ("Sortino Ratio", ANNUAL),
    "calmar_ratio": ("Calmar Ratio", ANNUAL),
    "max_drawdown_pct": ("Max. Drawdown [%]", EXACT),
    "avg_drawdown_pct": ("Avg. Drawdown [%]", EXACT),
    "trades": ("# Trades", EXACT),
    "win_rate_pct": ("Win Rate [%]", EXACT),
    "best_trade_pct": ("Best Trade [%]", EXACT),
    "worst_trade_pct": ("Worst Trade [%]", EXACT),
    "avg_trade_pct": ("Avg. Trade [%]", EXACT),
    "profit_factor": ("Profit Factor", EXACT),
    "expectancy_pct": ("Expectancy [%]", EXACT),
    "sqn": ("SQN", EXACT),
}
DURATIONS = {
    "duration": "Duration",
    "max_drawdown_duration": "Max. Drawdown Duration",
    "avg_drawdown_duration": "Avg. Drawdown Duration",
    "max_trade_duration": "Max. Trade Duration",
    "avg_trade_duration": "Avg. Trade Duration",
}
TRADE_FIGURES = {
    "trades",
    "win_rate_pct",
    "best_trade_pct",
    "worst_trade_pct",
    "avg_trade_pct",
    "profit_factor",
    "expectancy_pct",
    "sqn",
    "max_trade_duration",
    "avg_trade_duration",
}


def random_candles(n: int, seed: int, start: int = T0) -> Candles:
    """A random walk around 100 with a few missing hours (bars need not be contiguous)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
    open_ = np.r_[100.0, close[:-1]] * (1 + rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, n)))
    times = start + np.cumsum(np.where(rng.random(n) < 0.03, 2 * H, H)).astype(np.int64)
    return Candles(times, open_, high, low, close, rng.uniform(1, 100, n))


def busy_doc(fee_rate: float, quantity: int = 3) -> dict[str, Any]:
    """RSI + SMA + ATR, crossing entries, ATR stop, risk-reward target, time exit, cooldown,
    two positions at once."""
    return {
        "strategy_id": "busy",
        "name": "busy",
        "assets": ["BTC/USDT"],
        "timeframe": "1h",
        "indicators": {
            "rsi": {"fn": "RSI", "params": {"timeperiod": 14}},
            "sma": {"fn": "SMA", "params": {"timeperiod": 20}},
            "atr": {"fn": "ATR", "params": {"timeperiod": 14}},
        },
        "entry": {
            "all": [
                {"left": "close", "op": ">", "right": "sma"},
                {
                    "any": [
                        {"left": "rsi", "op": "crosses_above", "right": 40},
                        {"left": "close", "op": "crosses_above", "right": "sma"},
                    ]
                },
            ]
        },
        "exit": {"all": [{"left": "rsi", "op": ">", "right": 65}]},
        "execution_config": {
            "position_sizing": {"type": "fixed_quantity", "value": quantity},
            "max_open_positions": 2,
            "stop_loss": {"type": "atr", "indicator": "atr", "multiplier": 1.5},
            "take_profit": {"type": "risk_reward", "ratio": 1.5},
            "time_based_exits": {"max_hold_bars": 12},
            "fee_rate": fee_rate,
            "cooldown_config": {"1h": {"short_loss_limit": 2, "short_window_bars": 6}},
        },
    }


def example_doc(fee_rate: float) -> dict[str, Any]:
    """DESIGN's example strategy, one whole BTC per trade (backtesting.py trades whole units)."""
    doc = json.loads(json.dumps(DESIGN_EXAMPLE))
    doc["execution_config"]["position_sizing"] = {"type": "fixed_quantity", "value": 1}
    doc["execution_config"]["fee_rate"] = fee_rate
    doc["execution_config"]["max_open_positions"] = 1
    return doc


RUNNER = Path(__file__).resolve().parents[1] / "yardstick" / "run_backtesting.py"


def backtest(
    result: ReplayResult,
    candles: Candles,
    start: int,
    fee_rate: float,
    capital: float,
    equity: np.ndarray | None,
    tmp_path: Path,
) -> dict[str, Any]:
    """backtesting.py over the replayed bars, taking the replay's decisions (and, given an
    equity curve, its stats on that curve with its own trades)."""
    window = slice(start, None)
    times = candles.time[window]

    def bar(value: Any) -> int:
        return int(np.searchsorted(times, to_ms(value)))

    entries: dict[int, list[list[Any]]] = {}
    for position in result.positions.values():
        size = position.quantity
        assert size == int(size), "backtesting.py trades whole units"
        entries.setdefault(bar(position.entry_time), []).append(
            [int(size), position.stop_loss_price, position.take_profit_price]
        )
    assert 0 not in entries, "backtesting.py cannot enter on its first bar: pick another window"
    exits: dict[int, list[int]] = {}
    for trade in result.trades:
        if trade.exit_reason in ("signal", "time"):
            exits.setdefault(bar(trade.exit_time), []).append(bar(trade.entry_time))
    assert result.compiled is not None and result.market is not None
    frame = result.market.frame(result.compiled.strategy, "BTC/USDT")
    spec = {
        "time": times.tolist(),
        **{f: getattr(candles, f)[window].tolist() for f in ("open", "high", "low", "close")},
        "volume": candles.volume[window].tolist(),
        # each indicator output once, NaN in warm-up (JSON NaN: both sides are Python)
        "series": [frame[n][window].tolist() for n in frame if "." in n],
        "entries": entries,
        "exits": exits,
        "cash": capital,
        "commission": fee_rate,
        "equity": None if equity is None else equity.tolist(),
    }
    given = tmp_path / "backtest.json"
    given.write_text(json.dumps(spec))
    done = subprocess.run(
        [str(yardstick_python()), str(RUNNER), str(given)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def assert_same_trades(result: ReplayResult, trades: list[dict[str, Any]]) -> None:
    assert len(trades) == len(result.trades)
    ours = sorted(result.trades, key=lambda t: (t.entry_time, t.exit_time))
    theirs = sorted(trades, key=lambda t: (t["entry_ms"], t["exit_ms"]))
    for mine, row in zip(ours, theirs, strict=True):
        assert to_ms(mine.entry_time) == row["entry_ms"]
        assert to_ms(mine.exit_time) == row["exit_ms"]
        assert mine.entry_price == pytest.approx(row["entry_price"], rel=1e-12)
        assert mine.exit_price == pytest.approx(row["exit_price"], rel=1e-12)
        assert mine.pnl == pytest.approx(row["pnl"], rel=1e-9, abs=1e-9)
        assert mine.fees == pytest.approx(row["commission"], rel=1e-9, abs=1e-12)
        assert mine.pnl / (mine.entry_price * mine.quantity) == pytest.approx(
            row["return"], rel=1e-9, abs=1e-12
        )


def assert_figures(ours: dict[str, Any], theirs: dict[str, Any], keys: set[str]) -> list[str]:
    """Every figure in `keys` equal; returns lines "key ours theirs" for the record."""
    lines = []
    for key, (name, rel) in FIGURES.items():
        if key not in keys:
            continue
        value, expected = ours[key], theirs[name]
        lines.append(f"{key:26} {value!r:>24} {expected!r:>24}")
        if expected is None or not math.isfinite(expected):
            assert value is None, f"{key}: {value} where backtesting.py has {expected}"
        else:
            assert value == pytest.approx(expected, rel=rel, abs=1e-12), key
    for key, name in DURATIONS.items():
        if key not in keys:
            continue
        expected = theirs[name]  # seconds, None for NaT
        lines.append(f"{key:26} {ours[key]!r:>24} {expected!r:>24}")
        if expected is None or (isinstance(expected, float) and math.isnan(expected)):
            assert ours[key] is None, key
        else:
            assert iso_seconds(ours[key]) == expected, key
    return lines


def iso_seconds(duration: str) -> float:
    """Seconds of an ISO 8601 duration as stats.json writes them (PnDTnHnMnS)."""
    import re

    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?", duration)
    assert match, duration
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86_400 + hours * 3600 + minutes * 60 + seconds


def check(
    strategy: Strategy, candles: Candles, start_bar: int, capital: float, tmp_path: Path
) -> tuple[dict[str, Any], list[str]]:
    start_ms = int(candles.time[start_bar]) if start_bar else None
    result = replay(strategy, candles, progress=False, start_ms=start_ms)
    report = build_report(result, capital=capital)
    ours = report.stats
    fee_rate = strategy.execution_config.fee_rate
    answer = backtest(
        result,
        candles,
        start_bar,
        fee_rate,
        capital,
        report.curve.equity if fee_rate else None,
        tmp_path,
    )
    theirs = answer["stats"]
    assert_same_trades(result, answer["trades"])
    assert ours["start"] == theirs["Start"] + "Z"
    assert ours["end"] == theirs["End"] + "Z"
    assert ours["bars"] == len(answer["equity"])
    assert ours["fees"] == pytest.approx(theirs.get("Commissions [$]") or 0.0, rel=1e-9)
    everything = set(FIGURES) | set(DURATIONS)
    if fee_rate == 0:
        np.testing.assert_allclose(report.curve.equity, answer["equity"], rtol=1e-12)
        return ours, assert_figures(ours, theirs, everything)
    # with fees: trade figures from the run, the rest from backtesting.py on our equity
    lines = assert_figures(ours, theirs, TRADE_FIGURES | {"buy_and_hold_return_pct"})
    lines += assert_figures(
        ours,
        answer["stats_on_equity"],
        everything - TRADE_FIGURES - {"buy_and_hold_return_pct"},
    )
    return ours, lines


CASES = {
    "busy, no fees": (lambda: parse_strategy(busy_doc(0.0)), lambda: random_candles(3000, 5), 0),
    "busy, fees, from bar 500": (
        lambda: parse_strategy(busy_doc(0.001)),
        lambda: random_candles(3000, 8),
        500,
    ),
    "busy, no fees, two positions open at the end": (
        lambda: parse_strategy(busy_doc(0.0)),
        lambda: random_candles(3000, 5).head(1298),
        0,
    ),
    "DESIGN example on BTC, no fees": (
        lambda: parse_strategy(example_doc(0.0)),
        lambda: read_csv(EXAMPLE_CANDLES),
        0,
    ),
    "DESIGN example on BTC, fees, from bar 1000": (
        lambda: parse_strategy(example_doc(0.001)),
        lambda: read_csv(EXAMPLE_CANDLES),
        1000,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stats_equal_backtesting_py(case: str, tmp_path: Path) -> None:
    make_strategy, make_candles, start_bar = CASES[case]
    strategy = make_strategy()
    capital = 10_000.0 if strategy.strategy_id == "busy" else 1_000_000.0
    ours, lines = check(strategy, make_candles(), start_bar, capital, tmp_path)
    print(f"\n{case}: figure, ours, backtesting.py\n" + "\n".join(lines))
    assert ours["trades"] >= 5, "the case should exercise several trades"
    if "open at the end" in case:
        # backtesting.py's equity holds them, marked at the last close: so does ours
        assert len(ours["open_positions"]) == 2
        assert ours["unrealized_pnl"] == pytest.approx(
            sum(p["unrealized_pnl"] for p in ours["open_positions"])
        )
        assert ours["equity_final"] == pytest.approx(
            ours["capital"]
            + sum(ours["by_asset"]["BTC/USDT"][k] for k in ["pnl"])
            + ours["unrealized_pnl"],
            rel=1e-12,
        )
