"""Execution state and evaluation results: what storage loads and saves, what the API returns."""

from __future__ import annotations

import keyword
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined

OrderSide = Literal["enter_long", "exit_long", "enter_short", "exit_short"]
Direction = Literal["long", "short"]
OrderType = Literal["market", "stop_loss", "take_profit"]
OrderStatus = Literal["filled", "open", "cancelled"]
ExitReason = Literal["stop_loss", "take_profit", "signal", "time"]


# What a position holds, as numbers JSON can carry and a price can be: finite, and true numbers
# (strict: a boolean is not 1). A position may come from a caller (a draft's positions).
Price = Annotated[float, Field(gt=0, le=1e15, allow_inf_nan=False, strict=True)]
Amount = Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False, strict=True)]
Money = Annotated[float, Field(ge=-1e18, le=1e18, allow_inf_nan=False, strict=True)]
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def _after_1970(value: datetime) -> datetime:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if aware < EARLIEST:
        raise ValueError("must be 1970-01-01T00:00:00Z or later")
    return value


Time = Annotated[datetime, AfterValidator(_after_1970)]


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Order(_State):
    order_id: str
    position_id: str
    strategy_id: str
    asset: str
    side: OrderSide
    type: OrderType
    quantity: float
    price: float | None = Field(description="fill price, or the trigger price of a resting order")
    status: OrderStatus
    reason: str
    created_at: datetime = Field(description="open time of the bar that created the order")
    filled_at: datetime | None = None


class Position(_State):
    """An open or closed position; a closed position is a trade.

    A scale-out target that fills reduces `quantity` (what is still held) and adds its PnL to
    `realized_pnl`; the position closes when nothing remains, `pnl` then being the PnL of all
    its fills (DESIGN §11).
    """

    position_id: str
    strategy_id: str
    asset: str
    side: Direction = "long"
    status: Literal["open", "closed"] = "open"
    entry_time: Time = Field(description="open time of the entry bar")
    entry_price: Price
    quantity: Price = Field(description="quantity still held (at the last fill, once closed)")
    initial_quantity: Price | None = Field(
        default=None, description="quantity entered; absent when equal to `quantity`"
    )
    entry_fee: Amount = Field(default=0.0, description="fee of the entry, on all its quantity")
    realized_pnl: Money = Field(default=0.0, description="PnL of the partial fills so far")
    targets_filled: Annotated[int, Field(ge=0, le=10)] = 0
    trailing_active: bool = Field(default=False, description="the trailing stop has activated")
    checked_through: Time | None = Field(
        default=None,
        description="open time of the last bar whose resting orders were checked and whose "
        "close moved the stop; absent: none since the entry bar changed anything",
    )
    stop_loss_price: Price | None = None
    take_profit_price: Price | None = None
    exit_time: Time | None = None
    exit_price: Price | None = None
    exit_fee: Amount | None = None
    exit_reason: ExitReason | None = None
    pnl: Money | None = None

    @property
    def entered_quantity(self) -> float:
        return self.initial_quantity if self.initial_quantity is not None else self.quantity


class LossRecord(_State):
    exit_time: datetime
    position_id: str


class CooldownState(_State):
    """Per (strategy, asset): recent losing exits and the trip that currently governs."""

    asset: str
    losses: list[LossRecord] = Field(default_factory=list)
    tripped_at: datetime | None = Field(default=None, description="bar at which the tier tripped")
    blocked_bars: int = Field(default=0, description="bars after tripped_at still blocked")
    tier: Literal["short", "long"] | None = None


class ExecutionState(_State):
    """Everything an evaluation needs besides the strategy and candles.

    `version` increases with every committed change; storage conditions its commit on it.
    """

    strategy_id: str
    version: int = 0
    positions: list[Position] = Field(default_factory=list, description="open positions")
    orders: list[Order] = Field(default_factory=list, description="orders of open positions")
    cooldowns: dict[str, CooldownState] = Field(default_factory=dict)
    realized_pnl: float = Field(default=0.0, description="PnL of every fill that closed a quantity")
    equity_peak: float | None = Field(
        default=None, description="highest equity seen at an evaluation (max_drawdown guard)"
    )
    halted_at: datetime | None = Field(
        default=None, description="bar at which the max_drawdown guard last halted entries"
    )
    last_bar: datetime | None = Field(
        default=None,
        description="open time of the newest bar a committed evaluation was at (the schedule's "
        "bookkeeping: due means a newer bar has closed)",
    )


class Warning(_State):
    code: str
    message: str


