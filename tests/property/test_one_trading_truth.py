"""One trading truth (DESIGN §8): live, in bulk and in replay, the same decisions.

Random strategies (recursive and informative indicators, ATR stops, cooldowns, several
assets, three timeframes) over random histories are evaluated through the service bar by bar,
with a provider that answers only the window each run asks for (closed bars, as of the
clock), alone and in a bulk run with random company; `replay` runs over the whole history.
Orders, trades and cooldowns must be identical (prices priced from an indicator, such as an
ATR stop, to 1e-9 relative: the indicator itself is only promised to that precision).

A second property skips evaluations: only resting orders act in missed bars, so with
entries only on evaluated bars and no signal or time exits, every fill and cooldown caught
up afterwards must equal what replay decided bar by bar.

The strategies take every rule of DESIGN §11 too: short entries and exits, trailing stops
(percent and ATR, with and without activation), scale-out target lists with break-even,
sizing from the account, the total-positions cap and (in the first property only: it
samples equity at the bars evaluated) the drawdown halt. Replay runs every asset as one
account, as live does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from engine.core.candles import Candles
from engine.core.evaluate import compile_strategy
from engine.core.state import EvaluationResult
from engine.core.strategy import Strategy, parse_strategy
from engine.core.timeframes import TIMEFRAME_MS, timeframe_ms
from engine.service.execution import ExecutionService
from engine.service.replay import replay
from engine.service.results import BulkFailure
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fakes import MemoryMarket, MemoryStates, MemoryStrategies

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
ASSETS = ("AAA/USD", "BBB/USD", "CCC/USD")
COARSER = {"15m": ["1h", "4h"], "1h": ["4h", "1d"], "4h": ["1d"]}
PRICE_RELATIVE = 1e-9


# --- generators -----------------------------------------------------------------------


def _grid(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.integers(int(lo * 1000), int(hi * 1000)).map(lambda v: v / 1000)


@st.composite
def strategy_docs(
    draw: st.DrawFn, sid: str, timeframe: str, assets: list[str], signal_exits: bool = True
) -> dict[str, Any]:
    """A strategy of the §4 rules, often with §11's; `signal_exits` False leaves out every
    rule that acts at t only beyond entries (signal and time exits, the drawdown halt)."""
    indicators: dict[str, Any] = {
        "rsi": {"fn": "RSI", "params": {"timeperiod": draw(st.integers(5, 30))}},
        "ema": {"fn": "EMA", "params": {"timeperiod": draw(st.integers(5, 40))}},
        "atr": {"fn": "ATR", "params": {"timeperiod": draw(st.integers(5, 20))}},
    }
    fast = draw(st.integers(4, 12))
    indicators["macd"] = {
        "fn": "MACD",
        "params": {
            "fastperiod": fast,
            "slowperiod": draw(st.integers(fast + 1, 30)),
            "signalperiod": draw(st.integers(3, 9)),
        },
    }
    informative = draw(st.sampled_from(COARSER[timeframe]))
    ratio = timeframe_ms(informative) // timeframe_ms(timeframe)
    if ratio <= 4:  # a recursive informative indicator, where its history stays affordable
        indicators["trend"] = {
            "fn": "EMA",
            "params": {"timeperiod": draw(st.integers(2, 4))},
            "timeframe": informative,
        }
    else:
        indicators["trend"] = {
            "fn": "SMA",
            "params": {"timeperiod": draw(st.integers(5, 12))},
            "timeframe": informative,
        }
    low = draw(st.integers(35, 50))
    entry_any: list[Any] = [
        {"left": "rsi", "op": "<", "right": low},
        {"left": "macd.macd", "op": "crosses_above", "right": "macd.macdsignal"},
    ]
    entry: dict[str, Any] = {
        "all": [
            # the scenario keeps volume at or below 1 where no entry may happen
            {"left": "volume", "op": ">", "right": 1},
            {"any": entry_any},
            {"left": "close", "op": draw(st.sampled_from([">", "<"])), "right": "trend"},
        ]
    }
    config: dict[str, Any] = {
        "max_open_positions": draw(st.integers(1, 2)),
        "fee_rate": draw(st.sampled_from([0.0, 0.001])),
        "position_sizing": draw(
            st.sampled_from(
                [
                    {"type": "fixed_notional", "value": 1000},
                    {"type": "equity_percent", "value": 0.1},
                    {"type": "risk_percent", "value": 0.01},
                ]
            )
        ),
    }
    stop = draw(st.sampled_from(["atr", "percent", "trailing_percent", "trailing_atr"]))
    if stop in ("atr", "trailing_atr"):
        config["stop_loss"] = {"type": stop, "indicator": "atr", "multiplier": draw(_grid(0.5, 2))}
    else:
        config["stop_loss"] = {"type": stop, "value": draw(_grid(0.003, 0.03))}
    if stop.startswith("trailing") and draw(st.booleans()):
        config["stop_loss"]["activation"] = draw(_grid(0.001, 0.02))
    config["take_profit"] = draw(
        st.sampled_from(
            [
                {"type": "risk_reward", "ratio": 1.5},
                {"type": "atr", "indicator": "atr", "multiplier": 2.0},
                {"type": "percent", "value": 0.02},
                [
                    {"type": "percent", "value": 0.005, "fraction": 0.5},
                    {"type": "risk_reward", "ratio": 2.0, "fraction": 0.5},
                ],
                [
                    {"type": "risk_reward", "ratio": 0.5, "fraction": 0.3},
                    {"type": "atr", "indicator": "atr", "multiplier": 1.0, "fraction": 0.3},
                    {"type": "percent", "value": 0.03, "fraction": 0.4},
                ],
            ]
        )
    )
    if isinstance(config["take_profit"], list) and draw(st.booleans()):
        config["break_even_after"] = 1
    if draw(st.booleans()):
        config["max_open_positions_total"] = draw(st.integers(1, 3))
    if signal_exits and draw(st.booleans()):
        config["max_drawdown"] = {
            "value": draw(_grid(0.001, 0.01)),
            "halt_bars": draw(st.integers(1, 12)),
        }
    config["cooldown_config"] = {
        timeframe: {
            "short_loss_limit": draw(st.integers(0, 2)),
            "short_window_bars": draw(st.integers(0, 8)),
            "long_loss_limit": draw(st.integers(0, 4)),
            "long_window_bars": draw(st.integers(0, 30)),
        }
    }
    doc: dict[str, Any] = {
        "strategy_id": sid,
        "name": sid,
        "assets": assets,
        "timeframe": timeframe,
        "indicators": indicators,
        "entry": entry,
        "execution_config": config,
    }
    if draw(st.booleans()):  # the short side, mirrored
        doc["short_entry"] = {
            "all": [
                {"left": "volume", "op": ">", "right": 1},
                {
                    "any": [
                        {"left": "rsi", "op": ">", "right": 100 - low},
                        {"left": "macd.macd", "op": "crosses_below", "right": "macd.macdsignal"},
                    ]
                },
                {"left": "close", "op": draw(st.sampled_from([">", "<"])), "right": "trend"},
            ]
        }
        if signal_exits and draw(st.booleans()):
            doc["short_exit"] = {"left": "rsi", "op": "<", "right": draw(st.integers(25, 45))}
    if signal_exits and draw(st.booleans()):
        doc["exit"] = {"left": "rsi", "op": ">", "right": draw(st.integers(55, 75))}
    if signal_exits and draw(st.booleans()):
        config["time_based_exits"] = {"max_hold_bars": draw(st.integers(3, 20))}
    return doc


def company_doc(
    sid: str, timeframe: str, assets: list[str], fn: str, period: int
) -> dict[str, Any]:
    """Another strategy on the same assets: another timeframe (often the main strategy's
    informative one), a history much shorter (SMA) or longer (EMA) than the main one's."""
    return {
        "strategy_id": sid,
        "name": sid,
        "assets": assets,
        "timeframe": timeframe,
        "indicators": {"x": {"fn": fn, "params": {"timeperiod": period}}},
        "entry": {"left": "close", "op": "<", "right": "x"},
        "execution_config": {"stop_loss": {"type": "percent", "value": 0.01}},
    }


