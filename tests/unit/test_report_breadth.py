"""The replay account with shorts and scale-out fills (DESIGN §10, §11), by hand.

1h bars from 2024-01-01 00:00 UTC; an entry fires at the close of a bar with volume > 5.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine.service.replay import replay
from engine.service.report.account import account_curve

from tests.support.core import ENTRY_ON_VOLUME, SIGNAL, candles, flat_bars, make_strategy

NEVER = {"left": "volume", "op": ">", "right": 1e12}


def curve(strategy, bars, fee_rate=0.0):  # type: ignore[no-untyped-def]
    c = candles(bars)
    result = replay(strategy, c, progress=False)
    return account_curve(
        c.time, {"BTC/USDT": c}, result.trades, result.open_positions, 10_000, fee_rate
    )


def test_a_short_gains_as_the_price_falls_and_its_entry_fee_is_paid_at_once():
    # 10 short at 100 (fee 0.1%: 1); closes 90 then 95: 10,000 + 10·(100 - close) - 1
    strategy = make_strategy(
        entry=NEVER,
        short_entry=ENTRY_ON_VOLUME,
        execution_config={
            "position_sizing": {"type": "fixed_quantity", "value": 10},
            "fee_rate": 0.001,
        },
    )
    bars = flat_bars(5, b2=SIGNAL, b3=(100, 100, 90, 90, 1), b4=(90, 95, 90, 95, 1))
    account = curve(strategy, bars, fee_rate=0.001)
    assert account.equity[2:5] == pytest.approx([9_999.0, 10_099.0, 10_049.0])
    assert account.open_positions.tolist() == [0, 0, 1, 1, 1]


def test_a_position_scaling_out_is_one_open_position_marked_on_what_it_still_holds():
    # 1 at 100, targets 112.5 and 125 half each. Bar 3 fills the first (+6.25) and closes
    # 111: 10,006.25 + 0.5·11 = 10,011.75. Bar 4 closes 120: 10,006.25 + 0.5·20 = 10,016.25.
    # Bar 5 fills the second at 125 (+12.5): 10,018.75, nothing open.
    strategy = make_strategy(
        execution_config={
            "take_profit": [
                {"type": "percent", "value": 0.125, "fraction": 0.5},
                {"type": "percent", "value": 0.25, "fraction": 0.5},
            ]
        }
    )
    bars = flat_bars(
        7,
        b2=SIGNAL,
        b3=(100, 113, 100, 111, 1),
        b4=(111, 120, 111, 120, 1),
        b5=(120, 126, 120, 126, 1),
        b6=(126, 126, 126, 126, 1),
    )
    account = curve(strategy, bars)
    assert account.equity[2:7] == pytest.approx(
        [10_000.0, 10_011.75, 10_016.25, 10_018.75, 10_018.75]
    )
    assert account.open_positions.tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert np.all(account.in_trade[2:6])