class CooldownStatus(_State):
    """Frozen: most evaluations report the one inactive status of an asset (`status_at`)."""

    model_config = ConfigDict(frozen=True)  # and _State's extra="forbid": pydantic merges them

    asset: str
    active: bool
    tier: Literal["short", "long"] | None = None
    until: datetime | None = Field(
        default=None, description="last bar at which entries are blocked"
    )
    remaining_bars: int = Field(default=0, description="bars from this one to `until`, inclusive")


class GuardStatus(_State):
    """A guard of DESIGN §11 and whether it blocks entries at this bar."""

    guard: Literal["max_open_positions_total", "max_drawdown"]
    active: bool
    until: datetime | None = Field(default=None, description="last bar at which it blocks")
    remaining_bars: int = 0
    detail: str = ""


class ClosedTrade(_State):
    """One fill that closed a quantity: a whole position, or one scale-out target of it."""

    position_id: str
    asset: str
    side: Direction = "long"
    entry_time: datetime
    exit_time: datetime
    entry_price: float
    exit_price: float
    quantity: float
    fees: float
    pnl: float
    exit_reason: ExitReason


class StopMove(_State):
    """A trailing stop that only moved: storage updates the stop order's level in place."""

    position_id: str
    order_id: str
    price: float
    checked_through: datetime
    trailing_active: bool


class Account(_State):
    """The strategy-wide account figures an evaluation changed (on the strategy item)."""

    realized_pnl: float
    equity_peak: float | None = None
    halted_at: datetime | None = None


class Changes(_State):
    """What an evaluation changed: the items storage must write, nothing else."""

    positions: list[Position] = Field(default_factory=list)
    orders: list[Order] = Field(default_factory=list)
    cooldowns: list[CooldownState] = Field(default_factory=list)
    stop_moves: list[StopMove] = Field(default_factory=list)
    account: Account | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.positions or self.orders or self.cooldowns or self.stop_moves or self.account
        )


class EvaluationResult(_State):
    strategy_id: str
    bar: datetime | None = Field(description="open time of the newest closed bar evaluated")
    persisted: bool = False
    orders: list[Order] = Field(default_factory=list)
    positions: list[Position] = Field(default_factory=list)
    closed_trades: list[ClosedTrade] = Field(default_factory=list)
    cooldowns: list[CooldownStatus] = Field(default_factory=list)
    equity: float | None = Field(
        default=None, description="capital plus the strategy's realized PnL (DESIGN §11)"
    )
    guards: list[GuardStatus] = Field(default_factory=list)
    warnings: list[Warning] = Field(default_factory=list)
    bars_passed_over: int = Field(
        default=0,
        description="closed bars between the previous evaluation's bar and this one that were "
        "never evaluated (missed or late ticks): their resting orders were caught up, their "
        "signals were not acted on",
    )
    state: ExecutionState = Field(exclude=True)
    changes: Changes = Field(default_factory=Changes, exclude=True)


_Built = TypeVar("_Built", bound=BaseModel)


@dataclass(frozen=True)
class _Plain:
    """How `assemble` builds a model: `build`, a function made for the model that takes its
    fields as keywords, and the one fields-set object every instance it builds shares
    (naming every field: adding a field name to it, all pydantic ever does to a fields-set,
    changes nothing, and copies get their own)."""

    build: Callable[..., Any]
    every: set[str]


_ABSENT: Any = object()


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    """Sets one of BaseModel's slots on an instance: its slot's own setter, a third cheaper
    than `object.__setattr__` finding it by name (every assembled model sets three)."""
    slot = BaseModel.__dict__.get(name)
    if slot is None or not hasattr(slot, "__set__"):  # pydantic laid its slots out otherwise
        return lambda model, value: object.__setattr__(model, name, value)
    setter: Callable[[Any, Any], None] = slot.__set__
    return setter


_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")

# per model, or None when it needs model_construct's full treatment (aliases, a post-init
# hook, private attributes)
_PLAIN: dict[type[BaseModel], _Plain | None] = {}


def _plain(cls: type[BaseModel]) -> _Plain | None:
    if cls.__pydantic_post_init__ or cls.__private_attributes__:
        return None
    if cls.model_config.get("extra") == "allow":
        return None
    if any(f.alias or f.validation_alias for f in cls.model_fields.values()):
        return None
    if not all(n.isidentifier() and not keyword.iskeyword(n) for n in cls.model_fields):
        return None
    every = set(cls.model_fields)
    return _Plain(_builder(cls, every), every)


