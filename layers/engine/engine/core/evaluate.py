"""Evaluating one strategy at its newest closed bar (DESIGN §4), for every asset.

Pure: given the strategy, its execution state, a market snapshot and the clock, it returns
the result and the new state, and names exactly what changed so storage writes only that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.core import ids
from engine.core.candles import Candles
from engine.core.conditions import Frame, Predicate, compile_condition
from engine.core.cooldown import (
    CooldownRules,
    cooldown_rules,
    deprecation_message,
    record_losses,
    status_at,
)
from engine.core.market import MarketData
from engine.core.state import (
    Changes,
    ClosedTrade,
    CooldownState,
    CooldownStatus,
    EvaluationResult,
    ExecutionState,
    ExitReason,
    Order,
    Position,
    Warning,
    assemble,
)
from engine.core.strategy import (
    AtrLevel,
    PercentStop,
    PercentTarget,
    RiskRewardTarget,
    Strategy,
)
from engine.core.timeframes import iso, timeframe_ms, to_datetime, to_ms


@dataclass(frozen=True)
class CompiledStrategy:
    """What evaluation derives from a strategy once, however many bars or assets follow."""

    strategy: Strategy
    entry: Predicate
    exit: Predicate | None
    cooldown: CooldownRules

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (asset, timeframe) candles it reads: its primary ones only, since informative
        timeframes are resampled from them (DESIGN §8)."""
        return [(asset, self.strategy.timeframe) for asset in self.strategy.assets]

    def history_needed(self, state: ExecutionState | None, now_ms: int) -> int:
        """Closed bars of the primary timeframe an evaluation at `now_ms` must see.

        Enough for every indicator value to equal its whole-history value (`warmup_bars`),
        and for every bar the evaluation processes (from the oldest open position's entry,
        for catch-up and bars held, up to t) to see each cooldown window back from it, so a
        loss or trip older than the fetched candles can never count (DESIGN §4, §5, §8).
        The clock overestimates bars when markets close, which only fetches more.
        """
        window = self.cooldown.longest_window + _HISTORY_MARGIN
        need = max(self.strategy.warmup_bars, window)
        if state is not None and state.positions:
            oldest = min(to_ms(p.entry_time) for p in state.positions)
            since_entry = (now_ms - oldest) // timeframe_ms(self.strategy.timeframe) + 1
            need = max(need, since_entry + window)
        return int(need)


# Bars fetched beyond what the rules count, so a bar closing as the fetch runs is covered.
_HISTORY_MARGIN = 2


def compile_strategy(strategy: Strategy) -> CompiledStrategy:
    return CompiledStrategy(
        strategy=strategy,
        entry=compile_condition(strategy.entry),
        exit=compile_condition(strategy.exit) if strategy.exit is not None else None,
        cooldown=cooldown_rules(strategy.execution_config, strategy.timeframe),
    )


def evaluate(
    strategy: Strategy | CompiledStrategy,
    state: ExecutionState,
    market: MarketData,
    now_ms: int,
) -> EvaluationResult:
    """Evaluate at the newest bar of each asset that has closed by `now_ms`."""
    compiled = strategy if isinstance(strategy, CompiledStrategy) else compile_strategy(strategy)
    run = _Run(compiled, state, market, now_ms)
    for asset in compiled.strategy.assets:
        run.asset(asset)
    run.keep_untraded_positions()
    return run.result()


@dataclass
class _Fill:
    index: int
    price: float
    reason: ExitReason


def first_resting_fill(
    candles: Candles, start: int, end: int, stop: float | None, target: float | None
) -> _Fill | None:
    """The first bar in [start, end] at which the stop or the target fills, and at what price.

    Gap through either fills at the open; otherwise the stop wins a bar that touches both.
    """
    if start > end or (stop is None and target is None):
        return None
    opens = candles.open[start : end + 1]
    hit = np.zeros(len(opens), dtype=bool)
    if stop is not None:
        hit |= candles.low[start : end + 1] <= stop
    if target is not None:
        hit |= candles.high[start : end + 1] >= target
    if not hit.any():
        return None
    k = int(np.argmax(hit))
    i = start + k
    open_price = float(opens[k])
    if stop is not None and open_price <= stop:
        return _Fill(i, open_price, "stop_loss")
    if target is not None and open_price >= target:
        return _Fill(i, open_price, "take_profit")
    if stop is not None and float(candles.low[i]) <= stop:
        return _Fill(i, stop, "stop_loss")
    assert target is not None
    return _Fill(i, target, "take_profit")