def random_walk(rng: np.random.Generator, times: np.ndarray, entries: np.ndarray) -> Candles:
    """A random walk; volume is above 1 (entries possible) only where `entries` is true."""
    n = len(times)
    vol = rng.uniform(0.004, 0.02)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    prev = np.r_[close[0], close[:-1]]
    open_ = prev * np.exp(rng.normal(0, vol / 2, n))  # gaps between bars
    high = np.maximum(open_, close) * (1 + rng.uniform(0, vol, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, vol, n))
    volume = np.where(entries, rng.uniform(1.5, 10, n), 0.5)
    return Candles(times.astype(np.int64), open_, high, low, close, volume)


def resample_all(primary: Candles, timeframe: str) -> dict[str, Candles]:
    """The same market at every coarser timeframe (for company on other timeframes)."""
    out = {timeframe: primary}
    for tf, step in TIMEFRAME_MS.items():
        if step > timeframe_ms(timeframe) and tf in ("1h", "4h", "1d"):
            out[tf] = primary.resample(timeframe, tf)
    return out


# --- the runs -------------------------------------------------------------------------


def run_live(
    strategy: Strategy,
    company: list[Strategy],
    provider: MemoryMarket,
    closes: list[int],
) -> list[EvaluationResult]:
    """Evaluate at each close through the service: alone, or in one bulk run with company."""
    now = [0]
    service = ExecutionService(
        MemoryStrategies([strategy, *company]), MemoryStates(), provider, "warn", lambda: now[0]
    )
    ids = [c.strategy_id for c in company] + [strategy.strategy_id]
    results = []
    for close in closes:
        now[0] = close
        if not company:
            results.append(service.evaluate_by_id(strategy.strategy_id))
            continue
        mine = [
            r for r in service.evaluate_bulk(ids).results if r.strategy_id == strategy.strategy_id
        ]
        assert not isinstance(mine[0], BulkFailure), mine[0]
        results.append(mine[0])
    return results


