"""The strategy object (DESIGN §3) as a pydantic v2 model: the one schema of a strategy.

Structural problems come from pydantic; indicator problems are checked against TA-Lib's
metadata; references between conditions and indicators are checked once the structure is
sound. Every problem carries its JSON path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache, cached_property
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from engine.core import indicators
from engine.core.candles import CANDLE_FIELDS
from engine.core.error_paths import CONDITION_ROOTS, format_path, problems_from
from engine.core.timeframes import TIMEFRAME_MS, Timeframe, timeframe_ms

STRATEGY_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# Exchange symbols such as BTC/USDT, EUR-USD, AAPL, BRK.B, ETH/USDT:USDT.
ASSET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,31}$"
# `POST /evaluate/bulk` would shadow a strategy with this id.
RESERVED_STRATEGY_IDS = frozenset({"bulk"})
INDICATOR_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"

# Every evaluation commits in one atomic transaction; DynamoDB's TransactWriteItems takes at
# most 100 items, the state version among them. A strategy whose worst case would not fit
# is refused when it is written, not when its signal could not become an order.
MAX_WRITES_PER_EVALUATION = 100
# Items every commit writes besides the changed ones: the strategy item (the state version)
# and the event outbox item that holds the commit's order events (DESIGN §12).
COMMIT_OVERHEAD_ITEMS = 2

# Limits on a strategy's conditions, checked on the raw document before anything recursive
# (validation, references, compilation, logging) walks it.
MAX_CONDITION_DEPTH = 32
MAX_CONDITIONS = 500

# Numbers a strategy may hold: finite, and small enough that prices and notionals computed
# from them stay finite (JSON has no NaN or infinity; 10**400 is valid JSON but not a float).
MAX_NUMBER = 1e15


def _finite(value: int | float) -> int | float:
    if not (indicators.is_finite_number(value) and abs(float(value)) <= MAX_NUMBER):
        raise PydanticCustomError(
            "number_out_of_range", "must be a finite number between -1e15 and 1e15"
        )
    return value


Number = Annotated[StrictInt | StrictFloat, AfterValidator(_finite)]
StrategyId = Annotated[str, Field(pattern=STRATEGY_ID_PATTERN)]
AssetSymbol = Annotated[str, Field(pattern=ASSET_PATTERN)]


class _Model(BaseModel):
    # strict: JSON types as written (true is not 1, "5" is not 5, 2.0 is not an integer)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


# --- indicators -------------------------------------------------------------------------


class IndicatorDef(_Model):
    """A named instance of a TA-Lib function, optionally on an informative timeframe."""

    fn: str = Field(description="TA-Lib function name, e.g. RSI, MACD, BBANDS")
    params: dict[str, Number] = Field(default_factory=dict, description="TA-Lib parameters")
    timeframe: Timeframe | None = Field(
        default=None, description="Informative timeframe; only bars closed by bar t are visible"
    )

    @model_validator(mode="after")
    def _check_against_talib(self) -> IndicatorDef:
        problems = indicators.check_indicator(self.fn, self.params)
        if problems:
            raise _errors(
                "IndicatorDef", [(path, "invalid_indicator", msg) for path, msg in problems]
            )
        return self

    @property
    def outputs(self) -> tuple[str, ...]:
        return indicators.function_info(self.fn).outputs

    @cached_property
    def params_key(self) -> tuple[tuple[str, float], ...]:
        return tuple(sorted((k, float(v)) for k, v in self.params.items()))


# --- conditions -------------------------------------------------------------------------


class Ref(_Model):
    """An operand's value `shift` bars before the bar being evaluated."""

    ref: str
    shift: Annotated[int, Field(ge=0, le=10_000)] = 0


Operand = Annotated[Number | Ref | str, Field(union_mode="left_to_right")]
ComparisonOp = Literal["<", "<=", ">", ">=", "crosses_above", "crosses_below"]


class Comparison(_Model):
    left: Operand
    op: ComparisonOp
    right: Operand


class AllOf(_Model):
    all: Annotated[list[Condition], Field(min_length=1)]


