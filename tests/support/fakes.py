"""In-memory adapters for the ports: fast service tests without DynamoDB."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from engine.core.candles import Candles
from engine.core.state import Account, Changes, ExecutionState, Order, Position
from engine.core.strategy import Strategy
from engine.core.timeframes import to_datetime
from engine.service.errors import ConcurrentEvaluation, EngineError, MarketDataUnavailable
from engine.service.ports import EvaluatedBar


class MemoryStrategies:
    """Strategies, and (as on the strategies table's items) each one's last evaluated bar and
    next due time, which MemoryStates writes."""

    def __init__(self, strategies: Sequence[Strategy] = ()) -> None:
        self.items: dict[str, Strategy] = {}
        self.last_bar: dict[str, int] = {}
        self.next_due: dict[str, int] = {}
        self.get_many_calls = 0
        self.list_calls: list[tuple[str | None, str | None]] = []
        self.due_calls: list[int] = []
        for strategy in strategies:
            self.put(strategy)

    def get(self, strategy_id: str) -> Strategy | None:
        return self.items.get(strategy_id)

    def get_many(self, strategy_ids: Sequence[str]) -> dict[str, Strategy]:
        self.get_many_calls += 1
        return {i: self.items[i] for i in strategy_ids if i in self.items}

    def put(self, strategy: Strategy) -> None:
        """As DynamoStrategyRepository.put: new, or a changed status or timeframe, is due now."""
        sid = strategy.strategy_id
        old = self.items.get(sid)
        self.items[sid] = strategy
        if old is None or (old.status, old.timeframe) != (strategy.status, strategy.timeframe):
            self.next_due[sid] = 0
            self.last_bar.pop(sid, None)

    def due(self, now_ms: int) -> list[Strategy]:
        self.due_calls.append(now_ms)
        return sorted(
            (
                s
                for sid, s in self.items.items()
                if s.status == "active" and self.next_due.get(sid, 0) <= now_ms
            ),
            key=lambda s: s.strategy_id,
        )

    def list(self, *, status: str | None = None, timeframe: str | None = None) -> list[Strategy]:
        self.list_calls.append((status, timeframe))
        return sorted(
            (
                s
                for s in self.items.values()
                if (status is None or s.status == status)
                and (timeframe is None or s.timeframe == timeframe)
            ),
            key=lambda s: s.strategy_id,
        )


class MemoryStates:
    """Keeps every position and order ever written, like the tables do; evaluated bars go to
    `schedule` (the strategies' items), a MemoryStrategies of its own unless given one."""

    def __init__(self, schedule: MemoryStrategies | None = None) -> None:
        self.schedule = schedule if schedule is not None else MemoryStrategies()
        self.versions: dict[str, int] = {}
        self.positions: dict[str, Position] = {}
        self.orders: dict[str, Order] = {}
        self.cooldowns: dict[tuple[str, str], object] = {}
        self.accounts: dict[str, Account] = {}
        self.commits = 0
        self.recorded = 0  # quiet evaluations' bars recorded

    def load(self, strategies: Sequence[Strategy]) -> dict[str, ExecutionState]:
        out = {}
        for s in strategies:
            sid = s.strategy_id
            positions = [
                p for p in self.positions.values() if p.strategy_id == sid and p.status == "open"
            ]
            open_ids = {p.position_id for p in positions}
            orders = [
                o for o in self.orders.values() if o.position_id in open_ids and o.status == "open"
            ]
            cooldowns = {a: c for (i, a), c in self.cooldowns.items() if i == sid}
            last = self.schedule.last_bar.get(sid)
            account = self.accounts.get(sid)
            out[sid] = ExecutionState(
                strategy_id=sid,
                version=self.versions.get(sid, 0),
                positions=positions,
                orders=orders,
                cooldowns=cooldowns,  # type: ignore[arg-type]
                last_bar=None if last is None else to_datetime(last),
                realized_pnl=account.realized_pnl if account else 0.0,
                equity_peak=account.equity_peak if account else None,
                halted_at=account.halted_at if account else None,
            )
        return out

    def commit(
        self, state: ExecutionState, changes: Changes, evaluated: EvaluatedBar | None = None
    ) -> int:
        if changes.empty:
            return state.version
        current = self.versions.get(state.strategy_id, 0)
        if current != state.version:
            raise ConcurrentEvaluation(f"{state.strategy_id} moved from version {state.version}")
        if evaluated is not None:
            self.schedule.last_bar[state.strategy_id] = evaluated.bar_ms
            self.schedule.next_due[state.strategy_id] = evaluated.next_due_ms
        for p in changes.positions:
            self.positions[p.position_id] = p
        for o in changes.orders:
            self.orders[o.order_id] = o
        for c in changes.cooldowns:
            self.cooldowns[(state.strategy_id, c.asset)] = c
        for m in changes.stop_moves:  # as the tables: the order's level moves, nothing else
            if m.position_id in {p.position_id for p in changes.positions}:
                continue
            self.orders[m.order_id] = self.orders[m.order_id].model_copy(update={"price": m.price})
            self.positions[m.position_id] = self.positions[m.position_id].model_copy(
                update={
                    "stop_loss_price": m.price,
                    "checked_through": m.checked_through,
                    "trailing_active": m.trailing_active,
                }
            )
        if changes.account is not None:
            self.accounts[state.strategy_id] = changes.account
        self.versions[state.strategy_id] = current + 1
        self.commits += 1
        return current + 1

    def record_bars(
        self, evaluated: Sequence[tuple[ExecutionState, EvaluatedBar]]
    ) -> Mapping[str, EngineError]:
        """As DynamoStateRepository.record_bars: only on the version read, only forward."""
        for state, bar in evaluated:
            sid = state.strategy_id
            last = self.schedule.last_bar.get(sid)
            if self.versions.get(sid, 0) == state.version and (last is None or last < bar.bar_ms):
                self.schedule.last_bar[sid] = bar.bar_ms
                self.schedule.next_due[sid] = bar.next_due_ms
                self.recorded += 1
        return {}

    def snapshot(self) -> tuple[object, ...]:
        return (
            dict(self.versions),
            {k: v.model_dump() for k, v in self.positions.items()},
            {k: v.model_dump() for k, v in self.orders.items()},
            dict(self.cooldowns),
            {k: v.model_dump() for k, v in self.accounts.items()},
        )


class MemoryMarket:
    """The one in-memory MarketDataProvider of the tests. It answers as the port says a
    provider must: the newest `bars` bars closed by `now_ms`, never one still forming, and
    never more history than asked for. It records what was fetched and how many bars."""

    def __init__(
        self,
        candles: dict[tuple[str, str], Candles] | None = None,
        failing: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.candles: dict[tuple[str, str], Candles] = dict(candles or {})
        self.failing = set(failing)
        self.fetches: list[tuple[str, str]] = []
        self.asked: list[int] = []

    def fetch(self, asset: str, timeframe: str, bars: int, now_ms: int) -> Candles:
        pair = (asset, timeframe)
        self.fetches.append(pair)
        self.asked.append(bars)
        if pair in self.failing or pair not in self.candles:
            raise MarketDataUnavailable(f"no market data for {asset} {timeframe}")
        return self.candles[pair].closed_by(timeframe, now_ms).tail(bars)
