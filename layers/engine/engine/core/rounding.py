"""Prices and quantities an exchange accepts: multiples of the asset's tick and lot size.

Optional per asset (`execution_config.instruments`); without them nothing is rounded. The
rules, chosen so that rounding never adds risk or size the strategy did not ask for:

- a quantity is rounded **down** to a whole number of lots (a sized position never grows);
  one that rounds to nothing is no order (the entry is skipped with a warning);
- a stop or target level is rounded to the **nearest** tick (an exchange takes any multiple;
  the nearest moves the level least); market fills keep the bar's price, which is already one
  the market traded at.
"""

from __future__ import annotations

import math
from decimal import Decimal


def _places(step: float) -> int:
    """Decimal places of a step as written (0.01 -> 2, 0.5 -> 1, 5 -> 0)."""
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(0, -int(exponent))


def round_price(price: float, tick: float | None) -> float:
    """The multiple of `tick` nearest to `price` (halves away from zero); `price` without one."""
    if tick is None:
        return price
    steps = math.floor(abs(price) / tick + 0.5 + 1e-9)
    return math.copysign(round(steps * tick, _places(tick)), price)


def round_quantity(quantity: float, lot: float | None) -> float:
    """The largest multiple of `lot` not above `quantity` (a hair of float error forgiven)."""
    if lot is None:
        return quantity
    lots = math.floor(quantity / lot + 1e-9)
    return round(lots * lot, _places(lot))