class AnyOf(_Model):
    any: Annotated[list[Condition], Field(min_length=1)]


class NotOf(_Model):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False, strict=True
    )
    not_: Condition = Field(alias="not")


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return {AllOf: "all", AnyOf: "any", NotOf: "not", Comparison: "compare"}.get(type(value))
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        return "compare"
    return None


Condition = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[Comparison, Tag("compare")],
    Discriminator(
        _condition_kind,
        custom_error_type="invalid_condition",
        custom_error_message="a condition is an object with all, any, not, or left/op/right",
    ),
]

AllOf.model_rebuild()
AnyOf.model_rebuild()
NotOf.model_rebuild()


# --- execution config -------------------------------------------------------------------


class PositionSizing(_Model):
    """`fixed_notional` (quote amount), `fixed_quantity`, or from the account's equity
    (capital plus realized PnL): `equity_percent` (notional = equity·value) and
    `risk_percent` (quantity = equity·value / |entry - stop|, needs a stop)."""

    type: Literal["fixed_notional", "fixed_quantity", "equity_percent", "risk_percent"] = (
        "fixed_quantity"
    )
    value: Annotated[float, Field(gt=0, le=1e12)] = 1.0

    @model_validator(mode="after")
    def _fraction_of_equity(self) -> PositionSizing:
        if self.type in ("equity_percent", "risk_percent") and self.value > 1:
            raise _errors(
                "PositionSizing",
                [
                    (
                        ("value",),
                        "invalid_fraction",
                        f"{self.type} takes a fraction of equity: 0 < value <= 1 (0.02 is 2%)",
                    )
                ],
            )
        return self


class PercentStop(_Model):
    type: Literal["percent"]
    value: Annotated[float, Field(gt=0, lt=1, description="0.02 places the stop 2% below entry")]


class AtrLevel(_Model):
    type: Literal["atr"]
    indicator: str = Field(description="name of an ATR-like indicator defined in `indicators`")
    multiplier: Annotated[float, Field(gt=0, le=1000)]


class PercentTarget(_Model):
    type: Literal["percent"]
    value: Annotated[
        float, Field(gt=0, le=100, description="0.04 places the target 4% above entry")
    ]


class RiskRewardTarget(_Model):
    type: Literal["risk_reward"]
    ratio: Annotated[float, Field(gt=0, le=1000)]


Activation = Annotated[
    float,
    Field(
        gt=0,
        le=100,
        description="trailing starts once a bar closes at least this far in profit "
        "(0.01: 1% beyond the entry price); absent: from the entry on",
    ),
]


class TrailingPercentStop(_Model):
    """A stop placed like `percent`, ratcheted at every bar's close: a long's to
    max(stop, close·(1 - value)), a short's to min(stop, close·(1 + value))."""

    type: Literal["trailing_percent"]
    value: Annotated[float, Field(gt=0, lt=1, description="distance from the close")]
    activation: Activation | None = None


class TrailingAtrStop(_Model):
    """A stop placed like `atr`, ratcheted at every bar's close to close ∓ multiplier·ATR."""

    type: Literal["trailing_atr"]
    indicator: str = Field(description="name of an ATR-like indicator defined in `indicators`")
    multiplier: Annotated[float, Field(gt=0, le=1000)]
    activation: Activation | None = None


Fraction = Annotated[
    float, Field(gt=0, le=1, description="share of the entry quantity this target sells")
]


class PercentTargetPart(PercentTarget):
    fraction: Fraction


class AtrTargetPart(AtrLevel):
    fraction: Fraction


class RiskRewardTargetPart(RiskRewardTarget):
    fraction: Fraction


