"""TA-Lib indicators, driven entirely by TA-Lib's own function metadata.

Every TA-Lib function is available under its own name, with its own parameter and output
names; validation asks TA-Lib itself whether a parameter set is acceptable, so nothing here
is a hand-kept list that could drift from the library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import numpy as np
import talib
import talib.abstract

from engine.core.candles import CANDLE_FIELDS, Candles, FloatArray

# TA-Lib optional-input types: 0 real range, 1 real list, 2 integer range, 3 integer list.
_INTEGER_TYPES = {2, 3}
_PROBE_BARS = 64

# --- how much history a value needs (DESIGN §8, "one trading truth") ---------------------
#
# A recursive function (an EMA, Wilder's smoothing, an adaptive average...) depends on every
# earlier bar, so its value at t equals the whole-history value only once the influence of
# where its input began has decayed. TA-Lib's metadata flags such functions as having an
# "unstable period"; it does not flag the ones built on EMAs of their own (MACD, DEMA,
# TEMA, TRIX...) nor those whose parameters choose a moving-average type, so those are
# named here. A test runs every TA-Lib function on a window of `history_bars` and on the
# whole history and requires the same values to 1e-9 (relative to the series' scale), so a
# function missing from this table fails it.
_RECURSIVE_UNFLAGGED = frozenset(
    {
        "ADOSC", "ADXR", "APO", "CVI", "DEMA", "EFI", "ERI", "KC", "KDJ", "MACD", "MACDEXT",
        "MACDFIX", "MASSI", "PPO", "PVO", "SAR", "SAREXT", "SMI", "STOCHRSI", "SUPERTREND",
        "TEMA", "TRIX", "TSI", "ZLEMA",
    }
)  # fmt: skip
# Functions whose value depends on the first bar they are given however long the history
# (running totals, absolute positions in the input): no window makes live equal replay.
HISTORY_ANCHORED = frozenset(
    {"AD", "CUMSUM", "MAXINDEX", "MININDEX", "MINMAXINDEX", "NVI", "OBV", "PVI", "PVT", "VWAP", "WAD"}
)  # fmt: skip
# Bars of convergence per bar of the slowest time constant: an error decaying by at least
# (1 - 1/P) per bar falls below e**-32 (about 1e-14) of where it started after 32·P bars.
CONVERGENCE_PER_PERIOD = 32
# KAMA smooths with at least (2/31)**2 per bar, whatever its period: a time constant of 240.
_SLOWEST_PERIOD = {"KAMA": 240}


@dataclass(frozen=True)
class FunctionInfo:
    name: str
    parameters: Mapping[str, int | float]
    integer_parameters: frozenset[str]
    outputs: tuple[str, ...]
    # input name -> candle field(s) it reads by default, e.g. {"prices": ("high","low","close")}
    inputs: Mapping[str, tuple[str, ...]]


@cache
def function_names() -> frozenset[str]:
    return frozenset(talib.get_functions())


@cache
def function_info(name: str) -> FunctionInfo:
    """Metadata of a TA-Lib function; KeyError when TA-Lib has no such function."""
    if name not in function_names():
        raise KeyError(name)
    fn = talib.abstract.Function(name)
    info = fn.info
    opt_inputs = fn._Function__local.opt_inputs  # TA-Lib keeps parameter types only here
    integer = frozenset(k for k, v in opt_inputs.items() if v["type"] in _INTEGER_TYPES)
    inputs = {
        key: tuple(value) if isinstance(value, list) else (value,)
        for key, value in info["input_names"].items()
    }
    return FunctionInfo(
        name=name,
        parameters=dict(info["parameters"]),
        integer_parameters=integer,
        outputs=tuple(info["output_names"]),
        inputs=inputs,
    )


def check_indicator(
    name: str, params: Mapping[str, Any]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems with one indicator definition, each as (path below the indicator, message)."""
    if name not in function_names():
        return [
            (("fn",), f"unknown TA-Lib function {name!r}{did_you_mean(name, function_names())}")
        ]
    info = function_info(name)
    if name in HISTORY_ANCHORED:
        return [
            (
                ("fn",),
                f"{name} depends on the first bar it is given (a running total or a position in "
                "the input), so no amount of history makes its live value equal its value in a "
                "replay; it cannot be used",
            )
        ]
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for key in info.inputs:
        for source in info.inputs[key]:
            if source not in CANDLE_FIELDS:
                problems.append(
                    (("fn",), f"{name} needs input {source!r}, which is not a candle field")
                )
    for key, value in params.items():
        if key not in info.parameters:
            known = ", ".join(info.parameters) or "none"
            hint = did_you_mean(key, info.parameters)
            problems.append(
                (("params", key), f"unknown parameter for {name} (known: {known}){hint}")
            )
        elif isinstance(value, bool) or not isinstance(value, int | float):
            problems.append((("params", key), "must be a number"))
        elif not is_finite_number(value):
            problems.append((("params", key), "must be a finite number"))
        elif key in info.integer_parameters and float(value) != int(value):
            problems.append((("params", key), "must be a whole number"))
    if problems:
        return problems
    try:
        _run(name, params, _probe_inputs())
    except Exception as exc:  # TA-Lib reports bad values as a generic Exception
        detail = str(exc).split(":", 1)[-1].strip() or "rejected by TA-Lib"
        return [(("params",), f"TA-Lib rejects these parameters for {name}: {detail}")]
    return []


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """ "; did you mean 'X'?" for the closest of `choices` (any letter case), or ""."""
    import difflib  # only when a name is unknown: kept off the cold start

    by_key = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_key), n=1, cutoff=0.6)
    return f"; did you mean {by_key[close[0]]!r}?" if close else ""


