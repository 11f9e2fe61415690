"""The strategy model (DESIGN §3): validation names every problem with its JSON path."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from engine.core.conditions import compile_condition
from engine.core.market import MarketData
from engine.core.strategy import (
    AllOf,
    Comparison,
    Ref,
    Strategy,
    StrategyInvalid,
    parse_strategy,
)

from tests.support.core import DESIGN_EXAMPLE, candles, strategy_doc


def problems_of(doc: object) -> dict[str, str]:
    with pytest.raises(StrategyInvalid) as info:
        parse_strategy(doc)
    problems = info.value.problems
    paths = [path for path, _ in problems]
    assert len(paths) == len(set(paths)), f"one problem per path: {problems}"
    # the exception's text names every problem too
    for path, message in problems:
        assert f"{path}: {message}" in str(info.value)
    return dict(problems)


def test_design_example_is_valid():
    strategy = parse_strategy(DESIGN_EXAMPLE)
    assert strategy.strategy_id == "rsi-meanrev-btc"
    assert strategy.indicators["macd"].outputs == ("macd", "macdsignal", "macdhist")
    assert strategy.execution_config.cooldown_config["1h"].long_window_bars == 48
    assert strategy.execution_config.time_based_exits.max_hold_bars == 48


def test_defaults():
    strategy = parse_strategy(strategy_doc())
    config = strategy.execution_config
    assert strategy.status == "active"
    assert strategy.exit is None  # exit is optional
    assert (config.position_sizing.type, config.position_sizing.value) == ("fixed_quantity", 1.0)
    assert config.max_open_positions == 1
    assert config.fee_rate == 0.0
    assert config.stop_loss is None and config.take_profit is None
    assert config.cooldown_config is None
    assert config.time_based_exits.max_hold_bars is None


def test_canonical_json_round_trips():
    strategy = parse_strategy(DESIGN_EXAMPLE)
    again = parse_strategy(json.loads(strategy.canonical_json()))
    assert again == strategy
    assert again.canonical_json() == strategy.canonical_json()


def test_multi_output_references_with_talib_output_names():
    doc = strategy_doc(
        indicators={
            "macd": {"fn": "MACD"},
            "bb": {"fn": "BBANDS", "params": {"timeperiod": 20, "nbdevup": 2, "nbdevdn": 2}},
        },
        entry={
            "all": [
                {"left": "macd.macd", "op": "crosses_above", "right": "macd.macdsignal"},
                {"left": "close", "op": "<", "right": "bb.lowerband"},
                {"left": {"ref": "macd.macdhist", "shift": 2}, "op": "<", "right": 0},
            ]
        },
    )
    strategy = parse_strategy(doc)
    assert strategy.indicators["macd"].outputs == ("macd", "macdsignal", "macdhist")
    assert strategy.indicators["bb"].outputs == ("upperband", "middleband", "lowerband")
    assert strategy.entry == AllOf(
        all=[
            Comparison(left="macd.macd", op="crosses_above", right="macd.macdsignal"),
            Comparison(left="close", op="<", right="bb.lowerband"),
            Comparison(left=Ref(ref="macd.macdhist", shift=2), op="<", right=0),
        ]
    )
    # each reference reads its own output: true at bar 2 only with these hand-made series
    nan = float("nan")
    frame = {
        "macd.macd": np.array([0.0, -1.0, 2.0]),
        "macd.macdsignal": np.array([0.0, 0.0, 1.0]),  # macd crosses above it at bar 2
        "macd.macdhist": np.array([-0.5, nan, 9.0]),  # two bars before bar 2: -0.5 < 0
        "close": np.array([10.0, 10.0, 10.0]),
        "bb.lowerband": np.array([9.0, 9.0, 11.0]),  # close 10 < 11 at bar 2
        "bb.upperband": np.array([nan, nan, nan]),
        "bb.middleband": np.array([nan, nan, nan]),
    }
    entry = compile_condition(strategy.entry)
    assert [entry(frame, i, set()) for i in range(3)] == [False, False, True]
    frame["macd.macdsignal"] = np.array([0.0, 0.0, 3.0])  # macd 2 stays below: no cross
    assert entry(frame, 2, set()) is False


def test_missing_entry_is_rejected():
    doc = strategy_doc()
    del doc["entry"]
    assert problems_of(doc) == {"entry": "Field required"}


# --- each kind of problem, with its path ------------------------------------------------


def test_unknown_keys_at_every_level():
    doc = strategy_doc(
        colour="blue",
        indicators={"rsi": {"fn": "RSI", "period": 14}},
        entry={"all": [{"left": "rsi", "op": "<", "right": 30, "weight": 2}]},
        execution_config={
            "slippage": 0.1,
            "position_sizing": {"type": "fixed_quantity", "value": 1, "currency": "USD"},
            "stop_loss": {"type": "percent", "value": 0.02, "trailing": True},
            "cooldown_config": {"1h": {"short_loss_limit": 1, "short_window": 3}},
        },
    )
    problems = problems_of(doc)
    assert set(problems) == {
        "colour",
        "indicators.rsi.period",
        "entry.all[0].weight",
        "execution_config.slippage",
        "execution_config.position_sizing.currency",
        "execution_config.stop_loss.trailing",
        "execution_config.cooldown_config.1h.short_window",
    }
    assert all("not permitted" in message for message in problems.values())


def test_unknown_talib_function():
    doc = strategy_doc(indicators={"x": {"fn": "RSIX"}})
    problems = problems_of(doc)
    assert list(problems) == ["indicators.x.fn"]
    assert "RSIX" in problems["indicators.x.fn"]
    assert "unknown TA-Lib function" in problems["indicators.x.fn"]


def test_function_names_are_talibs_own():
    # lower case is not TA-Lib's name for RSI
    assert list(problems_of(strategy_doc(indicators={"x": {"fn": "rsi"}}))) == ["indicators.x.fn"]


def test_function_whose_input_is_not_a_candle_field():
    # MAVP's second input is a series of periods, which candles do not have
    problems = problems_of(strategy_doc(indicators={"x": {"fn": "MAVP"}}))
    assert "periods" in problems["indicators.x.fn"]


@pytest.mark.parametrize(
    ("params", "path", "fragment"),
    [
        ({"period": 14}, "indicators.x.params.period", "unknown parameter for RSI"),
        ({"timeperiod": 14.5}, "indicators.x.params.timeperiod", "whole number"),
        ({"timeperiod": "14"}, "indicators.x.params.timeperiod", "valid"),
        ({"timeperiod": True}, "indicators.x.params.timeperiod", "valid"),
        ({"timeperiod": 0}, "indicators.x.params", "TA-Lib rejects"),
        ({"timeperiod": -3}, "indicators.x.params", "TA-Lib rejects"),
        ({"timeperiod": 10**7}, "indicators.x.params", "TA-Lib rejects"),
    ],
)
def test_unknown_or_invalid_parameter(params, path, fragment):
    problems = problems_of(strategy_doc(indicators={"x": {"fn": "RSI", "params": params}}))
    assert list(problems) == [path]
    assert fragment in problems[path]


def test_unknown_parameter_lists_the_known_ones():
    doc = strategy_doc(indicators={"m": {"fn": "MACD", "params": {"fast": 12}}})
    message = problems_of(doc)["indicators.m.params.fast"]
    assert "fastperiod" in message and "slowperiod" in message and "signalperiod" in message


def test_undefined_indicator_references_everywhere():
    doc = strategy_doc(
        indicators={"rsi": {"fn": "RSI"}},
        entry={
            "all": [
                {"left": "rsi", "op": "<", "right": "rsi_slow"},
                {"any": [{"left": "sma", "op": ">", "right": 1}]},
                {"not": {"left": "close", "op": ">", "right": {"ref": "ema", "shift": 1}}},
            ]
        },
        exit={"left": "vwap", "op": ">", "right": "close"},
        execution_config={
            "stop_loss": {"type": "atr", "indicator": "atr", "multiplier": 2},
            "take_profit": {"type": "atr", "indicator": "natr", "multiplier": 2},
        },
    )
    problems = problems_of(doc)
    assert set(problems) == {
        "entry.all[0].right",
        "entry.all[1].any[0].left",
        "entry.all[2].not.right.ref",
        "exit.left",
        "execution_config.stop_loss.indicator",
        "execution_config.take_profit.indicator",
    }
    assert "'rsi_slow'" in problems["entry.all[0].right"]
    assert "not a candle field or a defined indicator" in problems["exit.left"]


def test_bad_multi_output_references():
    doc = strategy_doc(
        indicators={"macd": {"fn": "MACD"}},
        entry={
            "all": [
                {"left": "macd", "op": ">", "right": 0},
                {"left": "macd.nope", "op": ">", "right": 0},
            ]
        },
    )
    problems = problems_of(doc)
    bare = problems["entry.all[0].left"]
    assert "several outputs" in bare
    assert "macd.macd" in bare and "macd.macdsignal" in bare and "macd.macdhist" in bare
    wrong = problems["entry.all[1].left"]
    assert "no output 'nope'" in wrong and "macdsignal" in wrong


def test_single_output_indicator_is_referenced_by_name_or_by_output():
    doc = strategy_doc(
        indicators={"rsi": {"fn": "RSI"}},
        entry={"left": "rsi", "op": "<", "right": "rsi.real"},
    )
    strategy = parse_strategy(doc)
    assert strategy.entry == Comparison(left="rsi", op="<", right="rsi.real")
    close = [100.0 + (-1) ** i * i for i in range(40)]
    bars = candles([(c, c, c, c, 1.0) for c in close])
    frame = MarketData({("BTC/USDT", "1h"): bars}).frame(strategy, "BTC/USDT")
    # one series under both names: RSI(14) undefined for the first 14 bars, then defined
    np.testing.assert_array_equal(frame["rsi"], frame["rsi.real"])
    assert np.isnan(frame["rsi"][:14]).all() and not np.isnan(frame["rsi"][14:]).any()
    entry = compile_condition(strategy.entry)
    assert not any(entry(frame, i, set()) for i in range(40))  # never below itself


def test_risk_reward_without_stop():
    doc = strategy_doc(execution_config={"take_profit": {"type": "risk_reward", "ratio": 2}})
    problems = problems_of(doc)
    assert list(problems) == ["execution_config.take_profit"]
    assert "stop_loss" in problems["execution_config.take_profit"]


def test_max_hold_bars_inside_cooldown_config():
    doc = strategy_doc(
        execution_config={
            "cooldown_config": {"1h": {"short_loss_limit": 2, "max_hold_bars": 48}},
        }
    )
    problems = problems_of(doc)
    assert list(problems) == ["execution_config.cooldown_config.1h.max_hold_bars"]
    assert (
        "execution_config.time_based_exits"
        in problems["execution_config.cooldown_config.1h.max_hold_bars"]
    )


def test_stop_and_target_paths_are_the_documents_own():
    # the discriminating `type` is not a level of the user's JSON
    doc = strategy_doc(
        indicators={"atr": {"fn": "ATR"}},
        execution_config={
            "stop_loss": {"type": "percent", "value": 1.5},
            "take_profit": {"type": "atr", "indicator": "atr", "multiplier": -1},
        },
    )
    problems = problems_of(doc)
    assert set(problems) == {
        "execution_config.stop_loss.value",
        "execution_config.take_profit.multiplier",
    }
    doc = strategy_doc(
        execution_config={
            "stop_loss": {"type": "percent", "value": 0.02},
            "take_profit": {"type": "risk_reward", "ratio": 0},
        }
    )
    assert list(problems_of(doc)) == ["execution_config.take_profit.ratio"]
    doc = strategy_doc(execution_config={"stop_loss": {"type": "trailing", "value": 0.02}})
    assert list(problems_of(doc)) == ["execution_config.stop_loss"]


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"strategy_id": "has space"}, "strategy_id"),
        ({"strategy_id": "x" * 65}, "strategy_id"),
        ({"status": "running"}, "status"),
        ({"assets": []}, "assets"),
        ({"timeframe": "3h"}, "timeframe"),
        ({"entry": {"left": "close", "op": "==", "right": 1}}, "entry.op"),
        ({"entry": {"all": []}}, "entry.all"),
        (
            {"entry": {"left": {"ref": "close", "shift": -1}, "op": ">", "right": 1}},
            "entry.left.shift",
        ),
        ({"execution_config": {"max_open_positions": 0}}, "execution_config.max_open_positions"),
        ({"execution_config": {"fee_rate": -0.1}}, "execution_config.fee_rate"),
        (
            {"execution_config": {"time_based_exits": {"max_hold_bars": 0}}},
            "execution_config.time_based_exits.max_hold_bars",
        ),
        (
            {"execution_config": {"position_sizing": {"type": "fixed_notional", "value": 0}}},
            "execution_config.position_sizing.value",
        ),
        ({"indicators": {"close": {"fn": "SMA"}}}, "indicators.close"),
        ({"indicators": {"s": {"fn": "SMA", "timeframe": "15m"}}}, "indicators.s.timeframe"),
    ],
)
def test_field_problems_have_paths(overrides, path):
    assert path in problems_of(strategy_doc(**overrides))


def test_several_structural_problems_are_all_reported():
    doc = strategy_doc(
        colour="blue",
        timeframe="3h",
        indicators={
            "a": {"fn": "NOPE"},
            "b": {"fn": "SMA", "params": {"length": 3}},
            "c": {"fn": "EMA", "params": {"timeperiod": 2.5}},
        },
        entry={"all": [{"left": "close", "op": "=", "right": 1}]},
        execution_config={
            "stop_loss": {"type": "percent", "value": 2},
            "cooldown_config": {"1h": {"max_hold_bars": 12}},
        },
    )
    assert set(problems_of(doc)) == {
        "colour",
        "timeframe",
        "indicators.a.fn",
        "indicators.b.params.length",
        "indicators.c.params.timeperiod",
        "entry.all[0].op",
        "execution_config.stop_loss.value",
        "execution_config.cooldown_config.1h.max_hold_bars",
    }


def test_several_reference_problems_are_all_reported():
    doc = strategy_doc(
        indicators={"macd": {"fn": "MACD"}, "close": {"fn": "SMA"}},
        entry={"any": [{"left": "macd", "op": ">", "right": "macd.nope"}]},
        exit={"left": "rsi", "op": ">", "right": 70},
        execution_config={"take_profit": {"type": "risk_reward", "ratio": 2}},
    )
    assert set(problems_of(doc)) == {
        "indicators.close",
        "entry.any[0].left",
        "entry.any[0].right",
        "exit.left",
        "execution_config.take_profit",
    }


def test_structural_and_reference_problems_together():
    doc = strategy_doc(
        colour="blue",
        indicators={"bad": {"fn": "NOPE"}},
        entry={
            "all": [{"left": "rsi", "op": "<", "right": 30}, {"left": "bad", "op": ">", "right": 1}]
        },
        execution_config={"take_profit": {"type": "risk_reward", "ratio": 2}, "fee_rate": -1},
    )
    # a reference to an indicator whose fn is unknown is not reported twice
    assert set(problems_of(doc)) == {
        "colour",
        "indicators.bad.fn",
        "entry.all[0].left",
        "execution_config.take_profit",
        "execution_config.fee_rate",
    }


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ({"not": {"not": {"left": "close", "op": "=", "right": 1}}}, "entry.not.not.op"),
        ({"not": {"not": {"left": "nope", "op": ">", "right": 1}}}, "entry.not.not.left"),
        ({"any": [{"any": [{"left": "close", "op": "=", "right": 1}]}]}, "entry.any[0].any[0].op"),
        (
            {"not": {"all": [{"not": {"left": "close", "op": ">", "right": "x"}}]}},
            "entry.not.all[0].not.right",
        ),
        ({"all": [{"left": "close", "op": ">", "right": 1, "all": 2}]}, "entry.all[0].all"),
    ],
)
def test_nested_condition_paths(entry, path):
    assert path in problems_of(strategy_doc(entry=entry))


def test_strategy_invalid_is_a_value_error_listing_path_and_message():
    with pytest.raises(ValueError, match=r"indicators\.x\.fn: unknown TA-Lib function"):
        parse_strategy(strategy_doc(indicators={"x": {"fn": "NOPE"}}))


def test_input_is_not_mutated():
    doc = copy.deepcopy(DESIGN_EXAMPLE)
    parse_strategy(doc)
    assert doc == DESIGN_EXAMPLE


# --- JSON Schema ------------------------------------------------------------------------


def test_json_schema_export():
    schema = Strategy.model_json_schema()
    json.dumps(schema)  # serialisable
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"strategy_id", "name", "assets", "timeframe", "entry"}
    assert set(schema["properties"]) == {
        "strategy_id",
        "name",
        "status",
        "assets",
        "timeframe",
        "indicators",
        "entry",
        "exit",
        "short_entry",
        "short_exit",
        "execution_config",
    }
    defs = schema["$defs"]
    config = defs["ExecutionConfig"]["properties"]
    for key in (
        "position_sizing",
        "max_open_positions",
        "stop_loss",
        "take_profit",
        "time_based_exits",
        "fee_rate",
        "cooldown_config",
        "capital",
        "break_even_after",
        "max_open_positions_total",
        "max_drawdown",
    ):
        assert key in config
    stop_types = set(config["stop_loss"]["anyOf"][0]["discriminator"]["mapping"])
    assert stop_types == {"percent", "atr", "trailing_percent", "trailing_atr"}
    target_forms = config["take_profit"]["anyOf"][0]["oneOf"]
    assert [form.get("type") for form in target_forms] == [None, "array"]  # a level, or a list
    assert set(defs["PositionSizing"]["properties"]["type"]["enum"]) == {
        "fixed_notional",
        "fixed_quantity",
        "equity_percent",
        "risk_percent",
    }
    assert set(defs["CooldownTiers"]["properties"]) >= {
        "short_loss_limit",
        "short_window_bars",
        "long_loss_limit",
        "long_window_bars",
    }
    assert set(defs["Comparison"]["properties"]) == {"left", "op", "right"}
    assert set(defs["Comparison"]["properties"]["op"]["enum"]) == {
        "<",
        "<=",
        ">",
        ">=",
        "crosses_above",
        "crosses_below",
    }
    assert set(defs["Ref"]["properties"]) == {"ref", "shift"}
    assert set(defs["IndicatorDef"]["properties"]) == {"fn", "params", "timeframe"}
    assert "not" in defs["NotOf"]["properties"]
    text = json.dumps(schema)
    for tag in ('"percent"', '"atr"', '"risk_reward"', '"fixed_notional"', '"fixed_quantity"'):
        assert tag in text


def test_an_asset_listed_twice_is_refused_at_its_path() -> None:
    # Evaluated twice, it made two positions with one id and counted each loss twice.
    with pytest.raises(StrategyInvalid) as info:
        parse_strategy(strategy_doc(assets=["BTC/USDT", "ETH/USDT", "BTC/USDT"]))
    assert info.value.problems == [
        (
            "assets[2]",
            "BTC/USDT is listed twice (also assets[0]): each asset is evaluated once, with its "
            "own positions and cooldown",
        )
    ]


def test_thirty_assets_entering_at_once_are_refused_with_how_many_fit() -> None:
    # The DESIGN example's execution config: a signal exit, stop, target and cooldown make
    # 1 + 2 + 1 items per closing position, 4 per entry and 1 cooldown: 9 per asset.
    doc = strategy_doc(
        assets=[f"A{n:02d}/USD" for n in range(30)],
        exit={"left": "volume", "op": "<", "right": 1},
        execution_config={
            "stop_loss": {"type": "percent", "value": 0.02},
            "take_profit": {"type": "risk_reward", "ratio": 2.0},
            "cooldown_config": {"1h": {"short_loss_limit": 2, "short_window_bars": 12}},
        },
    )
    with pytest.raises(StrategyInvalid) as info:
        parse_strategy(doc)
    ((path, message),) = info.value.problems
    assert path == "assets"
    assert message.startswith(
        "30 assets can change up to 9 items each in one evaluation (272 with the state "
        "version and the event outbox), above the 100 one atomic commit may hold: with this "
        "execution_config at most 10 assets fit"
    )
    doc["assets"] = doc["assets"][:10]
    assert parse_strategy(doc).max_writes_per_evaluation == 92
    doc["assets"] = [*doc["assets"], "A10/USD"]
    with pytest.raises(StrategyInvalid):  # 11 would need 101
        parse_strategy(doc)


def test_positions_that_can_never_close_count_only_their_entry() -> None:
    # No stop, target, signal or time exit: nothing ever closes, so 100 open positions per
    # asset cost only the entry's position and market order (2 items), the state version and
    # the event outbox.
    doc = strategy_doc(execution_config={"max_open_positions": 100})
    assert parse_strategy(doc).max_writes_per_evaluation == 4


def test_a_short_condition_error_names_the_path_as_written() -> None:
    # pydantic locates it as short_entry.all.all[0].op (the union's tag doubled)
    doc = strategy_doc()
    doc["short_entry"] = {"all": [{"left": "close", "op": "=>", "right": 1}]}
    with pytest.raises(StrategyInvalid) as info:
        parse_strategy(doc)
    assert [path for path, _ in info.value.problems] == ["short_entry.all[0].op"]


def test_a_strategy_on_one_of_its_assets_computes_its_own_facts() -> None:
    # Replay narrows a multi-asset strategy to the asset of its history. pydantic's own
    # model_copy would keep the write budget cached for all three assets: per asset the
    # position, its stop and the market order of the entry, and the position and its stop
    # filled on the close (5), three times, and the state version and the outbox (2).
    doc = strategy_doc(
        assets=["BTC/USDT", "ETH/USDT", "SOL/USDT"],
        execution_config={"stop_loss": {"type": "percent", "value": 0.05}},
    )
    three = parse_strategy(doc)
    warmup = three.warmup_bars
    assert three.max_writes_per_evaluation == 17  # read, so cached
    one = three.model_copy(update={"assets": ["ETH/USDT"]})
    alone = parse_strategy({**doc, "assets": ["ETH/USDT"]})
    assert one.assets == ["ETH/USDT"]
    assert one.max_writes_per_evaluation == alone.max_writes_per_evaluation == 7
    assert one.warmup_bars == warmup
    assert one == alone
    assert three.max_writes_per_evaluation == 17  # the original keeps its own
    same = three.model_copy()  # nothing changed: the facts still hold, and are carried
    assert same.__dict__["max_writes_per_evaluation"] == 17
