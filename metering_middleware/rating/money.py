"""Exact money arithmetic.

Amounts are ``Decimal`` and exact: bill lines never round (billing rules section 5).
Python's default decimal context keeps 28 digits and rounds silently beyond that,
so products and sums go through a wide context that *traps* inexact results:
a wrong amount becomes an exception, never a quiet rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_DOWN, Context, Decimal, Inexact, InvalidOperation, Overflow

__all__ = ["CHARGED_PLACES", "RECORDED_PLACES", "exact_mul", "exact_sum", "round_down"]

#: A month's pay-as-you-go total is recorded to 3 places and charged to 2 (fen), both down.
RECORDED_PLACES = 3
CHARGED_PLACES = 2

_EXACT = Context(prec=200, traps=[Inexact, InvalidOperation, Overflow])
# Rounding is meant to be inexact: same width, without the Inexact trap.
_ROUND = Context(prec=200, traps=[InvalidOperation, Overflow])


def exact_mul(a: Decimal, b: Decimal | int) -> Decimal:
    """``a * b`` without rounding (raises ``decimal.Inexact`` rather than lose a digit)."""
    return _EXACT.multiply(a, Decimal(b) if isinstance(b, int) else b)


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for v in values:
        total = _EXACT.add(total, v)
    return total


def round_down(amount: Decimal, places: int) -> Decimal:
    """Truncate toward zero to ``places`` decimals (``Decimal("1.2349"), 3`` -> ``1.234``)."""
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN, context=_ROUND)