def is_finite_number(value: int | float) -> bool:
    """False for NaN, infinities and ints beyond float range (valid JSON, not a float)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond float range
        return False


def lookback(name: str, params: Mapping[str, Any]) -> int:
    """Bars TA-Lib needs before the first defined value, for these parameters."""
    return _lookback(name, tuple(sorted(_coerce(name, params).items())))


@lru_cache(maxsize=4096)  # bounded: parameter sets come from users
def _lookback(name: str, params: tuple[tuple[str, int | float], ...]) -> int:
    # Only TA-Lib's abstract API tells the lookback; building its Function object costs
    # more than the computation itself on a few hundred bars, so ask once per parameter set.
    fn = talib.abstract.Function(name)
    fn.set_parameters(dict(params))
    return int(fn.lookback)


def is_recursive(name: str) -> bool:
    """True when the value at t depends on every earlier bar, not just the lookback."""
    fn = talib.abstract.Function(name)
    flags = fn.function_flags or []
    return (
        name in _RECURSIVE_UNFLAGGED
        or any("unstable" in flag.lower() for flag in flags)
        or any(key.endswith("matype") for key in function_info(name).parameters)
    )


def history_bars(name: str, params: Mapping[str, Any]) -> int:
    """Bars of input before bar t (t included) for the value at t to equal the value over
    the whole history: the lookback, plus for recursive functions 32 bars per bar of the
    slowest time constant P (the largest period parameter, or the lookback when larger; for
    SAR the inverse of its acceleration)."""
    return _history_bars(name, tuple(sorted(_coerce(name, params).items())))


@lru_cache(maxsize=4096)
def _history_bars(name: str, params: tuple[tuple[str, int | float], ...]) -> int:
    values = dict(params)
    need = _lookback(name, params) + 1
    if not is_recursive(name):
        return need
    merged = {**function_info(name).parameters, **values}
    periods = [float(v) for k, v in merged.items() if "period" in k and float(v) > 0]
    slowest = max([float(need), *periods, float(_SLOWEST_PERIOD.get(name, 0))])
    for key in ("acceleration", "accelerationinitlong", "accelerationinitshort"):
        if float(merged.get(key, 0)) > 0:
            slowest = max(slowest, 1 / float(merged[key]))
    return need + math.ceil(CONVERGENCE_PER_PERIOD * slowest)


def compute(name: str, params: Mapping[str, Any], candles: Candles) -> dict[str, FloatArray]:
    """Run a TA-Lib function on candles; one float array per TA-Lib output name."""
    info = function_info(name)
    if len(candles) == 0:
        return {out: np.empty(0, dtype=np.float64) for out in info.outputs}
    arrays = {f: candles.field(f) for f in CANDLE_FIELDS}
    result = _run(name, params, arrays)
    outputs = result if isinstance(result, tuple) else (result,)
    # TA-Lib leaves integer outputs (candlestick patterns, *INDEX, HT_TRENDMODE) at 0 during
    # warm-up instead of NaN; a value is not defined before the lookback, whatever its type.
    warmup = lookback(name, params)
    series: dict[str, FloatArray] = {}
    for out, values in zip(info.outputs, outputs, strict=True):
        array = np.array(values, dtype=np.float64)
        array[:warmup] = np.nan
        series[out] = array
    return series


def _coerce(name: str, params: Mapping[str, Any]) -> dict[str, int | float]:
    integer = function_info(name).integer_parameters
    return {k: int(v) if k in integer else float(v) for k, v in params.items()}


def _run(name: str, params: Mapping[str, Any], arrays: Mapping[str, FloatArray]) -> Any:
    """TA-Lib's function API (stateless, no per-call object), inputs in TA-Lib's own order."""
    inputs = (
        arrays[source] for sources in function_info(name).inputs.values() for source in sources
    )
    return getattr(talib, name)(*inputs, **_coerce(name, params))


@cache
def _probe_inputs() -> dict[str, FloatArray]:
    """A plausible market for TA-Lib to run a function on: only whether it accepts the
    parameters matters, not the values. A wave rather than random numbers: numpy.random's
    import alone costs a cold start a tenth of numpy's."""
    bar = np.arange(_PROBE_BARS, dtype=np.float64)
    close = 100 + 5 * np.sin(bar / 3) + bar / 10  # moves < 2 a bar: inside high and low
    return {
        "open": np.r_[close[0], close[:-1]],
        "high": close + 2,
        "low": close - 2,
        "close": close,
        "volume": 5 + 4 * np.cos(bar / 5),
    }


@dataclass
class IndicatorCache:
    """Indicator values shared by every strategy that asks for the same computation.

    Keyed by (asset, source timeframe, indicator timeframe, function, parameters), so a bulk
    run computes each distinct indicator on each market once. `computations` counts misses.
    """

    computations: int = 0
    _values: dict[tuple[Any, ...], dict[str, FloatArray]] = field(default_factory=dict)

    def get_or_compute(
        self,
        key: tuple[Any, ...],
        name: str,
        params: Mapping[str, Any],
        candles: Candles,
    ) -> dict[str, FloatArray]:
        found = self._values.get(key)
        if found is None:
            found = compute(name, params, candles)
            self._values[key] = found
            self.computations += 1
        return found