def same(live: Any, replayed: Any, where: str) -> None:
    """Equal, except that floats may differ by PRICE_RELATIVE (indicator-priced levels)."""
    if isinstance(live, dict) and isinstance(replayed, dict):
        assert live.keys() == replayed.keys(), where
        for key in live:
            same(live[key], replayed[key], f"{where}.{key}")
    elif isinstance(live, list) and isinstance(replayed, list):
        assert len(live) == len(replayed), (where, live, replayed)
        for i, (a, b) in enumerate(zip(live, replayed, strict=True)):
            same(a, b, f"{where}[{i}]")
    elif isinstance(live, float) and isinstance(replayed, float):
        assert math.isclose(live, replayed, rel_tol=PRICE_RELATIVE), (where, live, replayed)
    else:
        assert live == replayed, (where, live, replayed)


def assert_replay_agrees(
    strategy: Strategy, live: list[EvaluationResult], history: dict[str, Candles]
) -> int:
    """Replay over the whole history decided exactly what live did; answers the trades."""
    trades = 0
    final = live[-1]
    # one account over every asset, as live (the total-positions cap, equity, the halt)
    replayed = replay(strategy, history, progress=False)
    assert replayed.final_state is not None
    account = ("realized_pnl", "equity_peak", "halted_at")
    # a catch-up adds up several fills in another order than replay: to PRICE_RELATIVE
    same(
        final.state.model_dump(mode="json", include=set(account)),
        replayed.final_state.model_dump(mode="json", include=set(account)),
        "account",
    )
    for asset in strategy.assets:
        live_orders: dict[str, Any] = {}
        for result in live:
            for order in result.orders:
                if order.asset == asset:
                    live_orders[order.order_id] = order.model_dump(mode="json")
        same(
            live_orders,
            {o.order_id: o.model_dump(mode="json") for o in replayed.orders if o.asset == asset},
            f"{asset} orders",
        )

        # a catch-up closes several positions in one evaluation, listed by entry; replay
        # lists them as they closed: compare them in one order, by exit then entry
        def key(trade: dict[str, Any]) -> tuple[str, str]:
            return (trade["exit_time"], trade["entry_time"])

        same(
            sorted(
                (
                    t.model_dump(mode="json")
                    for r in live
                    for t in r.closed_trades
                    if t.asset == asset
                ),
                key=key,
            ),
            sorted(
                (t.model_dump(mode="json") for t in replayed.trades if t.asset == asset),
                key=key,
            ),
            f"{asset} trades",
        )
        mine, theirs = final.state.cooldowns.get(asset), replayed.final_state.cooldowns.get(asset)
        # the trip (when, which tier, how long); the list of recent losses is pruned at the
        # bars each run happened to evaluate, and holds the same losses that still count
        same(
            None if mine is None else (mine.tripped_at, mine.tier, mine.blocked_bars),
            None if theirs is None else (theirs.tripped_at, theirs.tier, theirs.blocked_bars),
            f"{asset} cooldown",
        )
    trades += len(replayed.trades)
    return trades