@dataclass
class _Run:
    compiled: CompiledStrategy
    state: ExecutionState
    market: MarketData
    now_ms: int
    positions: list[Position] = field(default_factory=list)  # open after the run
    orders: dict[str, Order] = field(default_factory=dict)  # orders of open positions
    cooldowns: dict[str, CooldownState] = field(default_factory=dict)
    reported: dict[str, Order] = field(default_factory=dict)
    closed: list[ClosedTrade] = field(default_factory=list)
    statuses: list[CooldownStatus] = field(default_factory=list)
    warnings: dict[tuple[str, str], Warning] = field(default_factory=dict)
    changes: Changes = field(default_factory=lambda: assemble(Changes))
    bar_ms: int | None = None

    def __post_init__(self) -> None:
        self.cooldowns = dict(self.state.cooldowns)
        self.orders = {o.order_id: o for o in self.state.orders}
        for code, message in self.strategy.warnings:
            self.warn(code, message)
        if self.compiled.cooldown.legacy:
            message = deprecation_message(self.strategy.execution_config, self.strategy.timeframe)
            self.warn("deprecated_cooldown_keys", message)

    @property
    def strategy(self) -> Strategy:
        return self.compiled.strategy

    def warn(self, code: str, message: str) -> None:
        self.warnings.setdefault((code, message), Warning(code=code, message=message))

    def keep_untraded_positions(self) -> None:
        """Positions on assets the strategy no longer lists stay open, untouched, reported.

        Dropping them would lose them from the state; closing them would invent a fill.
        """
        traded = set(self.strategy.assets)
        for position in self.state.positions:
            if position.asset in traded:
                continue
            self.positions.append(position)
            for order in self._orders_of(position.position_id):
                self.reported.setdefault(order.order_id, order)
            self.warn(
                "untraded_position",
                f"position {position.position_id} is on {position.asset}, which the strategy "
                "no longer trades: it stays open and is not managed until the asset is added back",
            )

    # --- per asset ------------------------------------------------------------------------

    def asset(self, asset: str) -> None:
        strategy = self.strategy
        open_positions = sorted(
            (p for p in self.state.positions if p.asset == asset), key=lambda p: p.entry_time
        )
        candles = self.market.get(asset, strategy.timeframe)
        n = candles.closed_count(strategy.timeframe, self.now_ms) if candles is not None else 0
        if candles is None or n == 0:
            self.warn("no_market_data", f"no closed {strategy.timeframe} candles for {asset}")
            self.positions.extend(open_positions)
            self.statuses.append(CooldownStatus(asset=asset, active=False))
            return
        t = n - 1
        t_ms = int(candles.time[t])
        self.bar_ms = t_ms if self.bar_ms is None else max(self.bar_ms, t_ms)
        frame = self.market.frame(strategy, asset)
        losses: list[tuple[int, str]] = []

        still_open: list[Position] = []
        for position in open_positions:
            entry_ms = to_ms(position.entry_time)
            if entry_ms < int(candles.time[0]):
                self.warn(
                    "insufficient_history",
                    f"{asset}: position {position.position_id} entered before the first candle; "
                    "bars held and catch-up start at the first candle",
                )
            start = int(np.searchsorted(candles.time, entry_ms, side="right"))
            # 1. resting stop and target, over every bar since entry up to t (catch-up)
            fill = first_resting_fill(
                candles, start, t, position.stop_loss_price, position.take_profit_price
            )
            if fill is not None:
                losses += self._close(position, candles, fill.index, fill.price, fill.reason)
                continue
            # 2. signal exit and 3. time exit act at t only, never on the entry bar itself
            if entry_ms < t_ms:
                if self.compiled.exit is not None and self._true(
                    self.compiled.exit, frame, t, asset
                ):
                    losses += self._close(position, candles, t, float(candles.close[t]), "signal")
                    continue
                max_hold = strategy.execution_config.time_based_exits.max_hold_bars
                if max_hold is not None and t - start + 1 >= max_hold:
                    losses += self._close(position, candles, t, float(candles.close[t]), "time")
                    continue
            still_open.append(position)

        # 4. cooldown from the trades closed so far
        cooldown = self.cooldowns.get(asset)
        if losses and self.compiled.cooldown.tiers:
            cooldown = record_losses(
                cooldown or CooldownState(asset=asset),
                self.compiled.cooldown,
                candles.time,
                losses,
                t,
            )
            self.cooldowns[asset] = cooldown
            self.changes.cooldowns.append(cooldown)
        status = status_at(cooldown, asset, candles.time, t, strategy.timeframe)
        self.statuses.append(status)

        # 5. entry
        config = strategy.execution_config
        entered_here = any(to_ms(p.entry_time) == t_ms for p in still_open)
        if (
            not status.active
            and not entered_here
            and len(still_open) < config.max_open_positions
            and self._true(self.compiled.entry, frame, t, asset)
        ):
            opened = self._enter(asset, candles, frame, t)
            if opened is not None:
                still_open.append(opened)

        # 6. open positions keep (and report) their resting orders
        self.positions.extend(still_open)
        for position in still_open:
            for order in self._orders_of(position.position_id):
                self.reported.setdefault(order.order_id, order)

    def _true(self, predicate: Predicate, frame: Frame, t: int, asset: str) -> bool:
        undefined: set[str] = set()
        verdict = predicate(frame, t, undefined)
        if undefined:
            names = ", ".join(sorted(undefined))
            self.warn(
                "undefined_value",
                f"{asset}: {names} not defined at this bar (warm-up or missing data); "
                "comparisons using them are false",
            )
        return verdict

    def _orders_of(self, position_id: str) -> list[Order]:
        return [o for o in self.orders.values() if o.position_id == position_id]

    # --- exits ----------------------------------------------------------------------------

    def _close(
        self, position: Position, candles: Candles, index: int, price: float, reason: ExitReason
    ) -> list[tuple[int, str]]:
        """Close a position at bar `index`; returns [(index, id)] when the trade lost money."""
        fee_rate = self.strategy.execution_config.fee_rate
        exit_ms = int(candles.time[index])
        exit_time = to_datetime(exit_ms)
        exit_fee = price * position.quantity * fee_rate
        pnl = (price - position.entry_price) * position.quantity - position.entry_fee - exit_fee
        closed = position.model_copy(
            update={
                "status": "closed",
                "exit_time": exit_time,
                "exit_price": price,
                "exit_fee": exit_fee,
                "exit_reason": reason,
                "pnl": pnl,
            }
        )
        self.changes.positions.append(closed)

        resting = self._orders_of(position.position_id)
        for order in resting:
            if order.status != "open":
                continue
            if order.type == reason:
                update = {"status": "filled", "price": price, "filled_at": exit_time}
            else:
                update = {"status": "cancelled"}
            changed = order.model_copy(update=update)
            self._record_order(changed)
        if reason in ("signal", "time"):
            market_exit = Order(
                order_id=ids.order_id(position.position_id, "exit_long", exit_ms),
                position_id=position.position_id,
                strategy_id=position.strategy_id,
                asset=position.asset,
                side="exit_long",
                type="market",
                quantity=position.quantity,
                price=price,
                status="filled",
                reason=reason,
                created_at=exit_time,
                filled_at=exit_time,
            )
            self._record_order(market_exit)
        for order in resting:
            self.orders.pop(order.order_id, None)

        self.closed.append(
            ClosedTrade(
                position_id=position.position_id,
                asset=position.asset,
                entry_time=position.entry_time,
                exit_time=exit_time,
                entry_price=position.entry_price,
                exit_price=price,
                quantity=position.quantity,
                fees=position.entry_fee + exit_fee,
                pnl=pnl,
                exit_reason=reason,
            )
        )
        return [(index, position.position_id)] if pnl < 0 else []

    def _record_order(self, order: Order) -> None:
        self.changes.orders.append(order)
        self.reported[order.order_id] = order

    # --- entry ----------------------------------------------------------------------------

    def _enter(self, asset: str, candles: Candles, frame: Frame, t: int) -> Position | None:
        config = self.strategy.execution_config
        price = float(candles.close[t])
        t_ms = int(candles.time[t])
        stop = self._level(config.stop_loss, price, frame, t, stop=None, is_stop=True)
        target = self._level(config.take_profit, price, frame, t, stop=stop, is_stop=False)
        if (config.stop_loss is not None and stop is None) or (
            config.take_profit is not None and target is None
        ):
            self.warn(
                "entry_skipped",
                f"{asset}: entry signal at {iso(t_ms)} skipped: "
                "its stop or target could not be priced (indicator undefined or not beyond the price)",
            )
            return None
        sizing = config.position_sizing
        quantity = sizing.value / price if sizing.type == "fixed_notional" else sizing.value
        if not np.isfinite(quantity) or quantity <= 0:
            self.warn("entry_skipped", f"{asset}: cannot size a position at price {price}")
            return None
        entry_time = to_datetime(t_ms)
        position_id = ids.position_id(self.strategy.strategy_id, asset, t_ms)
        position = Position(
            position_id=position_id,
            strategy_id=self.strategy.strategy_id,
            asset=asset,
            entry_time=entry_time,
            entry_price=price,
            quantity=quantity,
            entry_fee=price * quantity * config.fee_rate,
            stop_loss_price=stop,
            take_profit_price=target,
        )
        self.changes.positions.append(position)

        def order(kind: str, side: str, type_: str, at: float, status: str) -> Order:
            return Order.model_validate(
                {
                    "order_id": ids.order_id(position_id, kind, t_ms),
                    "position_id": position_id,
                    "strategy_id": self.strategy.strategy_id,
                    "asset": asset,
                    "side": side,
                    "type": type_,
                    "quantity": quantity,
                    "price": at,
                    "status": status,
                    "reason": "entry" if kind == "enter_long" else kind,
                    "created_at": entry_time,
                    "filled_at": entry_time if status == "filled" else None,
                }
            )

        self._record_order(order("enter_long", "enter_long", "market", price, "filled"))
        for kind, level in (("stop_loss", stop), ("take_profit", target)):
            if level is not None:
                resting = order(kind, "exit_long", kind, level, "open")
                self._record_order(resting)
                self.orders[resting.order_id] = resting
        return position

    def _level(
        self,
        spec: PercentStop | PercentTarget | AtrLevel | RiskRewardTarget | None,
        price: float,
        frame: Frame,
        t: int,
        *,
        stop: float | None,
        is_stop: bool,
    ) -> float | None:
        """Price a stop or a target from the entry price at bar t; None when it can't be."""
        if spec is None:
            return None
        if isinstance(spec, PercentStop):
            level = price * (1 - spec.value)
        elif isinstance(spec, PercentTarget):
            level = price * (1 + spec.value)
        elif isinstance(spec, RiskRewardTarget):
            if stop is None:
                return None
            level = price + spec.ratio * (price - stop)
        else:
            distance = spec.multiplier * float(frame[spec.indicator][t])
            level = price - distance if is_stop else price + distance
        if (
            not np.isfinite(level)
            or (is_stop and not 0 < level < price)
            or (not is_stop and level <= price)
        ):
            return None
        return float(level)

    # --- result ---------------------------------------------------------------------------

    def result(self) -> EvaluationResult:
        open_ids = {p.position_id for p in self.positions}
        # Every part was validated when it was built: assemble without validating again.
        new_state = assemble(
            ExecutionState,
            strategy_id=self.strategy.strategy_id,
            version=self.state.version,
            positions=self.positions,
            orders=[o for o in self.orders.values() if o.position_id in open_ids],
            cooldowns=self.cooldowns,
        )
        return assemble(
            EvaluationResult,
            strategy_id=self.strategy.strategy_id,
            persisted=False,
            bar=to_datetime(self.bar_ms) if self.bar_ms is not None else None,
            orders=list(self.reported.values()),
            positions=self.positions,
            closed_trades=self.closed,
            cooldowns=self.statuses,
            warnings=list(self.warnings.values()),
            state=new_state,
            changes=self.changes,
        )
