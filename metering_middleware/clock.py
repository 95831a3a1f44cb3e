"""Injectable time.

Everything that decides by time (signature windows, the ledger's flush delay,
settlement horizons, the limiter) takes a ``Clock`` so tests move time instead
of sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol

__all__ = ["BEIJING", "Clock", "ManualClock", "SystemClock", "utc_from_timestamp"]

#: Billing months (tiers, bills) are calendar months in Beijing time.
BEIJING = timezone(timedelta(hours=8), "UTC+8")


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def now(self) -> datetime:
        """The same instant as an aware UTC datetime."""
        ...


class SystemClock:
    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, replays, benchmarks)."""

    __slots__ = ("_t",)

    def __init__(self, start: float | datetime = 1_767_225_600.0) -> None:
        # Default start: 2026-01-01T00:00:00Z.
        self._t = start.timestamp() if isinstance(start, datetime) else float(start)

    def time(self) -> float:
        return self._t

    def now(self) -> datetime:
        return utc_from_timestamp(self._t)

    def advance(self, seconds: float) -> None:
        self._t += seconds

    def set(self, when: float | datetime) -> None:
        self._t = when.timestamp() if isinstance(when, datetime) else float(when)


def utc_from_timestamp(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