# --- the properties -------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn, signal_exits: bool = True) -> dict[str, Any]:
    timeframe = draw(st.sampled_from(["15m", "1h", "4h"]))
    assets = list(ASSETS[: draw(st.integers(1, 3))])
    strategy = parse_strategy(draw(strategy_docs("truth", timeframe, assets, signal_exits)))
    informative = strategy.indicators["trend"].timeframe
    assert informative is not None
    company: list[Strategy] = []
    for k in range(draw(st.integers(1, 3))):
        # often on the strategy's informative timeframe, whose bars it must not lend
        tf = draw(st.sampled_from([timeframe, informative, informative, *COARSER[timeframe]]))
        fn, period = draw(
            st.sampled_from(["SMA", "EMA"]).flatmap(
                lambda f: st.tuples(
                    st.just(f), st.integers(2, 4) if f == "SMA" else st.integers(20, 80)
                )
            )
        )
        company.append(parse_strategy(company_doc(f"company-{k}", tf, assets, fn, period)))
    need = compile_strategy(strategy).history_needed(None, 0)
    # bars before live's first evaluation: at least what it needs, often far more, so the
    # provider's window is shorter than the history replay sees
    first = need + draw(st.integers(0, 400))
    return {
        "strategy": strategy,
        "company": company,
        "need": need,
        "first": first,
        "n": first + draw(st.integers(40, 120)),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "miss": draw(st.sampled_from([0.3, 0.6, 0.9])),
    }


def histories(
    scenario: dict[str, Any], entries: np.ndarray
) -> tuple[dict[str, Candles], dict[tuple[str, str], Candles]]:
    strategy: Strategy = scenario["strategy"]
    times = T0 + np.arange(scenario["n"], dtype=np.int64) * timeframe_ms(strategy.timeframe)
    rng = np.random.default_rng(scenario["seed"])
    history = {asset: random_walk(rng, times, entries) for asset in strategy.assets}
    by_pair: dict[tuple[str, str], Candles] = {}
    for asset, primary in history.items():
        for tf, series in resample_all(primary, strategy.timeframe).items():
            by_pair[(asset, tf)] = series
    return history, by_pair


SETTINGS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(scenarios())
def test_live_alone_and_in_any_bulk_company_decide_what_replay_decides(
    scenario: dict[str, Any],
) -> None:
    strategy: Strategy = scenario["strategy"]
    first, n = scenario["first"], scenario["n"]
    # no entry before live's first evaluation: replay and live both start flat there
    history, by_pair = histories(scenario, np.arange(n) >= first)
    step = timeframe_ms(strategy.timeframe)
    closes = [int(t) + step for t in history[strategy.assets[0]].time[first:]]

    provider = MemoryMarket(by_pair)
    alone = run_live(strategy, [], provider, closes)
    # the first evaluation saw a window shorter than the history before it, whenever
    # the scenario put bars before the strategy's need (the case the property is about)
    assert provider.asked[0] == scenario["need"] and (
        first == scenario["need"] or first > provider.asked[0]
    )
    bulk = run_live(strategy, scenario["company"], MemoryMarket(by_pair), closes)
    for i, (a, b) in enumerate(zip(alone, bulk, strict=True)):
        same(a.model_dump(mode="json"), b.model_dump(mode="json"), f"bar {i}: alone vs bulk")
    assert_replay_agrees(strategy, alone, history)


@SETTINGS
@given(scenarios(signal_exits=False), st.randoms(use_true_random=False))
def test_evaluations_missed_catch_up_to_what_replay_decides(
    scenario: dict[str, Any], rng: Any
) -> None:
    # Only resting orders act in missed bars: with entries only on bars evaluated live and
    # no signal or time exits (which act at t only), every fill and every cooldown trip that
    # live catches up afterwards must be replay's, bar for bar.
    strategy: Strategy = scenario["strategy"]
    first, n = scenario["first"], scenario["n"]
    evaluated = [i for i in range(first, n - 1) if rng.random() >= scenario["miss"]] + [n - 1]
    entries = np.zeros(n, dtype=bool)
    entries[evaluated] = True
    history, by_pair = histories(scenario, entries)
    step = timeframe_ms(strategy.timeframe)
    times = history[strategy.assets[0]].time
    live = run_live(strategy, [], MemoryMarket(by_pair), [int(times[i]) + step for i in evaluated])
    assert_replay_agrees(strategy, live, history)