StopLoss = Annotated[
    PercentStop | AtrLevel | TrailingPercentStop | TrailingAtrStop, Field(discriminator="type")
]
TakeProfitLevel = Annotated[
    PercentTarget | AtrLevel | RiskRewardTarget, Field(discriminator="type")
]
TakeProfitPart = Annotated[
    PercentTargetPart | AtrTargetPart | RiskRewardTargetPart, Field(discriminator="type")
]
# One target, or a scale-out list (DESIGN §11) whose fractions sum to 1; told apart by
# their JSON type so an error names one form, not both.
TakeProfit = Annotated[
    Annotated[TakeProfitLevel, Tag("level")]
    | Annotated[list[TakeProfitPart], Field(min_length=1, max_length=10), Tag("levels")],
    Discriminator(
        lambda value: "levels" if isinstance(value, list | tuple) else "level",
        custom_error_type="invalid_take_profit",
        custom_error_message="a take-profit is one level or a list of levels with fractions",
    ),
]
# Fractions may be written as decimals (0.3 + 0.3 + 0.4): they sum to 1 within this.
FRACTION_TOLERANCE = 1e-9


class MaxDrawdown(_Model):
    """Entries are blocked for `halt_bars` bars once equity falls to (1 - value)·peak."""

    value: Annotated[float, Field(gt=0, lt=1, description="0.2: a 20% fall from the peak")]
    halt_bars: Annotated[int, Field(ge=1, le=100_000)]


class Instrument(_Model):
    """What an exchange accepts for one asset: prices in ticks, quantities in lots
    (core.rounding says how each is rounded)."""

    tick_size: Annotated[float, Field(gt=0, le=1e9)] | None = Field(
        default=None, description="price increment: stops and targets are multiples of it"
    )
    lot_size: Annotated[float, Field(gt=0, le=1e9)] | None = Field(
        default=None, description="quantity increment: quantities are rounded down to it"
    )


class TimeBasedExits(_Model):
    max_hold_bars: Annotated[int, Field(ge=1)] | None = None


class CooldownTiers(_Model):
    """Loss-streak limits for one timeframe; a tier with limit or window 0 is off."""

    short_loss_limit: Annotated[int, Field(ge=0)] = 0
    short_window_bars: Annotated[int, Field(ge=0)] = 0
    long_loss_limit: Annotated[int, Field(ge=0)] = 0
    long_window_bars: Annotated[int, Field(ge=0)] = 0
    max_hold_bars: Any = Field(default=None, exclude=True, json_schema_extra={"deprecated": True})

    @field_validator("max_hold_bars")
    @classmethod
    def _misplaced_max_hold(cls, value: Any) -> None:
        if value is not None:
            raise PydanticCustomError(
                "misplaced_key",
                "max_hold_bars is not a cooldown key: it belongs in "
                "execution_config.time_based_exits.max_hold_bars",
            )
        return None


class ExecutionConfig(_Model):
    position_sizing: PositionSizing = Field(default_factory=PositionSizing)
    max_open_positions: Annotated[int, Field(ge=1, le=100)] = 1
    max_open_positions_total: Annotated[int, Field(ge=1, le=5000)] | None = Field(
        default=None, description="open positions across all the strategy's assets"
    )
    stop_loss: StopLoss | None = None
    take_profit: TakeProfit | None = None
    break_even_after: Annotated[int, Field(ge=1, le=10)] | None = Field(
        default=None,
        description="move the stop to the entry price once this many scale-out targets filled",
    )
    capital: Annotated[float, Field(gt=0, le=1e12)] = Field(
        default=10_000.0, description="starting equity; equity = capital + realized PnL"
    )
    max_drawdown: MaxDrawdown | None = None
    time_based_exits: TimeBasedExits = Field(default_factory=TimeBasedExits)
    instruments: dict[str, Instrument] | None = Field(
        default=None,
        max_length=50,
        description="tick and lot size per asset (optional; an asset without one is not "
        "rounded, and one the strategy does not hold is ignored)",
    )
    fee_rate: Annotated[float, Field(ge=0, lt=0.1)] = 0.0
    cooldown_config: dict[Timeframe, CooldownTiers] | None = None
    # Legacy flat cooldown keys (DESIGN §5): still honoured, with a deprecation warning.
    cooldown_bars: Annotated[int, Field(ge=1)] | None = None
    daily_momentum_limit: Annotated[int, Field(ge=1)] | None = None
    weekly_momentum_limit: Annotated[int, Field(ge=1)] | None = None


# --- strategy ---------------------------------------------------------------------------


