"""Evaluating one strategy at its newest closed bar (DESIGN §4), for every asset.

Pure: given the strategy, its execution state, a market snapshot and the clock, it returns
the result and the new state, and names exactly what changed so storage writes only that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from engine.core import ids
from engine.core.candles import Candles
from engine.core.conditions import Frame, Predicate, compile_condition
from engine.core.cooldown import (
    CooldownRules,
    bar_index,
    cooldown_rules,
    deprecation_message,
    record_losses,
    status_at,
)
from engine.core.market import MarketData
from engine.core.resting import Target, walk
from engine.core.rounding import round_price, round_quantity
from engine.core.state import (
    NO_CHANGES,
    Account,
    Changes,
    ClosedTrade,
    CooldownState,
    CooldownStatus,
    Direction,
    EvaluationResult,
    ExecutionState,
    ExitReason,
    GuardStatus,
    Order,
    Position,
    StopMove,
    Warning,
    assembler,
    revise,
)
from engine.core.strategy import (
    AtrLevel,
    Condition,
    PercentStop,
    PercentTarget,
    RiskRewardTarget,
    Strategy,
    TrailingAtrStop,
    TrailingPercentStop,
    target_levels,
)
from engine.core.timeframes import iso, timeframe_ms, to_datetime, to_ms


@dataclass(frozen=True, slots=True)
class CompiledStrategy:
    """What evaluation derives from a strategy once, however many bars or assets follow."""

    strategy: Strategy
    entry: Predicate
    exit: Predicate | None
    cooldown: CooldownRules
    short_entry: Predicate | None = None
    short_exit: Predicate | None = None

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (asset, timeframe) candles it reads: its primary ones only, since informative
        timeframes are resampled from them (DESIGN §8)."""
        return [(asset, self.strategy.timeframe) for asset in self.strategy.assets]

    def for_strategy(self, strategy: Strategy) -> CompiledStrategy:
        """These rules for another strategy with the same body (a template's instance): only
        the strategy differs. Direct, as dataclasses.replace costs a bulk run ~1 µs a strategy."""
        return CompiledStrategy(
            strategy, self.entry, self.exit, self.cooldown, self.short_entry, self.short_exit
        )

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
        short_entry=_maybe(strategy.short_entry),
        short_exit=_maybe(strategy.short_exit),
    )


def _maybe(condition: Condition | None) -> Predicate | None:
    return compile_condition(condition) if condition is not None else None


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
        run.exits(asset)
    run.keep_untraded_positions()
    untraded = list(run.positions)
    for item in run.assets:
        run.positions.extend(item.still_open)
    # Guards look at the whole account after every asset's exits, before any entry, so the
    # order of the assets decides nothing but which asset takes the last free slot.
    run.guard()
    for item in run.assets:
        run.entries(item)
    run.positions = [p for item in run.assets for p in item.still_open] + untraded
    return run.result()


@dataclass(slots=True)
class _Asset:
    """One asset between the exits (steps 1-4) and the entry (step 5) of a run."""

    asset: str
    candles: Candles
    frame: Frame
    t: int
    still_open: list[Position]
    cooldown: CooldownStatus


_SIGN: dict[Direction, float] = {"long": 1.0, "short": -1.0}


