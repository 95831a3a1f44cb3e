"""The one way report results become plain JSON values (private).

Money is the Decimal's own digits in fixed point (exact, never a float, never an
exponent: ``str(Decimal("0E-8"))`` is ``"0E-8"``, ``format(..., "f")`` is ``"0.00000000"``),
instants are ISO 8601 UTC with ``Z``, days are ``YYYY-MM-DD``: the admin API, the tenant
view and the web page all serialise through these, so one number reads the same everywhere.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

__all__ = ["day_text", "money", "money_or_none", "time_or_none", "time_text"]


def money(value: Decimal) -> str:
    return format(value, "f")


def money_or_none(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def time_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def time_or_none(value: datetime | None) -> str | None:
    return None if value is None else time_text(value)


def day_text(value: date) -> str:
    return value.isoformat()