class Strategy(_Model):
    """A strategy evaluated bar by bar on its primary timeframe: `entry`/`exit` are the long
    side, `short_entry`/`short_exit` the short side."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, title="Strategy", allow_inf_nan=False, strict=True
    )

    strategy_id: StrategyId
    name: Annotated[str, Field(min_length=1, max_length=200)]
    status: Literal["active", "paused"] = "active"
    assets: Annotated[list[AssetSymbol], Field(min_length=1, max_length=50)]
    timeframe: Timeframe
    indicators: dict[Annotated[str, Field(pattern=INDICATOR_NAME_PATTERN)], IndicatorDef] = Field(
        default_factory=dict
    )
    entry: Condition
    exit: Condition | None = None
    short_entry: Condition | None = None
    short_exit: Condition | None = None
    execution_config: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @model_validator(mode="before")
    @classmethod
    def _within_limits(cls, data: Any) -> Any:
        problems = list(_limit_problems(data))
        if problems:
            raise _errors("Strategy", problems)
        return data

    @field_validator("strategy_id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_STRATEGY_IDS:
            raise PydanticCustomError(
                "reserved_id",
                "'{value}' is reserved: /evaluate/bulk is the bulk route",
                {"value": value},
            )
        return value

    @model_validator(mode="after")
    def _check_references(self) -> Strategy:
        problems = list(_reference_problems(self.model_dump(mode="json", by_alias=True)))
        if problems:
            raise _errors("Strategy", problems)
        if self.max_writes_per_evaluation > MAX_WRITES_PER_EVALUATION:
            raise _errors("Strategy", [_too_large_problem(self)])
        return self

    @cached_property
    def max_writes_per_evaluation(self) -> int:
        """Items one evaluation may write at worst, the state version and outbox included.

        Per asset: each of `max_open_positions` positions closes (the position, its resting
        orders filled or cancelled, a market exit order when signal or time exits exist;
        nothing when it has no way to close), then one entry (position, market order, resting orders), and its cooldown state.
        """
        config = self.execution_config
        # a scale-out target list rests one order per level; a partial fill or a stop move
        # touches no more items than the position's close would (position, resting orders)
        resting = (config.stop_loss is not None) + len(target_levels(config.take_profit))
        market_exit = int(
            self.exit is not None
            or self.short_exit is not None
            or config.time_based_exits.max_hold_bars is not None
        )
        cooldown = int(
            bool(config.cooldown_config)
            or any(
                getattr(config, key) is not None
                for key in ("cooldown_bars", "daily_momentum_limit", "weekly_momentum_limit")
            )
        )
        # a position with no stop, target, signal or time exit never closes
        closing = 1 + resting + market_exit if resting or market_exit else 0
        per_asset = config.max_open_positions * closing + (2 + resting) + cooldown
        return len(self.assets) * per_asset + COMMIT_OVERHEAD_ITEMS

    @cached_property
    def warnings(self) -> list[tuple[str, str]]:
        """(code, message) for what is valid but probably not what the author meant."""
        found: list[tuple[str, str]] = []
        unused = sorted(set(self.execution_config.cooldown_config or {}) - {self.timeframe})
        if unused:
            keys = ", ".join(repr(k) for k in unused)
            found.append(
                (
                    "cooldown_config_unused",
                    f"execution_config.cooldown_config has entries for {keys}, which this "
                    f"{self.timeframe} strategy never uses: only the entry keyed by its primary "
                    f"timeframe ({self.timeframe!r}) applies"
                    + (
                        ""
                        if self.timeframe in (self.execution_config.cooldown_config or {})
                        else ", so it has no cooldown"
                    ),
                )
            )
        return found

    # Derived facts, computed once per (immutable) strategy.
    @cached_property
    def warmup_bars(self) -> int:
        """Primary-timeframe bars up to t for every value the conditions read at t (and at
        t minus their shifts) to equal its value over the whole history.

        Each indicator needs `indicators.history_bars` of its own timeframe; an informative
        one is resampled from the primary candles, so it needs that many informative bars
        plus the partial one a window starts in and the one still forming, in primary bars.
        """
        primary = timeframe_ms(self.timeframe)
        need = 1
        for ind in self.indicators.values():
            bars = indicators.history_bars(ind.fn, ind.params)
            if ind.timeframe is not None:
                bars = (bars + 2) * max(1, timeframe_ms(ind.timeframe) // primary)
            need = max(need, bars)
        return need + _max_shift(self)

    @cached_property
    def indicators_key(
        self,
    ) -> tuple[tuple[str, str, tuple[tuple[str, float], ...], str | None], ...]:
        """Its indicator definitions as a hashable key: strategies with equal keys share one
        frame of values per asset (`MarketData.frame`, where strategies whose indicators are
        not an object already seen look theirs up by it)."""
        return tuple((n, i.fn, i.params_key, i.timeframe) for n, i in self.indicators.items())

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy, which carries the facts cached above; a copy with other values
        (replay's strategy narrowed to one asset, whose write budget counts one) drops them,
        to compute its own."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            for name in _CACHED_FACTS:
                copy.__dict__.pop(name, None)
        return copy


# Strategy's derived facts, which a copy with other values must not inherit.
_CACHED_FACTS: Final = tuple(
    name for name, attr in vars(Strategy).items() if isinstance(attr, cached_property)
)


def _too_large_problem(strategy: Strategy) -> tuple[tuple[str | int, ...], str, str]:
    per_asset = (strategy.max_writes_per_evaluation - COMMIT_OVERHEAD_ITEMS) // len(strategy.assets)
    fits = (MAX_WRITES_PER_EVALUATION - COMMIT_OVERHEAD_ITEMS) // per_asset
    return (
        ("assets",),
        "evaluation_too_large",
        f"{len(strategy.assets)} assets can change up to {per_asset} items each in one "
        f"evaluation ({strategy.max_writes_per_evaluation} with the state version and the event "
        "outbox), above the "
        f"{MAX_WRITES_PER_EVALUATION} one atomic commit may hold: with this execution_config "
        f"at most {fits} assets fit; split the assets over several strategies or lower "
        "execution_config.max_open_positions",
    )


def _max_shift(strategy: Strategy) -> int:
    shift = 1  # crosses_* look one bar back
    for cond in _conditions(strategy):
        if isinstance(cond, Comparison):
            for operand in (cond.left, cond.right):
                if isinstance(operand, Ref):
                    shift = max(shift, operand.shift + 1)
    return shift


def _conditions(strategy: Strategy) -> Iterator[Any]:
    roots = [strategy.entry] + [
        c for c in (strategy.exit, strategy.short_entry, strategy.short_exit) if c is not None
    ]
    stack: list[Any] = list(roots)
    while stack:
        cond = stack.pop()
        yield cond
        if isinstance(cond, AllOf):
            stack.extend(cond.all)
        elif isinstance(cond, AnyOf):
            stack.extend(cond.any)
        elif isinstance(cond, NotOf):
            stack.append(cond.not_)


def _limit_problems(data: Any) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """Conditions nested deeper than MAX_CONDITION_DEPTH or more than MAX_CONDITIONS of them,
    found on the raw document without recursion."""
    if not isinstance(data, dict):
        return
    total = 0
    for root in CONDITION_ROOTS:
        stack: list[tuple[Any, int]] = [(data.get(root), 1)]
        deepest = 0
        while stack and deepest <= MAX_CONDITION_DEPTH and total <= MAX_CONDITIONS:
            cond, depth = stack.pop()
            if not isinstance(cond, dict):
                continue
            total += 1
            deepest = max(deepest, depth)
            for key in ("all", "any"):
                if isinstance(cond.get(key), list):
                    stack.extend((child, depth + 1) for child in cond[key])
            if "not" in cond:
                stack.append((cond["not"], depth + 1))
        if deepest > MAX_CONDITION_DEPTH:
            yield (
                (root,),
                "too_deep",
                f"conditions nest more than {MAX_CONDITION_DEPTH} levels deep; "
                f"at most {MAX_CONDITION_DEPTH} are allowed",
            )
            return
        if total > MAX_CONDITIONS:
            yield (
                (root,),
                "too_many_conditions",
                f"more than {MAX_CONDITIONS} conditions; at most {MAX_CONDITIONS} "
                "(all conditions together) are allowed",
            )
            return


def _reference_problems(data: Any) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """Problems of reference between parts of a strategy document, on its raw JSON form.

    Working on plain data lets `parse_strategy` report these alongside structural errors
    instead of only after the structure is fixed. Parts that are malformed are skipped:
    the structural validation names them.
    """
    if not isinstance(data, dict):
        return
    raw_indicators = data.get("indicators")
    indicators_ = raw_indicators if isinstance(raw_indicators, dict) else {}
    outputs: dict[str, tuple[str, ...] | None] = {}  # None: outputs unknown (bad fn)
    for name, ind in indicators_.items():
        fn = ind.get("fn") if isinstance(ind, dict) else None
        known_fn = isinstance(fn, str) and fn in indicators.function_names()
        outputs[name] = indicators.function_info(str(fn)).outputs if known_fn else None
        if name in CANDLE_FIELDS:
            yield ("indicators", name), "reserved_name", f"{name!r} is a candle field"

    def problem(ref: str) -> str | None:
        if ref in CANDLE_FIELDS:
            return None
        base, dot, output = ref.partition(".")
        if base not in outputs:
            return f"{ref!r} is not a candle field or a defined indicator"
        outs = outputs[base]
        if outs is None or (dot and output in outs) or (not dot and len(outs) == 1):
            return None
        fn = indicators_[base]["fn"]
        if dot:
            return f"indicator {base!r} ({fn}) has no output {output!r}; outputs: {', '.join(outs)}"
        choices = ", ".join(f"{base}.{o}" for o in outs)
        return f"indicator {base!r} ({fn}) has several outputs; use one of {choices}"

    def operand(value: Any, path: tuple[str | int, ...]) -> Iterator[Any]:
        if isinstance(value, dict) and isinstance(value.get("ref"), str):
            value, path = value["ref"], (*path, "ref")
        if isinstance(value, str) and (message := problem(value)) is not None:
            yield path, "undefined_reference", message

    def walk(cond: Any, path: tuple[str | int, ...]) -> Iterator[Any]:
        if not isinstance(cond, dict):
            return
        for key in ("all", "any"):
            if isinstance(cond.get(key), list):
                for i, child in enumerate(cond[key]):
                    yield from walk(child, (*path, key, i))
                return
        if "not" in cond:
            yield from walk(cond["not"], (*path, "not"))
            return
        yield from operand(cond.get("left"), (*path, "left"))
        yield from operand(cond.get("right"), (*path, "right"))

    for root in CONDITION_ROOTS:
        yield from walk(data.get(root), (root,))

    assets = data.get("assets")
    first_at: dict[str, int] = {}
    for i, asset in enumerate(assets if isinstance(assets, list) else []):
        if not isinstance(asset, str):
            continue
        if asset in first_at:
            yield (
                ("assets", i),
                "duplicate_asset",
                f"{asset} is listed twice (also assets[{first_at[asset]}]): each asset is "
                "evaluated once, with its own positions and cooldown",
            )
        first_at.setdefault(asset, i)

    config = data.get("execution_config")
    config = config if isinstance(config, dict) else {}
    yield from _execution_problems(config, operand)
    primary = data.get("timeframe")
    for name, ind in indicators_.items():
        tf = ind.get("timeframe") if isinstance(ind, dict) else None
        if (
            isinstance(tf, str)
            and isinstance(primary, str)
            and tf in TIMEFRAME_MS
            and primary in TIMEFRAME_MS
            and TIMEFRAME_MS[tf] < TIMEFRAME_MS[primary]
        ):
            yield (
                ("indicators", name, "timeframe"),
                "invalid_timeframe",
                f"informative timeframe {tf} is finer than the strategy's {primary}",
            )


def target_levels(take_profit: Any) -> list[Any]:
    """The take-profit levels of an execution config: none, one, or a scale-out list."""
    if take_profit is None:
        return []
    return list(take_profit) if isinstance(take_profit, list) else [take_profit]


def _execution_problems(
    config: dict[str, Any], operand: Any
) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """Combinations within execution_config that cannot work (DESIGN §3, §11)."""
    stop = config.get("stop_loss")
    take_profit = config.get("take_profit")
    levels: list[tuple[tuple[str | int, ...], Any]] = [(("execution_config", "stop_loss"), stop)]
    if isinstance(take_profit, list):
        levels += [
            (("execution_config", "take_profit", i), item) for i, item in enumerate(take_profit)
        ]
    else:
        levels.append((("execution_config", "take_profit"), take_profit))
    for path, level in levels:
        if (
            isinstance(level, dict)
            and level.get("type") in ("atr", "trailing_atr")
            and isinstance(level.get("indicator"), str)
        ):
            yield from operand(level["indicator"], (*path, "indicator"))
        if (
            path[1] == "take_profit"
            and isinstance(level, dict)
            and level.get("type") == "risk_reward"
            and not stop
        ):
            yield (
                path,
                "missing_stop_loss",
                "a risk_reward take-profit is priced from the stop: set execution_config.stop_loss",
            )
    if isinstance(take_profit, list) and take_profit:
        fractions = [i.get("fraction") if isinstance(i, dict) else None for i in take_profit]
        numbers = [f for f in fractions if isinstance(f, int | float) and not isinstance(f, bool)]
        if len(numbers) == len(fractions) and abs(sum(numbers) - 1) > FRACTION_TOLERANCE:
            yield (
                ("execution_config", "take_profit"),
                "invalid_fractions",
                f"the fractions of a scale-out take-profit list must sum to 1; they sum to "
                f"{sum(numbers):g}",
            )
    break_even = config.get("break_even_after")
    if isinstance(break_even, int) and not isinstance(break_even, bool):
        if not isinstance(take_profit, list):
            yield (
                ("execution_config", "break_even_after"),
                "invalid_break_even",
                "break_even_after counts filled scale-out targets: execution_config.take_profit "
                "must be a list of targets",
            )
        elif break_even > len(take_profit):
            yield (
                ("execution_config", "break_even_after"),
                "invalid_break_even",
                f"break_even_after is {break_even} but the take-profit list has only "
                f"{len(take_profit)} targets",
            )
        if not stop:
            yield (
                ("execution_config", "break_even_after"),
                "missing_stop_loss",
                "break_even_after moves the stop: set execution_config.stop_loss",
            )
    sizing = config.get("position_sizing")
    if isinstance(sizing, dict) and sizing.get("type") == "risk_percent" and not stop:
        yield (
            ("execution_config", "position_sizing"),
            "missing_stop_loss",
            "risk_percent sizing divides the risked equity by the distance to the stop: "
            "set execution_config.stop_loss",
        )


def _errors(title: str, problems: list[tuple[tuple[str | int, ...], str, str]]) -> ValidationError:
    details = [
        InitErrorDetails(type=PydanticCustomError(code, message), loc=path, input=None)
        for path, code, message in problems
    ]
    return ValidationError.from_exception_data(title, details)


class StrategyInvalid(ValueError):
    """A strategy failed validation; `problems` lists every (path, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))


@cache
def strategy_keys() -> frozenset[str]:
    """Every key a strategy document may hold somewhere: what an unknown key is matched to."""
    return frozenset(
        info.alias or name
        for model in _Model.__subclasses__()
        for name, info in model.model_fields.items()
    )


def parse_strategy(data: Any) -> Strategy:
    """Validate a strategy document; raises StrategyInvalid naming every problem."""
    try:
        return Strategy.model_validate(data)
    except ValidationError as exc:
        problems = problems_from(exc, strategy_keys())
    if any(True for _ in _limit_problems(data)):
        raise StrategyInvalid(problems)  # too big to walk: the limit is the problem
    # The structure failed, so the reference checks did not run: add what they find.
    reported = {path for path, _ in problems}
    for loc, _code, message in _reference_problems(data):
        path = format_path(loc)
        if path not in reported:
            problems.append((path, message))
    raise StrategyInvalid(problems)