@dataclass(slots=True)
class _Run:
    compiled: CompiledStrategy
    state: ExecutionState
    market: MarketData
    now_ms: int
    positions: list[Position] = field(default_factory=list)  # open after the run
    orders: dict[str, Order] = field(init=False)  # orders of open positions
    cooldowns: dict[str, CooldownState] = field(init=False)
    reported: dict[str, Order] = field(default_factory=dict)
    closed: list[ClosedTrade] = field(default_factory=list)
    statuses: list[CooldownStatus] = field(default_factory=list)
    warnings: dict[tuple[str, str], Warning] = field(default_factory=dict)
    made: Changes | None = None  # what changed, made at the first change (most runs: none)
    bar_ms: int | None = None
    realized: float = 0.0
    assets: list[_Asset] = field(default_factory=list)
    equity_peak: float | None = None
    halted_at: datetime | None = None
    strategy: Strategy = field(init=False)  # the compiled one's, read at every step

    def __post_init__(self) -> None:
        self.strategy = self.compiled.strategy
        self.cooldowns = dict(self.state.cooldowns)
        self.orders = {o.order_id: o for o in self.state.orders}
        self.realized = self.state.realized_pnl
        self.equity_peak = self.state.equity_peak
        self.halted_at = self.state.halted_at
        for code, message in self.strategy.warnings:
            self.warn(code, message)
        if self.compiled.cooldown.legacy:
            message = deprecation_message(self.strategy.execution_config, self.strategy.timeframe)
            self.warn("deprecated_cooldown_keys", message)

    @property
    def changes(self) -> Changes:
        if self.made is None:
            self.made = assembler(Changes)()
        return self.made

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

    def exits(self, asset: str) -> None:
        """Steps 1-4 for one asset: resting orders (catch-up), signal and time exits, cooldown."""
        strategy = self.strategy
        held = self.state.positions
        open_positions = (
            sorted((p for p in held if p.asset == asset), key=lambda p: p.entry_time)
            if held
            else []
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
        for before in open_positions:
            entry_ms = to_ms(before.entry_time)
            if entry_ms < int(candles.time[0]):
                self.warn(
                    "insufficient_history",
                    f"{asset}: position {before.position_id} entered before the first candle; "
                    "bars held and catch-up start at the first candle",
                )
            start = int(candles.time.searchsorted(entry_ms, side="right"))
            # 1. resting stop and targets, over every bar since entry up to t (catch-up)
            position, loss = self._resting(before, candles, frame, start, t)
            if position is None:
                losses += loss
                continue
            # 2. signal exit and 3. time exit act at t only, never on the entry bar itself
            if entry_ms < t_ms:
                signal = self.compiled.exit if position.side == "long" else self.compiled.short_exit
                if signal is not None and self._true(signal, frame, t, asset):
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
        self.assets.append(_Asset(asset, candles, frame, t, still_open, status))

    def entries(self, item: _Asset) -> None:
        """Step 5 (entry, either side) and step 6 for one asset, after every asset's exits."""
        config = self.strategy.execution_config
        asset, candles, frame, t, still_open = (
            item.asset,
            item.candles,
            item.frame,
            item.t,
            item.still_open,
        )
        t_ms = int(candles.time[t])
        entered_here = bool(still_open) and any(to_ms(p.entry_time) == t_ms for p in still_open)
        total = config.max_open_positions_total
        if (
            not item.cooldown.active
            and not entered_here
            and len(still_open) < config.max_open_positions
            and (total is None or len(self.positions) < total)
            and not self._halted(candles, t)
        ):
            sides: list[tuple[Direction, Predicate | None]] = [
                ("long", self.compiled.entry),
                ("short", self.compiled.short_entry),
            ]
            for side, predicate in sides:
                if predicate is None or not self._true(predicate, frame, t, asset):
                    continue
                opposite = [p for p in still_open if p.side != side]
                if opposite:
                    self.warn(
                        "opposite_position_open",
                        f"{asset}: {side} entry signal at {to_datetime(t_ms).isoformat()} "
                        f"skipped: {len(opposite)} {opposite[0].side} position(s) still open "
                        "(an asset holds one direction at a time)",
                    )
                    continue
                opened = self._enter(asset, candles, frame, t, side)
                if opened is not None:
                    still_open.append(opened)
                    self.positions.append(opened)
                    break

        # 6. open positions keep (and report) their resting orders
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

    # --- resting orders -------------------------------------------------------------------

    def _resting(
        self, position: Position, candles: Candles, frame: Frame, start: int, t: int
    ) -> tuple[Position | None, list[tuple[int, str]]]:
        """Step 1 for one position; (the position still open or None, its loss if it closed).

        Bars up to `checked_through` were walked by an evaluation that changed the position
        and wrote that; walking them again could fill at a stop that moved since. Bars after
        it that an evaluation walked without changing anything are walked again, to the same
        result: nothing filled and nothing moved there.
        """
        config = self.strategy.execution_config
        if position.checked_through is not None:
            start = max(
                start,
                int(candles.time.searchsorted(to_ms(position.checked_through), side="right")),
            )
        orders = [o for o in self._orders_of(position.position_id) if o.status == "open"]
        stop_order = next((o for o in orders if o.type == "stop_loss"), None)
        targets = [
            Target(o.order_id, float(o.price or 0.0), o.quantity)
            for o in orders
            if o.type == "take_profit"
        ]
        trailing = (
            config.stop_loss
            if isinstance(config.stop_loss, TrailingPercentStop | TrailingAtrStop)
            else None
        )
        walked = walk(
            candles,
            frame,
            start,
            t,
            short=position.side == "short",
            entry_price=position.entry_price,
            remaining=position.quantity,
            stop=position.stop_loss_price if stop_order is not None else None,
            targets=targets,
            targets_filled=position.targets_filled,
            trailing=trailing if stop_order is not None else None,
            trailing_active=position.trailing_active,
            break_even_after=config.break_even_after,
            tick=self._increments(position.asset)[0],
        )
        partial = walked.fills if not walked.closed else walked.fills[:-1]
        for fill in partial:
            position = self._partial(position, candles, fill.index, fill.price, fill.quantity)
            self._fill_order(fill.order_id, fill.price, fill.quantity, candles, fill.index)
        if stop_order is not None and (partial or walked.stop_moved):
            # the stop order carries the current level and what remains, whatever follows
            stop_order = revise(stop_order, price=walked.stop, quantity=position.quantity)
            self.orders[stop_order.order_id] = stop_order
        if walked.closed:
            last = walked.fills[-1]
            reason: ExitReason = "stop_loss" if last.reason == "stop_loss" else "take_profit"
            position = revise(position, stop_loss_price=walked.stop)
            return None, self._close(
                position, candles, last.index, last.price, reason, last.order_id
            )
        if not partial and not walked.stop_moved:
            return position, []
        t_time = to_datetime(int(candles.time[t]))
        position = revise(
            position,
            stop_loss_price=walked.stop,
            take_profit_price=walked.targets[0].price if walked.targets else None,
            trailing_active=walked.trailing_active,
            checked_through=t_time,
        )
        if stop_order is not None:
            self.reported[stop_order.order_id] = stop_order
        if partial:
            self.changes.positions.append(position)
            if stop_order is not None:
                self.changes.orders.append(stop_order)
        elif stop_order is not None and walked.stop is not None:
            self.changes.stop_moves.append(
                StopMove(
                    position_id=position.position_id,
                    order_id=stop_order.order_id,
                    price=walked.stop,
                    checked_through=t_time,
                    trailing_active=walked.trailing_active,
                )
            )
        return position, []

    def _fill_order(
        self, order_id: str | None, price: float, quantity: float, candles: Candles, index: int
    ) -> None:
        if order_id is None or order_id not in self.orders:
            return
        at = to_datetime(int(candles.time[index]))
        filled = revise(
            self.orders.pop(order_id),
            status="filled",
            price=price,
            quantity=quantity,
            filled_at=at,
        )
        self._record_order(filled)

    def _fill_pnl(
        self, position: Position, price: float, quantity: float
    ) -> tuple[float, float, float]:
        """(pnl, exit fee, share of the entry fee) of a fill closing `quantity` at `price`."""
        exit_fee = price * quantity * self.strategy.execution_config.fee_rate
        entry_share = position.entry_fee * quantity / position.entered_quantity
        gross = _SIGN[position.side] * (price - position.entry_price) * quantity
        return gross - entry_share - exit_fee, exit_fee, entry_share

    def _trade(
        self,
        position: Position,
        candles: Candles,
        index: int,
        price: float,
        quantity: float,
        reason: ExitReason,
    ) -> float:
        """Record one fill that closed `quantity` as a trade; returns its PnL."""
        pnl, exit_fee, entry_share = self._fill_pnl(position, price, quantity)
        self.realized += pnl
        self.closed.append(
            assembler(ClosedTrade)(
                position_id=position.position_id,
                asset=position.asset,
                side=position.side,
                entry_time=position.entry_time,
                exit_time=to_datetime(int(candles.time[index])),
                entry_price=float(position.entry_price),
                exit_price=float(price),
                quantity=float(quantity),
                fees=float(entry_share + exit_fee),
                pnl=float(pnl),
                exit_reason=reason,
            )
        )
        return pnl

    def _partial(
        self, position: Position, candles: Candles, index: int, price: float, quantity: float
    ) -> Position:
        """A scale-out target filled part of the position: a trade of that quantity."""
        pnl = self._trade(position, candles, index, price, quantity, "take_profit")
        return revise(
            position,
            initial_quantity=position.entered_quantity,
            quantity=position.quantity - quantity,
            realized_pnl=position.realized_pnl + pnl,
            targets_filled=position.targets_filled + 1,
        )

    # --- exits ----------------------------------------------------------------------------

    def _close(
        self,
        position: Position,
        candles: Candles,
        index: int,
        price: float,
        reason: ExitReason,
        filled_order: str | None = None,
    ) -> list[tuple[int, str]]:
        """Close what remains of a position at bar `index`; [(index, id)] when the position
        lost money over all its fills (DESIGN §5, §11)."""
        exit_ms = int(candles.time[index])
        exit_time = to_datetime(exit_ms)
        fill_pnl = self._trade(position, candles, index, price, position.quantity, reason)
        _, exit_fee, _ = self._fill_pnl(position, price, position.quantity)
        pnl = position.realized_pnl + fill_pnl
        closed = revise(
            position,
            status="closed",
            exit_time=exit_time,
            exit_price=price,
            exit_fee=exit_fee,
            exit_reason=reason,
            pnl=pnl,
            realized_pnl=pnl,
        )
        self.changes.positions.append(closed)

        exit_side = "exit_short" if position.side == "short" else "exit_long"
        resting = self._orders_of(position.position_id)
        for order in resting:
            if order.status != "open":
                continue
            hit = order.order_id == filled_order or (
                filled_order is None and order.type == reason == "stop_loss"
            )
            if hit:
                update = {
                    "status": "filled",
                    "price": price,
                    "quantity": position.quantity,
                    "filled_at": exit_time,
                }
            else:
                update = {"status": "cancelled"}
            changed = revise(order, **update)
            self._record_order(changed)
        if reason in ("signal", "time"):
            market_exit = assembler(Order)(
                order_id=ids.order_id(position.position_id, exit_side, exit_ms),
                position_id=position.position_id,
                strategy_id=position.strategy_id,
                asset=position.asset,
                side=exit_side,
                type="market",
                quantity=float(position.quantity),
                price=float(price),
                status="filled",
                reason=reason,
                created_at=exit_time,
                filled_at=exit_time,
            )
            self._record_order(market_exit)
        for order in resting:
            self.orders.pop(order.order_id, None)
        return [(index, position.position_id)] if pnl < 0 else []

    def _record_order(self, order: Order) -> None:
        self.changes.orders.append(order)
        self.reported[order.order_id] = order

    # --- account and guards ---------------------------------------------------------------

    @property
    def equity(self) -> float:
        """Capital plus realized PnL: what `equity_percent` and `risk_percent` size from."""
        return self.strategy.execution_config.capital + self.realized

    def marked_equity(self) -> float:
        """Equity with the open positions marked at their asset's close at t (the drawdown)."""
        marks = {a.asset: float(a.candles.close[a.t]) for a in self.assets}
        unrealized = 0.0
        for p in self.positions:
            mark = marks.get(p.asset)
            if mark is None:
                continue
            share = p.entry_fee * p.quantity / p.entered_quantity
            unrealized += _SIGN[p.side] * (mark - p.entry_price) * p.quantity - share
        return self.equity + unrealized

    def guard(self) -> None:
        """The max_drawdown guard at t, after every asset's exits and before any entry."""
        config = self.strategy.execution_config
        limit = config.max_drawdown
        if limit is None or not self.assets:
            return
        newest = max(self.assets, key=lambda a: int(a.candles.time[a.t]))
        equity = self.marked_equity()
        peak = max(self.equity_peak or config.capital, equity)
        if not self._halted(newest.candles, newest.t) and equity <= (1 - limit.value) * peak:
            self.halted_at = to_datetime(int(newest.candles.time[newest.t]))
            peak = equity  # a new peak is measured from here once the halt ends
        self.equity_peak = peak

    def _halt_until(self, candles: Candles, t: int) -> int | None:
        limit = self.strategy.execution_config.max_drawdown
        if limit is None or self.halted_at is None:
            return None
        tripped = bar_index(candles.time, to_ms(self.halted_at))
        return None if tripped is None else tripped + limit.halt_bars

    def _halted(self, candles: Candles, t: int) -> bool:
        """Entries are blocked at the halting bar and the `halt_bars` bars after it."""
        until = self._halt_until(candles, t)
        return until is not None and t <= until

    def guard_statuses(self) -> list[GuardStatus]:
        # assembled, not validated: every value is built here to the model's types
        config = self.strategy.execution_config
        out: list[GuardStatus] = []
        if config.max_open_positions_total is not None:
            count = len(self.positions)
            out.append(
                assembler(GuardStatus)(
                    guard="max_open_positions_total",
                    active=count >= config.max_open_positions_total,
                    detail=f"{count} of {config.max_open_positions_total} positions open",
                )
            )
        if config.max_drawdown is not None:
            newest = max(self.assets, key=lambda a: int(a.candles.time[a.t]), default=None)
            until = None if newest is None else self._halt_until(newest.candles, newest.t)
            if newest is not None and until is not None and newest.t <= until:
                step = timeframe_ms(self.strategy.timeframe)
                until_ms = int(newest.candles.time[newest.t]) + (until - newest.t) * step
                out.append(
                    assembler(GuardStatus)(
                        guard="max_drawdown",
                        active=True,
                        until=to_datetime(until_ms),
                        remaining_bars=until - newest.t + 1,
                        detail=f"equity fell {config.max_drawdown.value:.0%} from its peak "
                        f"at {self.halted_at.isoformat() if self.halted_at else '?'}",
                    )
                )
            else:
                out.append(assembler(GuardStatus)(guard="max_drawdown", active=False))
        return out

    # --- entry ----------------------------------------------------------------------------

    def _enter(
        self, asset: str, candles: Candles, frame: Frame, t: int, side: Direction
    ) -> Position | None:
        config = self.strategy.execution_config
        price = float(candles.close[t])
        t_ms = int(candles.time[t])
        sign = _SIGN[side]
        stop = self._level(config.stop_loss, price, frame, t, stop=None, is_stop=True, sign=sign)
        levels = target_levels(config.take_profit)
        targets = [
            self._level(spec, price, frame, t, stop=stop, is_stop=False, sign=sign)
            for spec in levels
        ]
        if (config.stop_loss is not None and stop is None) or any(x is None for x in targets):
            self.warn(
                "entry_skipped",
                f"{asset}: entry signal at {iso(t_ms)} skipped: "
                "its stop or target could not be priced (indicator undefined or not beyond the price)",
            )
            return None
        tick, lot = self._increments(asset)
        stop = None if stop is None else round_price(stop, tick)
        targets = [None if x is None else round_price(x, tick) for x in targets]
        quantity = self._size(price, stop)
        if quantity is None or not math.isfinite(quantity) or quantity <= 0:
            self.warn(
                "entry_skipped",
                f"{asset}: cannot size a position at price {price} (equity {self.equity:g})",
            )
            return None
        quantity = round_quantity(quantity, lot)
        if quantity <= 0:
            self.warn(
                "entry_skipped",
                f"{asset}: entry signal at {iso(t_ms)} skipped: the sized quantity is below "
                f"one lot ({lot:g})",
            )
            return None
        entry_time = to_datetime(t_ms)
        position_id = ids.position_id(self.strategy.strategy_id, asset, t_ms)
        prices = [float(x) for x in targets if x is not None]
        position = Position(
            position_id=position_id,
            strategy_id=self.strategy.strategy_id,
            asset=asset,
            side=side,
            entry_time=entry_time,
            entry_price=price,
            quantity=quantity,
            entry_fee=price * quantity * config.fee_rate,
            stop_loss_price=stop,
            take_profit_price=min(prices, key=lambda x: sign * x) if prices else None,
        )
        self.changes.positions.append(position)
        enter, exit_ = (
            ("enter_short", "exit_short") if side == "short" else ("enter_long", "exit_long")
        )

        def order(kind: str, side_: str, type_: str, at: float, qty: float, status: str) -> Order:
            # assembled, not validated: every value is of its field's type (floats made so)
            return assembler(Order)(
                order_id=ids.order_id(position_id, kind, t_ms),
                position_id=position_id,
                strategy_id=self.strategy.strategy_id,
                asset=asset,
                side=side_,
                type=type_,
                quantity=float(qty),
                price=float(at),
                status=status,
                reason="entry" if kind == enter else type_,
                created_at=entry_time,
                filled_at=entry_time if status == "filled" else None,
            )

        self._record_order(order(enter, enter, "market", price, quantity, "filled"))
        resting: list[Order] = []
        if stop is not None:
            resting.append(order("stop_loss", exit_, "stop_loss", stop, quantity, "open"))
        if isinstance(config.take_profit, list):
            left = quantity
            for n, (spec, level) in enumerate(zip(config.take_profit, prices, strict=True)):
                last = n == len(prices) - 1
                qty = (
                    round_quantity(left, lot)
                    if last
                    else round_quantity(quantity * spec.fraction, lot)
                )
                left -= qty
                kind = f"take_profit_{n + 1}"
                resting.append(order(kind, exit_, "take_profit", level, qty, "open"))
        elif prices:
            resting.append(order("take_profit", exit_, "take_profit", prices[0], quantity, "open"))
        for item in resting:
            self._record_order(item)
            self.orders[item.order_id] = item
        return position

    def _increments(self, asset: str) -> tuple[float | None, float | None]:
        """The asset's tick and lot size; (None, None) when it has none (nothing rounded)."""
        instrument = (self.strategy.execution_config.instruments or {}).get(asset)
        if instrument is None:
            return None, None
        return instrument.tick_size, instrument.lot_size

    def _size(self, price: float, stop: float | None) -> float | None:
        sizing = self.strategy.execution_config.position_sizing
        if sizing.type == "fixed_notional":
            return sizing.value / price
        if sizing.type == "fixed_quantity":
            return sizing.value
        equity = self.equity
        if equity <= 0:
            return None
        if sizing.type == "equity_percent":
            return equity * sizing.value / price
        if stop is None or stop == price:
            return None
        return equity * sizing.value / abs(price - stop)

    def _level(
        self,
        spec: PercentStop
        | PercentTarget
        | AtrLevel
        | RiskRewardTarget
        | TrailingPercentStop
        | TrailingAtrStop
        | None,
        price: float,
        frame: Frame,
        t: int,
        *,
        stop: float | None,
        is_stop: bool,
        sign: float = 1.0,
    ) -> float | None:
        """Price a stop or a target from the entry price at bar t; None when it can't be.

        A long's stop lies below the price and its targets above; a short's mirror them.
        """
        if spec is None:
            return None
        away = -sign if is_stop else sign  # direction of the level from the price
        if isinstance(spec, PercentStop | TrailingPercentStop | PercentTarget):
            level = price * (1 + away * spec.value)
        elif isinstance(spec, RiskRewardTarget):
            if stop is None:
                return None
            level = price + spec.ratio * (price - stop)
        else:
            distance = spec.multiplier * float(frame[spec.indicator][t])
            level = price + away * distance
        if not math.isfinite(level) or level <= 0 or away * (level - price) <= 0:
            return None
        return float(level)

    # --- result ---------------------------------------------------------------------------

    def result(self) -> EvaluationResult:
        open_ids = {p.position_id for p in self.positions}
        account_changed = (
            self.realized != self.state.realized_pnl
            or self.equity_peak != self.state.equity_peak
            or self.halted_at != self.state.halted_at
        )
        if account_changed:
            self.changes.account = assembler(Account)(
                realized_pnl=self.realized,
                equity_peak=self.equity_peak,
                halted_at=self.halted_at,
            )
        # Every part was validated when it was built: assemble without validating again.
        new_state = assembler(ExecutionState)(
            strategy_id=self.strategy.strategy_id,
            version=self.state.version,
            positions=self.positions,
            orders=[o for o in self.orders.values() if o.position_id in open_ids],
            cooldowns=self.cooldowns,
            realized_pnl=self.realized,
            equity_peak=self.equity_peak,
            halted_at=self.halted_at,
        )
        return assembler(EvaluationResult)(
            strategy_id=self.strategy.strategy_id,
            persisted=False,
            bar=to_datetime(self.bar_ms) if self.bar_ms is not None else None,
            orders=list(self.reported.values()),
            positions=self.positions,
            closed_trades=self.closed,
            cooldowns=self.statuses,
            equity=self.equity,
            guards=self.guard_statuses(),
            warnings=list(self.warnings.values()),
            state=new_state,
            changes=NO_CHANGES if self.made is None or self.made.empty else self.made,
        )
