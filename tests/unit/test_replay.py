"""Replay: the live evaluation bar by bar over history (DESIGN §9), and `python -m engine replay`.

Hand-checked trades on small crafted CSVs, equality with evaluating growing `Candles.head`
slices (no look-ahead), the CLI end to end, and a 10,000-bar run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine.adapters.candle_files import read_csv, write_csv
from engine.core.candles import Candles
from engine.core.evaluate import evaluate
from engine.core.market import MarketData
from engine.core.state import ClosedTrade, ExecutionState, Order
from engine.core.strategy import Strategy
from engine.service.replay import TRADE_FIELDS, replay

from tests.support.core import FLAT, T0, H, candles, dt, flat_bars, make_strategy, strategy_doc

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_STRATEGY = REPO / "examples" / "strategies" / "rsi_meanrev.json"
EXAMPLE_CANDLES = REPO / "examples" / "candles" / "btc_1h_sample.csv"

# Bars of a volume-spike entry followed by a stop two bars later (times 00:00 ... 05:00 UTC):
# bar 2 spikes (volume 10 > 5): long 2 at close 100, stop 2% below = 98, target 5% above = 105;
# bar 3 stays inside (low 99, high 101); bar 4 opens at 99.5 and trades down to 97: the stop
# fills at 98. PnL = (98 - 100) * 2 - fees (100*2*0.001 + 98*2*0.001) = -4 - 0.396 = -4.396.
STOP_CSV = """time,open,high,low,close,volume
2024-01-01T00:00:00Z,100,101,99,100,1
2024-01-01T01:00:00Z,100,101,99,100,1
2024-01-01T02:00:00Z,100,101,99,100,10
2024-01-01T03:00:00Z,100,101,99,100.5,1
2024-01-01T04:00:00Z,99.5,100,97,97.5,1
2024-01-01T05:00:00Z,97.5,98,97,97.5,1
"""


def stop_strategy() -> Strategy:
    return make_strategy(
        execution_config={
            "position_sizing": {"type": "fixed_quantity", "value": 2},
            "stop_loss": {"type": "percent", "value": 0.02},
            "take_profit": {"type": "percent", "value": 0.05},
            "fee_rate": 0.001,
        }
    )


def test_volume_spike_entry_then_stop_two_bars_later(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(STOP_CSV)
    result = replay(stop_strategy(), read_csv(path), progress=False)

    assert result.bars == 6
    assert result.asset == "BTC/USDT"
    (trade,) = result.trades
    assert trade.entry_time == dt(T0 + 2 * H)
    assert trade.exit_time == dt(T0 + 4 * H)
    assert (trade.entry_price, trade.exit_price, trade.quantity) == (100.0, 98.0, 2.0)
    assert trade.exit_reason == "stop_loss"
    assert trade.pnl == pytest.approx(-4.396, abs=1e-12)
    assert result.total_pnl == pytest.approx(-4.396, abs=1e-12)
    assert result.open_positions == []

    by_type = {order.type: order for order in result.orders}
    assert [o.type for o in result.orders] == ["market", "stop_loss", "take_profit"]
    assert (by_type["market"].status, by_type["market"].price) == ("filled", 100.0)
    assert (by_type["stop_loss"].status, by_type["stop_loss"].price) == ("filled", 98.0)
    assert by_type["stop_loss"].filled_at == dt(T0 + 4 * H)
    assert (by_type["take_profit"].status, by_type["take_profit"].price) == ("cancelled", 105.0)

    (line,) = result.trade_lines()
    record = json.loads(line)
    assert list(record) == list(TRADE_FIELDS)  # trades.json's columns, in their order
    assert record == {
        "asset": "BTC/USDT",
        "side": "long",
        "entry_time": "2024-01-01T02:00:00Z",
        "exit_time": "2024-01-01T04:00:00Z",
        "entry_price": 100.0,
        "exit_price": 98.0,
        "quantity": 2.0,
        "pnl": trade.pnl,
        "exit_reason": "stop_loss",
    }


def test_take_profit_on_a_gap_then_a_time_exit() -> None:
    strategy = make_strategy(
        execution_config={
            "stop_loss": {"type": "percent", "value": 0.02},
            "take_profit": {"type": "percent", "value": 0.05},
            "time_based_exits": {"max_hold_bars": 3},
        }
    )
    bars = flat_bars(
        9,
        b1=(100, 100, 100, 100, 10),  # entry at 100: stop 98, target 105
        b2=(106, 107, 105.5, 106, 1),  # opens above the target: fills at the open, 106
        b3=(100, 100, 100, 100, 10),  # entry again at 100
        b6=(100, 101.5, 99.5, 101, 1),  # third bar held: time exit at the close, 101
    )
    result = replay(strategy, candles(bars), progress=False)
    assert [(t.exit_reason, t.entry_price, t.exit_price, t.pnl) for t in result.trades] == [
        ("take_profit", 100.0, 106.0, 6.0),
        ("time", 100.0, 101.0, 1.0),
    ]
    assert [t.exit_time for t in result.trades] == [dt(T0 + 2 * H), dt(T0 + 6 * H)]
    assert result.total_pnl == 7.0
    statuses = [(o.type, o.status) for o in result.orders]
    assert statuses == [
        ("market", "filled"),
        ("stop_loss", "cancelled"),
        ("take_profit", "filled"),
        ("market", "filled"),
        ("stop_loss", "cancelled"),
        ("take_profit", "cancelled"),
        ("market", "filled"),  # the time exit
    ]
    assert len({o.order_id for o in result.orders}) == len(result.orders)


def test_a_position_still_open_at_the_end_is_reported_not_traded() -> None:
    bars = flat_bars(5, b3=(100, 100, 100, 100, 10))
    result = replay(stop_strategy(), candles(bars), progress=False)
    assert result.trades == []
    (position,) = result.open_positions
    assert position.entry_time == dt(T0 + 3 * H)
    assert [(o.type, o.status) for o in result.orders] == [
        ("market", "filled"),
        ("stop_loss", "open"),
        ("take_profit", "open"),
    ]


# --- no look-ahead: the same decisions as evaluating growing histories ----------------------


def random_candles(n: int, seed: int) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
    open_ = np.r_[100.0, close[:-1]] * (1 + rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, n)))
    # a few missing hours: bars need not be contiguous in time
    times = T0 + np.cumsum(np.where(rng.random(n) < 0.03, 2 * H, H)).astype(np.int64)
    return Candles(times, open_, high, low, close, rng.uniform(1, 100, n))


def busy_strategy(**overrides: Any) -> Strategy:
    """RSI + SMA + ATR, crossing entries, ATR stop, risk-reward target, time exit, cooldown."""
    doc = strategy_doc(
        indicators={
            "rsi": {"fn": "RSI", "params": {"timeperiod": 14}},
            "sma": {"fn": "SMA", "params": {"timeperiod": 20}},
            "atr": {"fn": "ATR", "params": {"timeperiod": 14}},
        },
        execution_config={
            "position_sizing": {"type": "fixed_notional", "value": 1000},
            "max_open_positions": 2,
            "stop_loss": {"type": "atr", "indicator": "atr", "multiplier": 1.5},
            "take_profit": {"type": "risk_reward", "ratio": 1.5},
            "time_based_exits": {"max_hold_bars": 12},
            "fee_rate": 0.001,
            "cooldown_config": {"1h": {"short_loss_limit": 2, "short_window_bars": 6}},
        },
    )
    doc["entry"] = {  # replaced, not merged with the default entry
        "any": [
            {"left": "rsi", "op": "crosses_above", "right": 40},
            {"left": "close", "op": "crosses_above", "right": "sma"},
        ]
    }
    doc["exit"] = {"all": [{"left": "rsi", "op": ">", "right": 65}]}
    doc.update(overrides)
    return Strategy.model_validate(doc)


def informative_strategy() -> Strategy:
    """The busy strategy, entering only above a 4h SMA (an informative timeframe)."""
    strategy = busy_strategy()
    doc = strategy.model_dump(mode="json", by_alias=True)
    doc["indicators"]["sma4h"] = {"fn": "SMA", "params": {"timeperiod": 5}, "timeframe": "4h"}
    doc["entry"] = {"all": [doc["entry"], {"left": "close", "op": ">", "right": "sma4h"}]}
    return Strategy.model_validate(doc)


@pytest.mark.parametrize("make", [busy_strategy, informative_strategy])
def test_replay_equals_evaluating_growing_histories_bar_by_bar(make: Any) -> None:
    strategy = make()
    history = random_candles(400, seed=7)
    result = replay(strategy, history, progress=False)

    state = ExecutionState(strategy_id=strategy.strategy_id)
    trades: list[ClosedTrade] = []
    orders: dict[str, Order] = {}
    for i in range(len(history)):
        # a fresh market holding only the bars up to i: nothing later can be seen
        market = MarketData({("BTC/USDT", "1h"): history.head(i + 1)})
        step = evaluate(strategy, state, market, int(history.time[i]) + H)
        state = step.state
        trades += step.closed_trades
        orders.update((o.order_id, o) for o in step.orders)

    assert len(trades) >= 5, "the series should exercise several trades"
    assert {t.exit_reason for t in trades} >= {"stop_loss", "take_profit"}
    assert result.trades == trades
    assert result.orders == list(orders.values())
    assert result.final_state == state


def test_later_bars_change_no_earlier_decision() -> None:
    strategy = busy_strategy()
    history = random_candles(300, seed=11)
    full = replay(strategy, history, progress=False)
    cut = 200
    part = replay(strategy, history.head(cut), progress=False)
    cutoff = dt(int(history.time[cut - 1]))
    assert part.trades == [t for t in full.trades if t.exit_time <= cutoff]
    assert part.trades, "the first part should already hold trades"


# --- assets, timeframe, input checks ---------------------------------------------------------


def test_several_assets_need_an_asset() -> None:
    strategy = make_strategy(assets=["BTC/USDT", "ETH/USDT"])
    history = candles(flat_bars(5, b2=(100, 100, 100, 100, 10)))
    with pytest.raises(ValueError, match=r"several assets \(BTC/USDT, ETH/USDT\).*--asset"):
        replay(strategy, history, progress=False)
    with pytest.raises(ValueError, match="'SOL/USDT' is not one of"):
        replay(strategy, history, asset="SOL/USDT", progress=False)
    result = replay(strategy, history, asset="ETH/USDT", progress=False)
    assert result.asset == "ETH/USDT"
    assert [o.asset for o in result.orders] == ["ETH/USDT"]
    assert "no_market_data" not in result.warning_counts


def test_candles_finer_than_the_timeframe_are_refused() -> None:
    history = candles([FLAT] * 5, step=60_000)
    with pytest.raises(ValueError) as info:
        replay(make_strategy(), history, progress=False)
    assert str(info.value) == (
        "a candle opens at 2024-01-01T00:01:00Z, which is not the open of a 1h bar: "
        "replay needs 1h candles"
    )


def test_candles_coarser_than_the_timeframe_are_refused() -> None:
    # 4h bars replayed as a 1h strategy would stretch max_hold_bars and cooldown windows 4x
    history = candles([FLAT] * 5, step=4 * H)
    with pytest.raises(ValueError) as info:
        replay(make_strategy(), history, progress=False)
    assert str(info.value) == (
        "candles are 4h apart at the closest, coarser than the strategy's timeframe 1h: "
        "replay needs 1h candles"
    )


def test_hourly_candles_with_gaps_are_replayed() -> None:
    # a closed market adds no bars: gaps are fine as long as some bars are one hour apart
    history = candles([FLAT] * 4, times=[T0, T0 + H, T0 + 10 * H, T0 + 11 * H])
    assert replay(make_strategy(), history, progress=False).bars == 4


def test_empty_candles_are_refused() -> None:
    with pytest.raises(ValueError, match="no candles"):
        replay(make_strategy(), Candles.empty(), progress=False)


def test_warm_up_warnings_are_collected_once() -> None:
    result = replay(busy_strategy(), random_candles(100, seed=1), progress=False)
    codes = [w.code for w in result.warnings]
    assert codes.count("undefined_value") == len(
        {w.message for w in result.warnings if w.code == "undefined_value"}
    )
    assert result.warning_counts["undefined_value"] >= 14


# --- the CLI, end to end ----------------------------------------------------------------------


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_cli_replay_writes_trades_and_orders(tmp_path: Path) -> None:
    strategy_file = tmp_path / "s.json"
    strategy_file.write_text(json.dumps(stop_strategy().model_dump(mode="json", by_alias=True)))
    candles_file = tmp_path / "c.csv"
    candles_file.write_text(STOP_CSV)
    out = tmp_path / "out" / "run1"

    done = run_cli("replay", "--strategy", strategy_file, "--candles", candles_file, "--out", out)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "6 bars, 1 trades, pnl -4.40" in lines[0]
    assert "Return" in lines[1], "the stats table follows the summary line"

    trades = json.loads((out / "trades.json").read_text())
    assert isinstance(trades, list)
    (trade,) = trades
    assert list(trade) == list(TRADE_FIELDS)
    assert trade["entry_time"] == "2024-01-01T02:00:00Z"
    assert trade["exit_time"] == "2024-01-01T04:00:00Z"
    assert trade["exit_reason"] == "stop_loss"
    assert trade["pnl"] == pytest.approx(-4.396, abs=1e-12)

    orders = json.loads((out / "orders.json").read_text())
    assert isinstance(orders, list)
    assert len(orders) == 3
    for order in orders:
        assert set(order) == set(Order.model_fields)
        Order.model_validate(order)
    assert sorted(o["status"] for o in orders) == ["cancelled", "filled", "filled"]


def test_cli_replay_of_the_examples(tmp_path: Path) -> None:
    done = run_cli(
        "replay",
        "--strategy",
        EXAMPLE_STRATEGY,
        "--candles",
        EXAMPLE_CANDLES,
        "--out",
        tmp_path,
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert f"{len(read_csv(EXAMPLE_CANDLES)):,} bars" in done.stdout
    for name in ("trades.json", "orders.json", "stats.json", "equity.csv", "report.html"):
        assert (tmp_path / name).is_file(), name
    trades = json.loads((tmp_path / "trades.json").read_text())
    assert trades, "the example strategy should trade on the sample candles"
    assert all(list(t) == list(TRADE_FIELDS) for t in trades)


def test_cli_invalid_strategy_lists_every_problem(tmp_path: Path) -> None:
    doc = strategy_doc(
        indicators={"rsi": {"fn": "RSX", "params": {}}},
        entry={"left": "rsi2", "op": "<", "right": 30},
    )
    doc["execution_config"] = {"take_profit": {"type": "risk_reward", "ratio": 2}}
    strategy_file = tmp_path / "bad.json"
    strategy_file.write_text(json.dumps(doc))
    candles_file = tmp_path / "c.csv"
    candles_file.write_text(STOP_CSV)

    done = run_cli(
        "replay", "--strategy", strategy_file, "--candles", candles_file, "--out", tmp_path / "o"
    )
    assert done.returncode == 2
    assert "invalid strategy" in done.stderr
    assert "indicators.rsi.fn" in done.stderr
    assert "RSX" in done.stderr
    assert not (tmp_path / "o").exists()


def test_cli_bad_inputs_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    strategy_file = tmp_path / "s.json"
    strategy_file.write_text(json.dumps(strategy_doc(assets=["BTC/USDT", "ETH/USDT"])))
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(STOP_CSV)
    bad.write_text(STOP_CSV.replace("100.5", "oops"))

    done = run_cli("replay", "--strategy", strategy_file, "--candles", good, "--out", tmp_path)
    assert done.returncode == 2
    assert "--asset" in done.stderr

    done = run_cli(
        "replay", "--strategy", strategy_file, "--candles", bad, "--out", tmp_path,
        "--asset", "BTC/USDT",
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{bad}: line 5: close is not a number: 'oops'" in done.stderr

    not_json = tmp_path / "x.json"
    not_json.write_text("{nope")
    done = run_cli("replay", "--strategy", not_json, "--candles", good, "--out", tmp_path)
    assert done.returncode == 2
    assert "not valid JSON: line 1" in done.stderr


def test_write_csv_fixture_replays_like_the_candles(tmp_path: Path) -> None:
    history = random_candles(300, seed=3)
    path = tmp_path / "h.csv"
    write_csv(path, history)
    strategy = busy_strategy()
    assert (
        replay(strategy, read_csv(path), progress=False).trades
        == replay(strategy, history, progress=False).trades
    )


def test_progress_bar_only_on_long_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    history = random_candles(200, seed=2)
    replay(busy_strategy(), history, progress=True)  # far quicker than the delay: silent
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("engine.service.replay.PROGRESS_DELAY_S", 0.0)
    replay(busy_strategy(), history, progress=True)
    assert "bar" in capsys.readouterr().err
    replay(busy_strategy(), history, progress=False)
    assert capsys.readouterr().err == ""
