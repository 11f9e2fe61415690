"""A request's time budget, seen by whatever it calls (storage retries, the bulk loop).

API Gateway answers 504 after 29 s whatever the function is doing; an HTTP request therefore
runs within a budget (engine.entrypoints.http) and work that would outlast it is not started: a storage
call answers 503 storage_unavailable, a bulk run reports the strategies it did not reach as
not done. The scheduled path runs without a budget (its function's own timeout bounds it).
Kept in a context variable so that concurrent requests in one process (the local stack) each
keep their own.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "engine_deadline", default=None
)
T = TypeVar("T")


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Run the block with `seconds` to spend (monotonic time); nested budgets only shrink."""
    deadline = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining_s() -> float | None:
    """Seconds left in the current budget; None without one."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def has_time_for(seconds: float) -> bool:
    left = remaining_s()
    return left is None or left >= seconds


def in_this_context(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` bound to a copy of the caller's context: a pool thread then keeps the budget."""
    context = contextvars.copy_context()
    return lambda *args: context.copy().run(fn, *args)  # a context is entered once at a time
