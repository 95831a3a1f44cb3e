"""Billing months: calendar months in Beijing time (UTC+8), bounded by UTC instants.

Tiers and bills count per calendar month in UTC+8 (billing rules sections 5 and 8),
so 2026-01-31T16:30Z is already February. A ``Month`` knows its UTC bounds, which is
all deduction needs: it compares instants, never converts each call's time zone.
"""

from __future__ import annotations

import re
from calendar import monthrange
from dataclasses import dataclass
from datetime import UTC, datetime

from ..clock import BEIJING
from .errors import MonthError

__all__ = ["Month", "add_months", "billing_month", "format_month", "parse_month"]

_PATTERN = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """One billing month; orders chronologically; ``str()`` is ``YYYY-MM``."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise MonthError(f"month must be 1..12, got {self.month}")
        # Year 1 and 9999 lack a neighbour month that datetime can represent.
        if not 2 <= self.year <= 9998:
            raise MonthError(f"year must be 2..9998, got {self.year}")

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @classmethod
    def of(cls, when: datetime) -> Month:
        """The billing month (UTC+8) an aware instant falls in."""
        return billing_month(when)

    @classmethod
    def parse(cls, text: str) -> Month:
        return parse_month(text)

    @property
    def start(self) -> datetime:
        """First instant of the month, as aware UTC (00:00 UTC+8 on the 1st)."""
        return datetime(self.year, self.month, 1, tzinfo=BEIJING).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """First instant of the next month (exclusive bound), aware UTC."""
        return self.shift(1).start

    def shift(self, months: int) -> Month:
        index = self.year * 12 + (self.month - 1) + months
        return Month(index // 12, index % 12 + 1)

    def next(self) -> Month:
        return self.shift(1)

    def previous(self) -> Month:
        return self.shift(-1)

    def contains(self, when: datetime) -> bool:
        return self.start <= when < self.end


def billing_month(when: datetime) -> Month:
    """The billing month of an aware instant (naive datetimes are refused, not guessed)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise MonthError(f"{when!r} is naive: billing months need an aware (UTC) instant")
    local = when.astimezone(BEIJING)
    return Month(local.year, local.month)


def parse_month(text: str) -> Month:
    """``"2026-02"`` -> ``Month(2026, 2)``; anything else raises ``MonthError``."""
    match = _PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise MonthError(f"billing month must look like YYYY-MM, got {text!r}")
    return Month(int(match.group(1)), int(match.group(2)))


def format_month(month: Month) -> str:
    return str(month)


def add_months(when: datetime, months: int) -> datetime:
    """The same wall-clock time in UTC+8 ``months`` later, clamped to the month's last day.

    Used for default plan validity (a year from purchase, **assumption**): 2026-01-31
    plus one month is 2026-02-28, as a calendar reads it in Beijing. Returns aware UTC.
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise MonthError(f"{when!r} is naive: expected an aware (UTC) instant")
    local = when.astimezone(BEIJING)
    target = Month(local.year, local.month).shift(months)
    day = min(local.day, monthrange(target.year, target.month)[1])
    return local.replace(year=target.year, month=target.month, day=day).astimezone(UTC)
