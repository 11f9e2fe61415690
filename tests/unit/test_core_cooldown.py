"""Loss-streak cooldowns (DESIGN §5), driven through evaluate() bar by bar.

Scripted losses: an entry signal (volume 10) at bar b-1 enters at close 100 with a 5% stop at
95; bar b dips to 90 and the stop fills at 95, a loss of 5 exiting at bar b. "Probe" bars
carry an entry signal too; whether a position opens there tells whether entries are blocked.
Bar indices are hours after 2024-01-01 00:00 UTC (or days, for the 1d tests).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from engine.core.cooldown import cooldown_rules, record_losses, status_at
from engine.core.evaluate import compile_strategy
from engine.core.state import CooldownState, ExecutionState, LossRecord, Position
from engine.core.strategy import Strategy, parse_strategy
from engine.core.timeframes import to_datetime
from pydantic import ValidationError

from tests.support.core import (
    FLAT,
    SIGNAL,
    T0,
    D,
    Driver,
    H,
    candles,
    cooldown_of,
    entries,
    hour,
    make_strategy,
    strategy_doc,
)

STOP = {"type": "percent", "value": 0.05}
A, B = "AAA/USD", "BBB/USD"


def scripted(n: int, losses: Iterable[int], probes: Iterable[int] = ()) -> list[tuple]:
    losses, probes = set(losses), set(probes)
    bars = []
    for i in range(n):
        signal = i in probes or (i + 1) in losses
        bars.append((100.0, 100.0, 90.0 if i in losses else 100.0, 100.0, 10.0 if signal else 1.0))
    return bars


def tiers_strategy(timeframe: str = "1h", assets=None, **tiers) -> Strategy:
    config = {"stop_loss": STOP, "cooldown_config": {timeframe: tiers}}
    extra = {"assets": assets} if assets else {}
    return make_strategy(timeframe=timeframe, execution_config=config, **extra)


def legacy_strategy(timeframe: str = "1h", **keys) -> Strategy:
    return make_strategy(timeframe=timeframe, execution_config={"stop_loss": STOP, **keys})


def run_all(strategy, bars, step: int = H, asset: str = "BTC/USDT"):
    """Evaluate at every bar; return (driver, entry bar indices, loss exit bar indices)."""
    c = candles(bars, step=step)
    driver = Driver(strategy, {asset: c})
    driver.over(range(len(bars)))
    entered = [i for i, r in enumerate(driver.results) if entries(r)]
    lost = [int((t.exit_time.timestamp() * 1000 - T0) // step) for t in driver.closed_trades]
    return driver, entered, lost


def status_tuple(result, asset: str = "BTC/USDT"):
    s = cooldown_of(result, asset)
    return (s.active, s.tier, s.until, s.remaining_bars)


# --- the DESIGN §5 example and the tiers ------------------------------------------------


def test_design_example_short_tier():
    # short tier L=2 W=3; losses exit at 10:00 and 12:00 -> blocked 12:00..15:00, 16:00 allowed
    strategy = tiers_strategy(short_loss_limit=2, short_window_bars=3)
    bars = scripted(20, losses=[10, 12], probes=range(12, 17))
    driver, entered, lost = run_all(strategy, bars)
    assert lost == [10, 12]
    assert entered == [9, 11, 16]
    r = driver.results
    assert status_tuple(r[10]) == (False, None, None, 0)  # one loss: no trip
    assert status_tuple(r[11]) == (False, None, None, 0)
    assert status_tuple(r[12]) == (True, "short", hour(15), 4)
    assert status_tuple(r[13]) == (True, "short", hour(15), 3)
    assert status_tuple(r[14]) == (True, "short", hour(15), 2)
    assert status_tuple(r[15]) == (True, "short", hour(15), 1)  # the bar before expiry
    assert status_tuple(r[16]) == (False, None, None, 0)  # expired: the entry goes through
    # the cooldown state is written when the losing trades close, not on every bar
    assert [i for i, res in enumerate(r) if res.changes.cooldowns] == [10, 12]


def test_short_window_excludes_the_bar_w_bars_before():
    # losses at 10 and 13 with W=3: the window at 13 is (10, 13], so only one loss counts
    strategy = tiers_strategy(short_loss_limit=2, short_window_bars=3)
    bars = scripted(18, losses=[10, 13], probes=[13, 14])
    driver, entered, lost = run_all(strategy, bars)
    assert lost == [10, 13]
    assert entered == [9, 12, 13]  # re-entry at 13 right after the losing exit: not blocked
    assert all(not cooldown_of(res).active for res in driver.results)


def test_long_tier():
    # long tier L=3 W=10: losses at 2, 5, 8 -> trips at 8 (window (-2, 8]), blocked 8..18
    strategy = tiers_strategy(long_loss_limit=3, long_window_bars=10)
    bars = scripted(22, losses=[2, 5, 8], probes=range(8, 20))
    driver, entered, lost = run_all(strategy, bars)
    assert lost == [2, 5, 8]
    assert entered == [1, 4, 7, 19]
    r = driver.results
    assert status_tuple(r[8]) == (True, "long", hour(18), 11)
    assert status_tuple(r[17]) == (True, "long", hour(18), 2)
    assert status_tuple(r[18]) == (True, "long", hour(18), 1)
    assert status_tuple(r[19]) == (False, None, None, 0)


def test_long_tier_window_boundary():
    # losses at 2, 5, 12: the window at 12 is (2, 12] -> two losses, below L=3
    strategy = tiers_strategy(long_loss_limit=3, long_window_bars=10)
    bars = scripted(16, losses=[2, 5, 12], probes=[13])
    _, entered, lost = run_all(strategy, bars)
    assert lost == [2, 5, 12]
    assert entered == [1, 4, 11, 13]


def test_both_tiers_trip_longer_window_rules_and_is_reported():
    # short L=2 W=3, long L=3 W=8; losses at 10, 13, 14.
    # at 13: short (10,13] has 1, long (5,13] has 2 -> nothing; the entry at 13 goes through.
    # at 14: short (11,14] has 2 -> until 17; long (6,14] has 3 -> until 22. Long rules.
    strategy = tiers_strategy(
        short_loss_limit=2, short_window_bars=3, long_loss_limit=3, long_window_bars=8
    )
    bars = scripted(26, losses=[10, 13, 14], probes=range(13, 24))
    driver, entered, lost = run_all(strategy, bars)
    assert lost == [10, 13, 14]
    assert entered == [9, 12, 13, 23]
    r = driver.results
    assert status_tuple(r[13]) == (False, None, None, 0)
    assert status_tuple(r[14]) == (True, "long", hour(22), 9)
    assert status_tuple(r[17]) == (True, "long", hour(22), 6)  # the short trip alone ends here
    assert status_tuple(r[18]) == (True, "long", hour(22), 5)
    assert status_tuple(r[22]) == (True, "long", hour(22), 1)
    assert status_tuple(r[23]) == (False, None, None, 0)


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(
            {
                "cooldown_config": {
                    "1h": {
                        "short_loss_limit": 1,
                        "short_window_bars": 3,
                        "long_loss_limit": 1,
                        "long_window_bars": 3,
                    }
                }
            },
            id="tiers-of-equal-windows",
        ),
        pytest.param(
            # legacy: both trips block for cooldown_bars; the weekly window is the longer one
            {"daily_momentum_limit": 1, "weekly_momentum_limit": 1, "cooldown_bars": 3},
            id="legacy-equal-blocks",
        ),
    ],
)
def test_both_tiers_tripping_to_the_same_bar_report_the_long_tier(config):
    # one loss at 10 trips both tiers: each blocks 10..13. The cooldown ends at 13 either way;
    # "the longer window rules" decides the reported tier: long.
    strategy = make_strategy(execution_config={"stop_loss": STOP, **config})
    bars = scripted(16, losses=[10], probes=range(10, 15))
    driver, entered, lost = run_all(strategy, bars)
    assert lost == [10]
    assert entered == [9, 14]
    r = driver.results
    assert status_tuple(r[10]) == (True, "long", hour(13), 4)
    assert status_tuple(r[13]) == (True, "long", hour(13), 1)
    assert status_tuple(r[14]) == (False, None, None, 0)


def test_a_trip_during_a_cooldown_extends_it_by_a_single_bar():
    # short L=1 W=2, two positions: entries at 8 (close 100, stop 95) and 9 (close 110,
    # stop 104.5). Bar 10 stops the second (a loss): blocked 10..12. Bar 11 stops the first
    # (a loss, read at a later evaluation): until = max(12, 11 + 2) = 13. Entry again at 14.
    strategy = make_strategy(
        execution_config={
            "stop_loss": STOP,
            "max_open_positions": 2,
            "cooldown_config": {"1h": {"short_loss_limit": 1, "short_window_bars": 2}},
        }
    )
    bars = [FLAT] * 16
    bars[8] = SIGNAL
    bars[9] = (100.0, 110.0, 100.0, 110.0, 10.0)
    bars[10] = (110.0, 110.0, 100.0, 105.0, 1.0)
    bars[11] = (100.0, 100.0, 90.0, 95.0, 1.0)
    for probe in (12, 13, 14):
        bars[probe] = SIGNAL
    driver, entered, lost = run_all(strategy, bars)
    assert lost == [10, 11]
    assert [t.exit_price for t in driver.closed_trades] == [104.5, 95.0]
    assert entered == [8, 9, 14]
    r = driver.results
    assert status_tuple(r[10]) == (True, "short", hour(12), 3)
    assert status_tuple(r[11]) == (True, "short", hour(13), 3)
    assert status_tuple(r[13]) == (True, "short", hour(13), 1)
    assert status_tuple(r[14]) == (False, None, None, 0)


def test_cooldown_until_is_a_maximum_a_later_shorter_trip_never_shortens_it():
    config = parse_strategy(
        strategy_doc(
            execution_config={
                "cooldown_config": {
                    "1h": {
                        "short_loss_limit": 1,
                        "short_window_bars": 2,
                        "long_loss_limit": 2,
                        "long_window_bars": 10,
                    }
                }
            }
        )
    ).execution_config
    rules = cooldown_rules(config, "1h")
    times_arr = np.array([T0 + i * H for i in range(40)], dtype=np.int64)
    state = CooldownState(asset=A)
    # loss at 3: short trips (until 5); loss at 5: long trips (until 15), short until 7
    state = record_losses(state, rules, times_arr, [(3, "p1"), (5, "p2")], 5)
    assert status_at(state, A, times_arr, 5, "1h").until == hour(15)
    assert status_at(state, A, times_arr, 5, "1h").tier == "long"
    # a loss at 14: short trips until 16; long (4, 14] holds 5 and 14 -> until 24.
    # max(15, 16, 24) = 24, long.
    state = record_losses(state, rules, times_arr, [(14, "p3")], 14)
    status = status_at(state, A, times_arr, 14, "1h")
    assert (status.tier, status.until, status.remaining_bars) == ("long", hour(24), 11)
    # a loss at 25 (long window (15, 25] holds only it): short trips until 27 > 24 -> short
    state = record_losses(state, rules, times_arr, [(25, "p4")], 25)
    status = status_at(state, A, times_arr, 25, "1h")
    assert (status.tier, status.until, status.remaining_bars) == ("short", hour(27), 3)
    # a loss at 26 -> short until 28; long (16, 26] holds 25, 26 -> until 36
    state = record_losses(state, rules, times_arr, [(26, "p5")], 26)
    status = status_at(state, A, times_arr, 26, "1h")
    assert (status.tier, status.until) == ("long", hour(36))
    # and the same governing trip still reads the same at a later bar
    assert status_at(state, A, times_arr, 36, "1h").remaining_bars == 1
    assert status_at(state, A, times_arr, 37, "1h").active is False


def test_cooldowns_are_per_asset():
    strategy = tiers_strategy(assets=[A, B], short_loss_limit=2, short_window_bars=3)
    a = candles(scripted(16, losses=[10, 12], probes=[13]))
    b = candles(scripted(16, losses=[], probes=[13]))
    driver = Driver(strategy, {A: a, B: b})
    driver.over(range(16))
    at13 = driver.results[13]
    assert status_tuple(at13, A) == (True, "short", hour(15), 3)
    assert status_tuple(at13, B) == (False, None, None, 0)
    assert [(o.asset, o.created_at) for o in entries(at13)] == [(B, hour(13))]
    assert set(at13.state.cooldowns) == {A}


def test_losses_of_different_assets_do_not_add_up():
    strategy = tiers_strategy(assets=[A, B], short_loss_limit=2, short_window_bars=3)
    a = candles(scripted(16, losses=[10], probes=[13]))
    b = candles(scripted(16, losses=[12], probes=[13]))
    driver = Driver(strategy, {A: a, B: b})
    driver.over(range(16))
    assert len(driver.closed_trades) == 2
    at13 = driver.results[13]
    assert not cooldown_of(at13, A).active and not cooldown_of(at13, B).active
    assert sorted(o.asset for o in entries(at13)) == [A, B]


def test_catch_up_losses_counted_at_their_exit_bars_in_time_order():
    # two positions: entered at 8 (close 100, stop 95) and 9 (close 120, stop 114).
    # missed bars: 10 stops the second (at 114), 12 stops the first (at 95).
    # The first-entered position exits last, so time order differs from position order.
    strategy = make_strategy(
        execution_config={
            "stop_loss": STOP,
            "max_open_positions": 2,
            "cooldown_config": {"1h": {"short_loss_limit": 2, "short_window_bars": 3}},
        }
    )
    bars = [FLAT] * 18
    bars[8] = SIGNAL
    bars[9] = (120, 120, 120, 120, 10)
    bars[10] = (119, 119, 110, 112, 1)
    bars[11] = (112, 112, 112, 112, 1)
    bars[12] = (100, 100, 90, 92, 1)
    bars[14] = bars[15] = bars[16] = SIGNAL
    driver = Driver(strategy, candles(bars))
    driver.over([8, 9])
    assert len(driver.state.positions) == 2
    result = driver.at(14)  # one evaluation catches up over bars 10..14
    trades = sorted(result.closed_trades, key=lambda t: t.exit_time)
    assert [(t.exit_time, t.exit_price) for t in trades] == [(hour(10), 114.0), (hour(12), 95.0)]
    # tripped at 12 (not at t=14): blocked until 15
    assert status_tuple(result) == (True, "short", hour(15), 2)
    assert entries(result) == []
    assert entries(driver.at(15)) == []
    assert len(entries(driver.at(16))) == 1


def test_cooldown_counts_candles_across_a_market_closure():
    # short L=1 W=2. Bars Monday 00..04, then closed until Wednesday 03:00.
    strategy = tiers_strategy(short_loss_limit=1, short_window_bars=2)
    hours = [0, 1, 2, 3, 4, 51, 52, 53, 54]
    bars = [FLAT, FLAT, SIGNAL, (100, 100, 90, 100, 10), SIGNAL, SIGNAL, SIGNAL, SIGNAL, FLAT]
    driver = Driver(strategy, candles(bars, times=[T0 + h * H for h in hours]))
    driver.over(range(len(bars)))
    entered = [i for i, r in enumerate(driver.results) if entries(r)]
    # loss at index 3 -> blocked at indices 3, 4, 5 (5 is 48 h later but only 2 candles)
    assert entered == [2, 6]
    assert cooldown_of(driver.results[5]).remaining_bars == 1


# --- legacy flat keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeframe", "keys", "expected"),
    [
        ("1h", {"daily_momentum_limit": 2}, [("short", 2, 24, 24)]),
        ("1h", {"weekly_momentum_limit": 5}, [("long", 5, 168, 168)]),
        (
            "1h",
            {"daily_momentum_limit": 2, "weekly_momentum_limit": 5},
            [("short", 2, 24, 24), ("long", 5, 168, 168)],
        ),
        (
            "1h",
            {"daily_momentum_limit": 2, "weekly_momentum_limit": 5, "cooldown_bars": 6},
            [("short", 2, 24, 6), ("long", 5, 168, 6)],
        ),
        (
            "1d",
            {"daily_momentum_limit": 2, "weekly_momentum_limit": 5},
            [("short", 2, 1, 1), ("long", 5, 7, 7)],
        ),
        (
            "4h",
            {"daily_momentum_limit": 1, "weekly_momentum_limit": 3},
            [("short", 1, 6, 6), ("long", 3, 42, 42)],
        ),
        # one day or week in bars is at least 1 bar
        (
            "1w",
            {"daily_momentum_limit": 1, "weekly_momentum_limit": 3},
            [("short", 1, 1, 1), ("long", 3, 1, 1)],
        ),
        ("1h", {"cooldown_bars": 4}, [("short", 1, 4, 4)]),
        ("1d", {"cooldown_bars": 2}, [("short", 1, 2, 2)]),
    ],
)
def test_legacy_keys_map_to_tiers(timeframe, keys, expected):
    config = legacy_strategy(timeframe, **keys).execution_config
    rules = cooldown_rules(config, timeframe)
    assert rules.legacy is True
    assert [(t.name, t.loss_limit, t.window_bars, t.block_bars) for t in rules.tiers] == expected


def test_legacy_daily_limit_on_1h_uses_a_24_bar_window():
    strategy = legacy_strategy(daily_momentum_limit=2)
    # losses at 10 and 33: window at 33 is (9, 33] -> trips, blocked 33..57
    bars = scripted(60, losses=[10, 33], probes=[34, 57, 58])
    driver, entered, lost = run_all(strategy, bars)
    assert lost == [10, 33]
    assert entered == [9, 32, 58]
    assert status_tuple(driver.results[33]) == (True, "short", hour(57), 25)
    assert status_tuple(driver.results[57]) == (True, "short", hour(57), 1)
    # losses at 10 and 34: window at 34 is (10, 34] -> one loss, no trip
    bars = scripted(40, losses=[10, 34], probes=[35])
    _, entered, lost = run_all(strategy, bars)
    assert lost == [10, 34]
    assert entered == [9, 33, 35]


def test_legacy_weekly_limit_on_1h_uses_a_168_bar_window():
    strategy = legacy_strategy(weekly_momentum_limit=2)
    # losses at 10 and 177: window (9, 177] -> trips, blocked until 177 + 168 = 345
    bars = scripted(350, losses=[10, 177], probes=[178, 345, 346])
    driver, entered, lost = run_all(strategy, bars)
    assert lost == [10, 177]
    assert entered == [9, 176, 346]
    assert status_tuple(driver.results[345]) == (True, "long", hour(345 - 336, day=14), 1)
    # losses at 10 and 178: window (10, 178] -> no trip
    bars = scripted(182, losses=[10, 178], probes=[179])
    _, entered, _ = run_all(strategy, bars)
    assert entered == [9, 177, 179]


def test_legacy_keys_on_1d_daily_is_one_bar_weekly_is_seven():
    # daily_momentum_limit=1 on 1d: W=1 -> a loss at day 3 blocks days 3 and 4
    strategy = legacy_strategy("1d", daily_momentum_limit=1)
    bars = scripted(8, losses=[3], probes=[3, 4, 5])
    driver, entered, lost = run_all(strategy, bars, step=D)
    assert lost == [3]
    assert entered == [2, 5]
    day4 = cooldown_of(driver.results[4])
    assert (day4.active, day4.tier, day4.remaining_bars) == (True, "short", 1)
    assert day4.until == hour(0, day=4)

    # weekly_momentum_limit=2 on 1d: W=7 -> losses at days 2 and 8 trip (window (1, 8]),
    # blocked days 8..15
    strategy = legacy_strategy("1d", weekly_momentum_limit=2)
    bars = scripted(18, losses=[2, 8], probes=[9, 15, 16])
    driver, entered, lost = run_all(strategy, bars, step=D)
    assert lost == [2, 8]
    assert entered == [1, 7, 16]
    assert status_tuple(driver.results[8])[:2] == (True, "long")
    assert cooldown_of(driver.results[8]).until == hour(0, day=15)
    # losses at days 1 and 8: window (1, 8] holds one -> no trip
    bars = scripted(12, losses=[1, 8], probes=[9])
    _, entered, _ = run_all(strategy, bars, step=D)
    assert entered == [0, 7, 9]


def test_legacy_cooldown_bars_sets_the_block_length_of_a_trip():
    # daily limit 2 (W=24) with cooldown_bars=5: losses at 10, 12 trip at 12, blocked 12..17
    strategy = legacy_strategy(daily_momentum_limit=2, cooldown_bars=5)
    bars = scripted(22, losses=[10, 12], probes=range(13, 19))
    driver, entered, _ = run_all(strategy, bars)
    assert entered == [9, 11, 18]
    assert status_tuple(driver.results[12]) == (True, "short", hour(17), 6)


def test_legacy_cooldown_bars_alone_pauses_after_every_loss():
    # L=1, W=cooldown_bars=3: each loss blocks its exit bar and the 3 bars after it
    strategy = legacy_strategy(cooldown_bars=3)
    bars = scripted(24, losses=[5, 15], probes=[*range(5, 10), 18, 19])
    driver, entered, lost = run_all(strategy, bars)
    assert lost == [5, 15]
    # bar 14's signal finds the slot taken by the position entered at 9 (stopped at 15)
    assert entered == [4, 9, 19]
    assert status_tuple(driver.results[5]) == (True, "short", hour(8), 4)
    assert status_tuple(driver.results[8]) == (True, "short", hour(8), 1)
    assert status_tuple(driver.results[18]) == (True, "short", hour(18), 1)


def test_legacy_keys_warn_in_the_result():
    # the core only reports; the service logs it (tests/unit/test_service.py)
    strategy = legacy_strategy(daily_momentum_limit=2, cooldown_bars=5)
    result = Driver(strategy, candles([FLAT] * 3)).at(2)
    (warning,) = [w for w in result.warnings if w.code == "deprecated_cooldown_keys"]
    assert "daily_momentum_limit" in warning.message and "cooldown_bars" in warning.message
    assert "cooldown_config" in warning.message


def test_cooldown_config_does_not_warn():
    strategy = tiers_strategy(short_loss_limit=2, short_window_bars=3)
    result = Driver(strategy, candles([FLAT] * 3)).at(2)
    assert result.warnings == []


def test_legacy_keys_apply_when_cooldown_config_has_no_entry_for_the_timeframe():
    strategy = make_strategy(
        execution_config={
            "stop_loss": STOP,
            "cooldown_config": {"4h": {"short_loss_limit": 1, "short_window_bars": 50}},
            "cooldown_bars": 2,
        }
    )
    driver, entered, _ = run_all(strategy, scripted(12, losses=[5], probes=range(5, 9)))
    assert entered == [4, 8]  # blocked 5, 6, 7 by cooldown_bars=2 (the 4h entry is not used)
    assert "deprecated_cooldown_keys" in [w.code for w in driver.results[0].warnings]


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({}, id="neither"),
        pytest.param(
            {"cooldown_config": {"4h": {"short_loss_limit": 1, "short_window_bars": 5}}},
            id="other-timeframe-only",
        ),
        pytest.param(
            {"cooldown_config": {"1h": {"short_loss_limit": 1, "short_window_bars": 0}}},
            id="zero-window-tier-is-off",
        ),
        pytest.param(
            {"cooldown_config": {"1h": {"long_loss_limit": 0, "long_window_bars": 5}}},
            id="zero-limit-tier-is-off",
        ),
    ],
)
def test_no_cooldown(config):
    strategy = make_strategy(execution_config={"stop_loss": STOP, **config})
    # every bar from 10 closes a losing trade and re-enters
    bars = scripted(16, losses=range(10, 16), probes=range(10, 16))
    driver, entered, lost = run_all(strategy, bars)
    assert lost == list(range(10, 16))
    assert entered == list(range(9, 16))
    assert all(not cooldown_of(r).active for r in driver.results)
    assert all(r.changes.cooldowns == [] for r in driver.results)
    # a cooldown_config that only names other timeframes is almost surely a mistake: say so
    unused = ["cooldown_config_unused"] if "4h" in config.get("cooldown_config", {}) else []
    assert all([w.code for w in r.warnings] == unused for r in driver.results)


def test_a_cooldown_config_key_the_strategy_never_uses_is_named_in_a_warning():
    strategy = make_strategy(
        execution_config={
            "cooldown_config": {
                "1h": {"short_loss_limit": 2, "short_window_bars": 3},
                "4h": {"short_loss_limit": 1, "short_window_bars": 5},
                "1d": {"long_loss_limit": 1, "long_window_bars": 5},
            }
        }
    )
    assert strategy.warnings == [
        (
            "cooldown_config_unused",
            "execution_config.cooldown_config has entries for '1d', '4h', which this 1h "
            "strategy never uses: only the entry keyed by its primary timeframe ('1h') applies",
        )
    ]
    mistyped = make_strategy(
        execution_config={
            "cooldown_config": {"4h": {"short_loss_limit": 1, "short_window_bars": 5}}
        }
    )
    assert mistyped.warnings[0][1].endswith("applies, so it has no cooldown")


def test_cooldown_config_for_the_primary_timeframe_wins_over_legacy_keys():
    # the 1h entry (L=2, W=3) is used; cooldown_bars=1 (which would pause after every loss)
    # is not read at all
    strategy = make_strategy(
        execution_config={
            "stop_loss": STOP,
            "cooldown_config": {"1h": {"short_loss_limit": 2, "short_window_bars": 3}},
            "cooldown_bars": 1,
        }
    )
    rules = cooldown_rules(strategy.execution_config, "1h")
    assert rules.legacy is False
    assert [(t.name, t.loss_limit, t.window_bars) for t in rules.tiers] == [("short", 2, 3)]
    _, entered, lost = run_all(strategy, scripted(20, losses=[10, 12], probes=range(12, 17)))
    assert lost == [10, 12]
    assert entered == [9, 11, 16]


# --- losses older than the fetched candles (issue: an old loss counted as a recent one) ---


def test_a_loss_older_than_the_first_candle_never_counts():
    # Short tier L=2, W=10. The state remembers a loss 100 h before the first candle; a
    # position entered at bar 0 is stopped at bar 3 (caught up at bar 5, after an outage).
    # That is one loss in (3 - 10, 3]: no trip, and the entry signal at bar 5 goes through.
    # (Mapping the old loss to index -1 put it inside the window and tripped the tier.)
    strategy = tiers_strategy(short_loss_limit=2, short_window_bars=10)
    bars = [(100.0, 100.0, 100.0, 100.0, 10.0)] + [FLAT] * 2 + [(100.0, 100.0, 90.0, 95.0, 1.0)]
    bars += [FLAT, (100.0, 100.0, 100.0, 100.0, 10.0)]
    c = candles(bars)
    old_loss = CooldownState(
        asset="BTC/USDT",
        losses=[LossRecord(exit_time=to_datetime(T0 - 100 * H), position_id="pos_old")],
    )
    driver = Driver(strategy, c)
    driver.at(0)  # enters at bar 0's close, stop at 95
    driver.state = driver.state.model_copy(update={"cooldowns": {"BTC/USDT": old_loss}})
    result = driver.at(5)
    assert [(t.exit_reason, t.exit_price) for t in result.closed_trades] == [("stop_loss", 95.0)]
    assert status_tuple(result) == (False, None, None, 0)
    assert [o.created_at for o in entries(result)] == [hour(5)]


def test_a_trip_older_than_the_first_candle_no_longer_blocks():
    # A trip 100 h before the first candle, blocking 48 bars, ended long ago; an unknown bar
    # must not read as "the bar before the first candle" (which would block until bar 47).
    strategy = tiers_strategy(short_loss_limit=1, short_window_bars=48)
    c = candles([(100.0, 100.0, 100.0, 100.0, 10.0)] * 3)
    tripped = CooldownState(
        asset="BTC/USDT", tripped_at=to_datetime(T0 - 100 * H), blocked_bars=48, tier="short"
    )
    state = ExecutionState(strategy_id=strategy.strategy_id, cooldowns={"BTC/USDT": tripped})
    result = Driver(strategy, c, state).at(2)
    assert status_tuple(result) == (False, None, None, 0)
    assert len(entries(result)) == 1


def test_the_fetch_covers_each_window_back_from_the_oldest_bar_processed():
    # W = 12 (long tier 48 is longer: the longest window counts), 2 bars of margin.
    strategy = tiers_strategy(
        short_loss_limit=2, short_window_bars=12, long_loss_limit=4, long_window_bars=48
    )
    compiled = compile_strategy(strategy)
    assert compiled.history_needed(None, T0) == max(strategy.warmup_bars, 48 + 2)
    # a position entered 100 bars before the clock: bars 100 back to its entry bar,
    # plus the entry bar itself (101), plus the window and the margin: 151
    position = Position(
        position_id="p",
        strategy_id=strategy.strategy_id,
        asset="BTC/USDT",
        entry_time=to_datetime(T0),
        entry_price=100.0,
        quantity=1.0,
    )
    state = ExecutionState(strategy_id=strategy.strategy_id, positions=[position])
    assert compiled.history_needed(state, T0 + 100 * H) == 101 + 48 + 2


def test_an_asset_without_a_cooldown_reports_one_shared_status_that_cannot_change():
    times = np.arange(5, dtype=np.int64) * 3_600_000
    first = status_at(None, "BTC/USDT", times, 3, "1h")
    again = status_at(CooldownState(asset="BTC/USDT"), "BTC/USDT", times, 4, "1h")
    assert first is again  # shared by every evaluation that reports it, a bulk run's too
    assert (first.asset, first.active, first.until, first.remaining_bars) == (
        "BTC/USDT",
        False,
        None,
        0,
    )
    assert status_at(None, "ETH/USDT", times, 3, "1h").asset == "ETH/USDT"
    with pytest.raises(ValidationError):
        first.active = True
