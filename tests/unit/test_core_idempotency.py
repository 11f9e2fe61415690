"""Retries change nothing; ids are derived from (strategy, asset, bar, kind) (DESIGN §4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from engine.core import ids
from engine.core.evaluate import evaluate

from tests.support.core import (
    SIGNAL,
    T0,
    Driver,
    H,
    candles,
    empty_state,
    flat_bars,
    hour,
    make_strategy,
    now_after,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = {
    "stop_loss": {"type": "percent", "value": 0.05},
    "take_profit": {"type": "percent", "value": 0.25},
    "max_open_positions": 2,
    "cooldown_config": {"1h": {"short_loss_limit": 1, "short_window_bars": 2}},
}


def assert_retry_changes_nothing(driver: Driver, index: int) -> None:
    first = driver.results[-1]
    again = evaluate(driver.strategy, first.state, driver.market, now_after(driver.primary, index))
    assert again.changes.empty, again.changes
    assert again.state == first.state
    assert again.closed_trades == []
    known = {o.order_id: o.status for o in first.orders}
    known.update({o.order_id: o.status for o in first.state.orders})
    assert {o.order_id: o.status for o in again.orders}.items() <= known.items()
    assert [p.position_id for p in again.positions] == [p.position_id for p in first.positions]
    assert again.cooldowns == first.cooldowns


def test_retry_at_an_entry_bar_creates_no_second_entry():
    # max_open_positions 2 and the entry signal still true: the retry must not enter again
    strategy = make_strategy(execution_config=CONFIG)
    driver = Driver(strategy, candles(flat_bars(5, b2=SIGNAL)))
    driver.at(2)
    assert len(driver.state.positions) == 1
    assert_retry_changes_nothing(driver, 2)


def test_retry_at_an_exit_and_reentry_bar():
    strategy = make_strategy(execution_config={**CONFIG, "cooldown_config": None})
    driver = Driver(strategy, candles(flat_bars(6, b2=SIGNAL, b3=(100, 130, 100, 100, 10))))
    driver.over([2, 3])
    result = driver.results[-1]
    assert len(result.closed_trades) == 1 and len(result.positions) == 1
    assert_retry_changes_nothing(driver, 3)


def test_retry_after_catch_up_losses_and_a_cooldown_trip():
    strategy = make_strategy(execution_config=CONFIG)
    driver = Driver(
        strategy, candles(flat_bars(9, b2=SIGNAL, b3=SIGNAL, b5=(100, 100, 90, 95, 1), b7=SIGNAL))
    )
    driver.over([2, 3, 7])
    result = driver.results[-1]
    assert len(result.closed_trades) == 2
    assert result.changes.cooldowns
    assert_retry_changes_nothing(driver, 7)


def test_retry_from_the_old_state_writes_the_same_items():
    # an attempt whose commit was lost is retried from the state it read: same items, same ids
    strategy = make_strategy(execution_config=CONFIG)
    c = candles(flat_bars(8, b2=SIGNAL, b4=(100, 100, 90, 95, 10)))
    driver = Driver(strategy, c)
    driver.at(2)
    before = driver.state
    first = evaluate(strategy, before, driver.market, now_after(c, 4))
    second = evaluate(strategy, before, driver.market, now_after(c, 4))
    assert first.changes == second.changes
    assert first.model_dump() == second.model_dump()
    assert first.state == second.state


# Ids are a stored-data format (docs/storage.md): these literals were computed outside the
# engine, as `printf '%s' 'test-strategy|BTC/USDT|1704074400000|position' | sha256sum`, first
# 24 hex digits. A change of derivation must fail here and ship with a migration.
POSITION_AT_BAR2 = "pos_3b58966e58807ae69e05473d"
ORDERS_AT_BAR2 = {
    "market": "ord_636f72c73c2660f664d4e78f",  # enter_long
    "stop_loss": "ord_b575a2e146ce5557c5bd433d",
    "take_profit": "ord_680e0be952efb19f465a4fde",
}
EXIT_AT_BAR4 = "ord_35eeade4a4bb9aab2f7bf3d0"  # exit_long of that position at bar 4


def test_ids_are_pinned_to_their_stored_values():
    strategy = make_strategy(execution_config={**CONFIG, "cooldown_config": None})
    driver = Driver(strategy, candles(flat_bars(6, b2=SIGNAL, b3=(100, 100, 90, 95, 1))))
    opened = driver.at(2)
    (position,) = opened.positions
    assert position.position_id == POSITION_AT_BAR2
    assert {o.type: o.order_id for o in opened.orders} == ORDERS_AT_BAR2
    assert {o.position_id for o in opened.orders} == {POSITION_AT_BAR2}
    # the stop fills at bar 3: the filled and the cancelled order keep their ids
    closed = driver.at(3)
    assert {(o.type, o.status): o.order_id for o in closed.changes.orders} == {
        ("stop_loss", "filled"): ORDERS_AT_BAR2["stop_loss"],
        ("take_profit", "cancelled"): ORDERS_AT_BAR2["take_profit"],
    }


def test_ids_change_with_strategy_asset_bar_and_kind():
    bar2 = T0 + 2 * H
    base = ids.position_id("s", "BTC/USDT", bar2)
    assert base != ids.position_id("t", "BTC/USDT", bar2)
    assert base != ids.position_id("s", "ETH/USDT", bar2)
    assert base != ids.position_id("s", "BTC/USDT", bar2 + H)
    assert ids.order_id(base, "stop_loss", bar2) != ids.order_id(base, "take_profit", bar2)
    assert ids.order_id(base, "exit_long", bar2) != ids.order_id(base, "exit_long", bar2 + H)


def test_signal_exit_order_id_is_pinned():
    strategy = make_strategy(exit={"left": "volume", "op": "<", "right": 0.5})
    driver = Driver(strategy, candles(flat_bars(6, b2=SIGNAL, b4=(100, 100, 100, 101, 0.1))))
    driver.over([2, 4])
    (exit_order,) = [o for o in driver.results[-1].orders if o.side == "exit_long"]
    assert (exit_order.order_id, exit_order.position_id) == (EXIT_AT_BAR4, POSITION_AT_BAR2)
    assert (exit_order.type, exit_order.reason, exit_order.created_at) == (
        "market",
        "signal",
        hour(4),
    )


_SCRIPT = textwrap.dedent(
    """
    import json
    from tests.support.core import SIGNAL, Driver, candles, flat_bars, make_strategy
    strategy = make_strategy(
        assets=["AAA/USD", "BBB/USD"],
        execution_config={
            "stop_loss": {"type": "percent", "value": 0.05},
            "max_open_positions": 2,
        },
        exit={"left": "volume", "op": "<", "right": 0.5},
    )
    a = candles(flat_bars(8, b2=SIGNAL, b3=SIGNAL, b5=(100, 100, 90, 95, 0.1), b6=SIGNAL))
    b = candles(flat_bars(8, b1=SIGNAL, b4=(100, 100, 100, 100, 0.1)))
    driver = Driver(strategy, {"AAA/USD": a, "BBB/USD": b})
    driver.over(range(8))
    out = [
        sorted((o.order_id, o.position_id, o.status) for o in r.orders) for r in driver.results
    ]
    print(json.dumps(out))
    """
)


def test_ids_are_the_same_in_another_process_with_another_hash_seed():
    def run(seed: str) -> list:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return json.loads(done.stdout)

    first, second = run("1"), run("12345")
    assert first == second
    assert sum(len(r) for r in first) > 5  # orders were created
    # and the same as in this process
    strategy_run = {}
    exec(compile(_SCRIPT.replace("print(json.dumps(out))", ""), "<ids>", "exec"), strategy_run)
    assert json.loads(json.dumps(strategy_run["out"])) == first


def test_empty_state_evaluation_without_signal_changes_nothing():
    strategy = make_strategy()
    result = Driver(strategy, candles(flat_bars(3))).at(2)
    assert result.changes.empty
    assert result.state == empty_state(strategy)
