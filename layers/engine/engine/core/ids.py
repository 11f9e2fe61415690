"""Deterministic ids: the same (strategy, asset, bar, kind) always names the same item.

A retried evaluation therefore writes the very items the first attempt wrote, never new ones.
"""

from __future__ import annotations

import hashlib


def _digest(text: str) -> str:
    """The first 24 hex digits of the text's SHA-256: the parts joined by `|` (an f-string,
    a third cheaper than joining them, and a replay makes four ids a trade)."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def position_id(strategy_id: str, asset: str, entry_bar_ms: int) -> str:
    return "pos_" + _digest(f"{strategy_id}|{asset}|{entry_bar_ms}|position")


def order_id(position_id: str, kind: str, bar_ms: int) -> str:
    """An order of a position: kind is enter_long, stop_loss, take_profit or exit_long.

    The position id already encodes (strategy, asset, entry bar); the bar is the bar the order
    was created at, so two positions exiting on the same bar get distinct exit orders.
    """
    return "ord_" + _digest(f"{position_id}|{kind}|{bar_ms}")