def _builder(cls: type[BaseModel], every: set[str]) -> Callable[..., Any]:
    """A function taking `cls`'s fields as keyword-only arguments that builds an instance,
    written for the model as dataclasses write an `__init__`: Python's own argument binding
    refuses a name that is no field, a required one left out raises, and the instance's
    dict is one literal in the fields' order (the order its JSON has). Several times cheaper
    than merging a template with the given values and checking the names."""
    scope: dict[str, Any] = {
        "_ABSENT": _ABSENT,
        "_cls": cls,
        "_every": every,
        "_set": object.__setattr__,
        "_set_fields_set": _set_fields_set,
        "_set_extra": _set_extra,
        "_set_private": _set_private,
    }
    params: list[str] = []
    checks: list[str] = []
    for n, (name, info) in enumerate(cls.model_fields.items()):
        if info.default_factory is not None:
            scope[f"_factory{n}"] = info.default_factory
            params.append(f"{name}=_ABSENT")
            checks.append(f"    if {name} is _ABSENT:\n        {name} = _factory{n}()")
        elif info.default is PydanticUndefined:
            params.append(f"{name}=_ABSENT")
            checks.append(
                f"    if {name} is _ABSENT:\n"
                f"        raise TypeError({f'{cls.__name__}: field {name!r} is required'!r})"
            )
        else:
            scope[f"_default{n}"] = info.default
            params.append(f"{name}=_default{n}")
    fields = ", ".join(f"{name!r}: {name}" for name in cls.model_fields)
    source = "\n".join(
        [
            f"def {cls.__name__}(*, {', '.join(params)}):",
            *checks,
            # every name of its own starts with _, which no field's name can
            "    _model = _cls.__new__(_cls)",
            f"    _set(_model, '__dict__', {{{fields}}})",
            "    _set_fields_set(_model, _every)",
            "    _set_extra(_model, None)",
            "    _set_private(_model, None)",
            "    return _model",
        ]
    )
    exec(source, scope)  # our own source, written from the model's field names
    built: Callable[..., Any] = scope[cls.__name__]
    return built


def assembler(cls: type[_Built]) -> Callable[..., _Built]:
    """`cls.model_construct` without its per-field bookkeeping (several times cheaper, which
    replay's thousands of evaluations feel): a function taking the fields as keywords that
    builds an instance with the same fields, defaults and field order, and no validation.
    For parts that were validated when built. Call it as `assembler(Order)(order_id=...)`:
    the keywords go straight to the model's own function, which `assemble` costs a second
    time.

    Unlike model_construct, every field counts as set (defaults are filled in), the
    fields-set is one object per model class (a set per instance was most of the memory of
    a bulk run's answers: six models per evaluation, ~300 bytes a set), and a required field
    left out or a name that is no field is a TypeError, not a model missing it or carrying it.
    """
    try:
        plain = _PLAIN[cls]
    except KeyError:
        plain = _PLAIN[cls] = _plain(cls)
    if plain is None:
        return cls.model_construct
    build: Callable[..., _Built] = plain.build
    return build


def assemble(cls: type[_Built], /, **values: Any) -> _Built:
    """`assembler(cls)(**values)`, where one call's cost does not matter."""
    return assembler(cls)(**values)


def revise(model: _Built, /, **update: Any) -> _Built:
    """`model.model_copy(update=update)` for the evaluation's own models, at a fraction of its
    cost (replay makes thousands of these): the same fields with `update` applied, no
    validation (the values are built to the model's types, as with model_copy), and the fields
    set by the original plus the updated ones."""
    copy = model.__class__.__new__(model.__class__)
    object.__setattr__(copy, "__dict__", {**model.__dict__, **update})
    known = model.__pydantic_fields_set__
    # assemble's shared set names every field and can be shared again; any other set (a
    # validated model's) is the copy's own
    plain = _PLAIN.get(model.__class__)
    shared = plain is not None and known is plain.every
    _set_fields_set(copy, known if shared else known | set(update))
    _set_extra(copy, model.__pydantic_extra__)
    _set_private(copy, model.__pydantic_private__)
    return copy


class _AlwaysEmpty(list[Any]):
    """An empty list that refuses to grow: a part of NO_CHANGES (equal to [] as any)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            "NO_CHANGES is shared by every evaluation that changed nothing: build a Changes"
        )

    append = extend = insert = __setitem__ = __iadd__ = __imul__ = _refuse


# The changes of every evaluation that changed nothing, most of a bulk run's: one object for
# all of them (a Changes with its four lists is ~550 bytes an answer), its lists refusing
# to grow so that nothing can add to it.
NO_CHANGES: Changes = assemble(
    Changes,
    positions=_AlwaysEmpty(),
    orders=_AlwaysEmpty(),
    cooldowns=_AlwaysEmpty(),
    stop_moves=_AlwaysEmpty(),
)
