"""The strategy object (DESIGN §3) as a pydantic v2 model: the one schema of a strategy.

Structural problems come from pydantic; indicator problems are checked against TA-Lib's
metadata; references between conditions and indicators are checked once the structure is
sound. Every problem carries its JSON path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from functools import cache, cached_property
from typing import Annotated, Any, Literal

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
    type: Literal["fixed_notional", "fixed_quantity"] = "fixed_quantity"
    value: Annotated[float, Field(gt=0, le=1e12)] = 1.0


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


StopLoss = Annotated[PercentStop | AtrLevel, Field(discriminator="type")]
TakeProfit = Annotated[PercentTarget | AtrLevel | RiskRewardTarget, Field(discriminator="type")]


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
    stop_loss: StopLoss | None = None
    take_profit: TakeProfit | None = None
    time_based_exits: TimeBasedExits = Field(default_factory=TimeBasedExits)
    fee_rate: Annotated[float, Field(ge=0, lt=0.1)] = 0.0
    cooldown_config: dict[Timeframe, CooldownTiers] | None = None
    # Legacy flat cooldown keys (DESIGN §5): still honoured, with a deprecation warning.
    cooldown_bars: Annotated[int, Field(ge=1)] | None = None
    daily_momentum_limit: Annotated[int, Field(ge=1)] | None = None
    weekly_momentum_limit: Annotated[int, Field(ge=1)] | None = None


# --- strategy ---------------------------------------------------------------------------


class Strategy(_Model):
    """A long-only strategy evaluated bar by bar on its primary timeframe."""

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
        resting = (config.stop_loss is not None) + (config.take_profit is not None)
        market_exit = int(
            self.exit is not None or config.time_based_exits.max_hold_bars is not None
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

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)


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
    roots = [strategy.entry] + ([strategy.exit] if strategy.exit is not None else [])
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
    for root in ("entry", "exit"):
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
                "(entry and exit together) are allowed",
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

    yield from walk(data.get("entry"), ("entry",))
    yield from walk(data.get("exit"), ("exit",))

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
    for key in ("stop_loss", "take_profit"):
        level = config.get(key)
        if (
            isinstance(level, dict)
            and level.get("type") == "atr"
            and isinstance(level.get("indicator"), str)
        ):
            yield from operand(level["indicator"], ("execution_config", key, "indicator"))
    take_profit = config.get("take_profit")
    if (
        isinstance(take_profit, dict)
        and take_profit.get("type") == "risk_reward"
        and not config.get("stop_loss")
    ):
        yield (
            ("execution_config", "take_profit"),
            "missing_stop_loss",
            "a risk_reward take-profit is priced from the stop: set execution_config.stop_loss",
        )
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


def format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def problems_from(error: ValidationError) -> list[tuple[str, str]]:
    """Flatten pydantic's errors into (JSON path, message), one per path.

    A union (an operand may be a number, a name or a ref) fails once per branch; those
    branch messages are merged so the caller reads one problem per place.
    """
    merged: dict[str, list[str]] = {}
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        # reference problems carry the document's own path already (no union tags in it)
        path = format_path(loc if err["type"] in _REFERENCE_CODES else _clean_loc(loc))
        messages = merged.setdefault(path, [])
        message = error_message(err)
        if message not in messages:
            messages.append(message)
    return [
        (path, msgs[0] if len(msgs) == 1 else "none of the accepted forms: " + "; ".join(msgs))
        for path, msgs in merged.items()
    ]


def error_message(err: Mapping[str, Any], keys: Iterable[str] = ()) -> str:
    """pydantic's message for one error; an unknown key gets the closest known key (of a
    strategy, or `keys`) as a suggestion."""
    message = str(err.get("msg", "invalid"))
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "extra_forbidden" and loc and isinstance(loc[-1], str):
        message += indicators.did_you_mean(loc[-1], _field_names() | set(keys))
    return message


@cache
def _field_names() -> frozenset[str]:
    """Every key a strategy document may hold somewhere: what an unknown key is matched to."""
    return frozenset(
        info.alias or name
        for model in _Model.__subclasses__()
        for name, info in model.model_fields.items()
    )


_UNION_TAGS = frozenset({"compare", "int", "float", "str", "Ref"})
_CONDITION_TAGS = frozenset({"all", "any", "not"})
_LEVEL_TAGS = frozenset({"percent", "atr", "risk_reward"})
_REFERENCE_CODES = frozenset(
    {
        "undefined_reference",
        "missing_stop_loss",
        "reserved_name",
        "invalid_timeframe",
        "too_deep",
        "too_many_conditions",
    }
)


def _is_tag(part: Any, cleaned: list[str | int]) -> bool:
    """Whether `part` is the tag pydantic puts right after a place holding a tagged union."""
    prev = cleaned[-1] if cleaned else None
    if part in _CONDITION_TAGS:  # a condition: entry, exit, an item of all/any, inside not
        return prev in ("entry", "exit", "not") or (
            isinstance(prev, int) and len(cleaned) > 1 and cleaned[-2] in ("all", "any")
        )
    return part in _LEVEL_TAGS and prev in ("stop_loss", "take_profit")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union tags so paths match the JSON the user wrote.

    entry.all.all[0] -> entry.all[0], entry.not.not.not.not.op -> entry.not.not.op,
    execution_config.stop_loss.percent.value -> execution_config.stop_loss.value.
    """
    cleaned: list[str | int] = []
    after_tag = False  # the part after a tag is the field itself, never another tag
    for part in loc:
        if isinstance(part, str) and (part in _UNION_TAGS or part.startswith("function-")):
            continue
        if not after_tag and _is_tag(part, cleaned):
            after_tag = True
            continue
        after_tag = False
        cleaned.append(part)
    return tuple(cleaned)


def parse_strategy(data: Any) -> Strategy:
    """Validate a strategy document; raises StrategyInvalid naming every problem."""
    try:
        return Strategy.model_validate(data)
    except ValidationError as exc:
        problems = problems_from(exc)
    if any(True for _ in _limit_problems(data)):
        raise StrategyInvalid(problems)  # too big to walk: the limit is the problem
    # The structure failed, so the reference checks did not run: add what they find.
    reported = {path for path, _ in problems}
    for loc, _code, message in _reference_problems(data):
        path = format_path(loc)
        if path not in reported:
            problems.append((path, message))
    raise StrategyInvalid(problems)
