"""Strategies, positions and the changes of an entry or a stop-out, as storage tests write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.core.state import (
    Changes,
    CooldownState,
    LossRecord,
    Order,
    Position,
)
from engine.core.strategy import Strategy, parse_strategy

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def make_strategy(
    sid: str,
    *,
    assets: tuple[str, ...] = ("BTC/USDT",),
    status: str = "active",
    timeframe: str = "1h",
    name: str = "RSI mean reversion",
) -> Strategy:
    return parse_strategy(
        {
            "strategy_id": sid,
            "name": name,
            "status": status,
            "assets": list(assets),
            "timeframe": timeframe,
            "indicators": {"rsi": {"fn": "RSI", "params": {"timeperiod": 14}}},
            "entry": {"left": "rsi", "op": "<", "right": 30},
            "exit": {"left": "rsi", "op": "crosses_above", "right": 70},
            "execution_config": {
                "stop_loss": {"type": "percent", "value": 0.02},
                "take_profit": {"type": "risk_reward", "ratio": 2.0},
            },
        }
    )


def open_position(sid: str, n: int = 0, asset: str = "BTC/USDT") -> Position:
    return Position(
        position_id=f"pos-{sid}-{n}",
        strategy_id=sid,
        asset=asset,
        entry_time=T0 + n * HOUR,
        entry_price=100.0 + n,
        quantity=0.5,
        entry_fee=0.05,
        stop_loss_price=98.0,
        take_profit_price=104.0,
    )


def closed(position: Position, *, exit_price: float = 97.5) -> Position:
    return position.model_copy(
        update={
            "status": "closed",
            "exit_time": position.entry_time + 3 * HOUR,
            "exit_price": exit_price,
            "exit_fee": 0.04,
            "exit_reason": "stop_loss",
            "pnl": (exit_price - position.entry_price) * position.quantity - 0.09,
        }
    )


def orders_of(position: Position) -> list[Order]:
    common = {
        "position_id": position.position_id,
        "strategy_id": position.strategy_id,
        "asset": position.asset,
        "quantity": position.quantity,
        "created_at": position.entry_time,
    }
    return [
        Order(
            order_id=f"{position.position_id}-entry",
            side="enter_long",
            type="market",
            price=position.entry_price,
            status="filled",
            reason="entry",
            filled_at=position.entry_time,
            **common,
        ),
        Order(
            order_id=f"{position.position_id}-sl",
            side="exit_long",
            type="stop_loss",
            price=position.stop_loss_price,
            status="open",
            reason="stop_loss",
            **common,
        ),
        Order(
            order_id=f"{position.position_id}-tp",
            side="exit_long",
            type="take_profit",
            price=position.take_profit_price,
            status="open",
            reason="take_profit",
            **common,
        ),
    ]


def entry_changes(position: Position) -> Changes:
    return Changes(positions=[position], orders=orders_of(position))


def stop_out_changes(position: Position) -> Changes:
    """The position stops out: its stop fills, its target is cancelled, a cooldown records it."""
    done = closed(position)
    _, sl, tp = orders_of(position)
    return Changes(
        positions=[done],
        orders=[
            sl.model_copy(update={"status": "filled", "price": 97.5, "filled_at": done.exit_time}),
            tp.model_copy(update={"status": "cancelled"}),
        ],
        cooldowns=[
            CooldownState(
                asset=position.asset,
                losses=[LossRecord(exit_time=done.exit_time, position_id=position.position_id)],
                tripped_at=done.exit_time,
                blocked_bars=3,
                tier="short",
            )
        ],
    )
