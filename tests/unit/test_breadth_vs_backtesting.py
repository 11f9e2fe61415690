"""Parity with backtesting.py 0.6.6 (DESIGN §11): the short side, a long/short reversal and a
close-ratcheted percent trailing stop trade identically (bars, prices, PnL) on its bundled
GOOG data, backtesting.py deciding with its own signals, `sell()` and `TrailingStrategy`.

backtesting.py runs in .venv-yardstick (tests/yardstick/venv.py); `trade_on_close=True` is
its way of filling a signal at the close of the bar that raised it, as the engine does.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine.core.candles import Candles
from engine.core.strategy import parse_strategy
from engine.core.timeframes import to_ms
from engine.service.replay import replay

from tests.yardstick.venv import yardstick_python

pytestmark = pytest.mark.slow  # three backtesting.py processes (pandas) of some seconds each

RUNNER = Path(__file__).resolve().parents[1] / "yardstick" / "run_parity.py"
FAST, SLOW, SIZE, PCT = 10, 20, 10, 0.05
ABOVE = {"left": "fast", "op": "crosses_above", "right": "slow"}
BELOW = {"left": "fast", "op": "crosses_below", "right": "slow"}
NEVER = {"left": "volume", "op": "<", "right": 0}

CASES: dict[str, dict[str, Any]] = {
    "short_only": {"entry": NEVER, "short_entry": BELOW, "short_exit": ABOVE},
    "reversal": {"entry": ABOVE, "exit": BELOW, "short_entry": BELOW, "short_exit": ABOVE},
    "trailing_percent": {
        "entry": ABOVE,
        "execution_config": {"stop_loss": {"type": "trailing_percent", "value": PCT}},
    },
}


def backtesting_py(case: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(yardstick_python()), str(RUNNER), case, f"{FAST},{SLOW}", str(SIZE), str(PCT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@pytest.mark.parametrize("case", list(CASES))
def test_trades_equal_backtesting_py(case: str) -> None:
    theirs = backtesting_py(case)
    candles = Candles(
        np.array(theirs["time"], dtype=np.int64),
        *(np.array(theirs[k], dtype=float) for k in ("open", "high", "low", "close", "volume")),
    )
    config = {"position_sizing": {"type": "fixed_quantity", "value": SIZE}}
    doc = {
        "strategy_id": f"parity-{case}".replace("_", "-"),
        "name": case,
        "assets": ["GOOG"],
        "timeframe": "1d",
        "indicators": {
            "fast": {"fn": "SMA", "params": {"timeperiod": FAST}},
            "slow": {"fn": "SMA", "params": {"timeperiod": SLOW}},
        },
        **CASES[case],
    }
    doc["execution_config"] = {**config, **doc.get("execution_config", {})}
    ours = replay(parse_strategy(doc), candles, progress=False)

    trades = theirs["trades"]
    assert len(trades) > 20  # enough to mean something
    assert len(ours.trades) == len(trades)
    mine = sorted(ours.trades, key=lambda t: (t.entry_time, t.exit_time))
    for trade, row in zip(
        mine, sorted(trades, key=lambda r: (r["entry_ms"], r["exit_ms"])), strict=True
    ):
        assert (trade.side == "short") == (row["size"] < 0)
        assert to_ms(trade.entry_time) == row["entry_ms"]
        assert to_ms(trade.exit_time) == row["exit_ms"]
        assert trade.entry_price == pytest.approx(row["entry_price"], rel=1e-12)
        assert trade.exit_price == pytest.approx(row["exit_price"], rel=1e-12)
        assert trade.pnl == pytest.approx(row["pnl"], rel=1e-9, abs=1e-9)
    if case == "short_only":
        assert {t.side for t in mine} == {"short"}
    if case == "reversal":
        assert {t.side for t in mine} == {"long", "short"}
    if case == "trailing_percent":
        assert {t.exit_reason for t in mine} == {"stop_loss"}
