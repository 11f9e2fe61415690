"""The replay report (DESIGN §10) on hand-computed cases: the account marked to market, figures
that are undefined, cooldown counts, several assets in one account, and the CLI end to end.
The figures themselves are compared with backtesting.py in test_report_vs_backtesting.py.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine.adapters.candle_files import write_csv
from engine.core.strategy import Strategy
from engine.service.replay import replay
from engine.service.report.build import build_report
from engine.service.report.stats import iso_duration

from tests.support.core import FLAT, T0, H, candles, flat_bars, make_strategy

REPO = Path(__file__).resolve().parents[2]


def stop_strategy(**config: object) -> Strategy:
    return make_strategy(
        execution_config={
            "position_sizing": {"type": "fixed_quantity", "value": 2},
            "stop_loss": {"type": "percent", "value": 0.02},
            "take_profit": {"type": "percent", "value": 0.05},
            "fee_rate": 0.001,
            **config,
        }
    )


# bar 2 enters 2 at 100 (fee 0.2); bar 3 closes at 100.5; bar 4 stops out at 98 (fee 0.196)
STOP_BARS = flat_bars(
    6,
    b2=(100, 101, 99, 100, 10),
    b3=(100, 101, 99, 100.5, 1),
    b4=(99.5, 100, 97, 97.5, 1),
    b5=(97.5, 98, 97, 97.5, 1),
)


def test_equity_is_marked_to_market_at_every_close() -> None:
    result = replay(stop_strategy(), candles(STOP_BARS), progress=False)
    report = build_report(result, capital=1000)
    curve = report.curve
    np.testing.assert_allclose(
        curve.equity,
        [1000, 1000, 1000 - 0.2, 1000 + 2 * 0.5 - 0.2, 1000 - 4.396, 1000 - 4.396],
        rtol=0,
        atol=1e-12,
    )
    assert curve.open_positions.tolist() == [0, 0, 1, 1, 0, 0]
    assert curve.in_trade.tolist() == [False, False, True, True, True, False]
    peak = 1000 + 0.8
    assert curve.drawdown[4] == pytest.approx(1 - (1000 - 4.396) / peak, rel=1e-12)
    stats = report.stats
    assert stats["return_pct"] == pytest.approx(-0.4396, rel=1e-12)
    assert stats["equity_peak"] == pytest.approx(peak, rel=1e-12)
    assert stats["trades"] == 1
    assert stats["worst_trade_pct"] == pytest.approx(-4.396 / 200 * 100, rel=1e-12)
    assert stats["fees"] == pytest.approx(0.396, rel=1e-12)
    assert stats["by_exit_reason"]["stop_loss"] == {"trades": 1, "pnl": pytest.approx(-4.396)}
    assert stats["by_exit_reason"]["take_profit"] == {"trades": 0, "pnl": 0.0}
    assert stats["max_trade_duration"] == "PT2H"
    assert stats["duration"] == "PT5H"


def test_a_position_open_at_the_end_is_marked_at_the_last_close() -> None:
    bars = flat_bars(5, b3=(100, 100, 100, 100, 10))
    bars[4] = (100, 101, 99.5, 101, 1)
    result = replay(stop_strategy(), candles(bars), progress=False)
    stats = build_report(result, capital=1000).stats
    (position,) = stats["open_positions"]
    assert position["mark_price"] == 101
    assert position["unrealized_pnl"] == pytest.approx(2 * 1 - 0.2, rel=1e-12)
    assert position["stop_loss_price"] == 98 and position["take_profit_price"] == 105
    assert stats["equity_final"] == pytest.approx(1000 + 1.8, rel=1e-12)
    assert stats["trades"] == 0 and stats["exposure_time_pct"] == 0  # as backtesting.py


def test_figures_without_trades_or_losses_are_null() -> None:
    flat = build_report(replay(stop_strategy(), candles([FLAT] * 30), progress=False)).stats
    for key in (
        "win_rate_pct",
        "best_trade_pct",
        "worst_trade_pct",
        "avg_trade_pct",
        "max_trade_duration",
        "avg_trade_duration",
        "profit_factor",
        "expectancy_pct",
        "sqn",
        "max_drawdown_duration",
        "avg_drawdown_pct",
    ):
        assert flat[key] is None, key
    assert flat["trades"] == 0 and flat["max_drawdown_pct"] == 0.0
    assert flat["return_pct"] == 0.0

    # one winner (a target at 105) and nothing lost: no profit factor, no SQN of one trade
    bars = flat_bars(6, b1=(100, 100, 100, 100, 10), b3=(104, 106, 103, 105, 1))
    won = build_report(replay(stop_strategy(fee_rate=0), candles(bars), progress=False)).stats
    assert won["trades"] == 1 and won["win_rate_pct"] == 100.0
    assert won["profit_factor"] is None and won["sqn"] is None
    assert won["best_trade_pct"] == pytest.approx(5.0, rel=1e-12)
    json.dumps(won, allow_nan=False)  # nothing NaN or infinite reaches stats.json


def test_cooldown_trips_and_the_entries_they_blocked() -> None:
    # a pause of 3 bars after every loss (L=1, W=3): two stops, each followed by signals
    strategy = stop_strategy(
        fee_rate=0,
        cooldown_config={"1h": {"short_loss_limit": 1, "short_window_bars": 3}},
    )
    signal = (100, 100, 100, 100, 10)
    stop = (99, 99, 97, 97.5, 1)
    bars = flat_bars(
        16,
        b1=signal,
        b2=stop,  # loss at bar 2: entries blocked at bars 2..5
        b3=signal,
        b4=signal,  # two signals blocked (bars 3 and 4)
        b6=signal,  # allowed again: enters
        b7=stop,  # loss at bar 7: blocked 7..10
        b9=signal,  # one blocked
        b12=signal,  # allowed
    )
    result = replay(strategy, candles(bars), progress=False)
    stats = build_report(result).stats
    assert [t.entry_time.hour for t in result.trades] == [1, 6]
    assert stats["cooldown_trips"] == 2
    assert stats["entries_blocked_by_cooldown"] == 3
    assert stats["by_asset"]["BTC/USDT"]["cooldown_trips"] == 2
    assert len(stats["open_positions"]) == 1  # the entry at bar 12


def test_two_assets_in_one_account_add_up() -> None:
    strategy = stop_strategy(fee_rate=0.001)
    two = strategy.model_copy(update={"assets": ["BTC/USDT", "ETH/USDT"]})
    btc = candles(STOP_BARS)
    eth_bars = flat_bars(8, b1=(100, 100, 100, 100, 10), b6=(104, 106, 103, 105, 1))
    eth = candles(eth_bars, start=T0 + 2 * H)  # starts later, ends later
    alone = {
        "BTC/USDT": build_report(replay(strategy, btc, progress=False), capital=1000),
        "ETH/USDT": build_report(replay(two, eth, asset="ETH/USDT", progress=False), capital=1000),
    }
    both = build_report(replay(two, {"BTC/USDT": btc, "ETH/USDT": eth}, progress=False), 1000)
    assert both.stats["bars"] == 10  # 00:00 .. 09:00, the union of both clocks
    assert both.stats["trades"] == 2
    assert both.stats["by_asset"]["ETH/USDT"]["pnl"] == pytest.approx(
        alone["ETH/USDT"].stats["equity_final"] - 1000
    )
    # at every bar the account is the sum of what each asset made alone up to then
    for i, t in enumerate(both.curve.time.tolist()):
        made = 0.0
        for report in alone.values():
            k = int(np.searchsorted(report.curve.time, t, side="right")) - 1
            made += report.curve.equity[k] - 1000 if k >= 0 else 0.0
        assert both.curve.equity[i] == pytest.approx(1000 + made, abs=1e-9)


def test_iso_durations() -> None:
    assert iso_duration(0) == "PT0S"
    assert iso_duration(3 * 86_400_000 + 4 * 3_600_000) == "P3DT4H"
    assert iso_duration(15 * 60_000) == "PT15M"
    assert iso_duration(86_400_000) == "P1D"


# --- the CLI ---------------------------------------------------------------------------------


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_cli_replays_a_directory_as_one_account_within_a_window(tmp_path: Path) -> None:
    strategy = stop_strategy(cooldown_bars=2)  # legacy key: warns on every bar
    doc = strategy.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["assets"] = ["BTC/USDT", "ETH/USDT"]
    (tmp_path / "s.json").write_text(json.dumps(doc))
    data = tmp_path / "candles"
    data.mkdir()
    write_csv(data / "BTC_USDT_1h.csv", candles(STOP_BARS * 4))
    write_csv(data / "ETH_USDT_1h.csv", candles(STOP_BARS * 4, start=T0 + H))
    out = tmp_path / "out"
    done = run_cli(
        "replay",
        "--strategy", tmp_path / "s.json",
        "--candles", data,
        "--out", out,
        "--capital", "5000",
        "--from", "2024-01-01T02:00:00Z",
        "--to", "2024-01-01T20:00",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["capital"] == 5000
    assert (stats["start"], stats["end"], stats["bars"]) == (
        "2024-01-01T02:00:00Z",
        "2024-01-01T20:00:00Z",
        19,
    )
    assert set(stats["by_asset"]) == {"BTC/USDT", "ETH/USDT"}
    for key in ("sharpe_ratio", "max_drawdown_duration", "entries_blocked_by_cooldown"):
        assert key in stats
    with open(out / "equity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["time", "equity", "drawdown_pct", "open_positions"]
    assert len(rows) == 19 and rows[0]["time"] == "2024-01-01T02:00:00Z"
    assert float(rows[-1]["equity"]) == pytest.approx(stats["equity_final"])
    assert all(float(r["drawdown_pct"]) <= 0 for r in rows)
    # the deprecation: once, with its count; the log's per-bar copies are gone
    assert done.stderr.count("uses the deprecated flat cooldown keys") == 1, done.stderr
    assert "(19 times in this replay)" in done.stderr
    # the terminal ends with the stats table
    assert "Sharpe" in done.stdout and "Max drawdown" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--capital", "0"], "--capital must be a positive amount"),
        (["--from", "yesterday"], "--from 'yesterday': not an ISO 8601 date"),
        (["--from", "2024-02-01", "--to", "2024-01-01"], "is after --to"),
        (["--from", "2030-01-01"], "no candles between --from and --to"),
    ],
)
def test_cli_bad_report_options_are_one_line_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "s.json").write_text(
        json.dumps(stop_strategy().model_dump(mode="json", by_alias=True, exclude_none=True))
    )
    write_csv(tmp_path / "c.csv", candles(STOP_BARS))
    done = run_cli(
        "replay", "--strategy", tmp_path / "s.json", "--candles", tmp_path / "c.csv",
        "--out", tmp_path / "o", *args,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_cli_a_directory_missing_an_asset_names_the_file(tmp_path: Path) -> None:
    doc = stop_strategy().model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["assets"] = ["BTC/USDT", "ETH/USDT"]
    (tmp_path / "s.json").write_text(json.dumps(doc))
    write_csv(tmp_path / "BTC_USDT_1h.csv", candles(STOP_BARS))
    done = run_cli(
        "replay", "--strategy", tmp_path / "s.json", "--candles", tmp_path, "--out", tmp_path / "o"
    )
    assert done.returncode == 2
    assert "no candles file ETH_USDT_1h.csv|.parquet" in done.stderr


def test_equity_csv_columns_are_exact_and_iso() -> None:
    """The column writers behind equity.csv: times as ISO seconds (pre-1970, sub-second and
    leap-day times too), numbers that read back as the very floats (-0.0 written 0.0)."""
    from engine.service.report.build import _iso_seconds, _numbers

    times = np.array(
        [0, 999, -1, 1_709_164_800_000, 1_709_251_199_500, -86_400_000 * 365], dtype=np.int64
    )
    assert _iso_seconds(times) == [
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2024-02-29T00:00:00Z",
        "2024-02-29T23:59:59Z",
        "1969-01-01T00:00:00Z",
    ]
    rng = np.random.default_rng(7)
    ms = rng.integers(-(10**12), 4 * 10**12, 2_000)
    expected = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="s").tolist()
    assert _iso_seconds(ms) == [f"{s}Z" for s in expected]

    values = np.r_[
        -0.0, 0.0, 1e-5, -6.0794266565356025e-05, 1e16, 10_000.0, rng.normal(0, 1e4, 500)
    ]
    written = _numbers(values)
    assert written[:2] == ["0.0", "0.0"]
    assert [float(x) for x in written] == values.tolist()
    assert _numbers(np.array([])) == []
