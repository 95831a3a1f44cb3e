"""Injectable time.

Everything that decides by time (signature windows, the ledger's flush delay,
settlement horizons, the limiter) takes a ``Clock`` so tests move time instead
of sleeping.

Two readings, never mixed: ``time()``/``now()`` is wall time, for what a record
or a signature says happened when; ``monotonic()`` is for intervals (flush
deadlines, retries, reload periods, cool-downs, sliding windows), so a wall
clock stepped backwards (NTP, an operator) never stalls a timer.
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

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never go backwards (intervals only)."""
        ...


class SystemClock:
    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told to (tests, replays, benchmarks).

    ``advance`` moves both readings; ``set`` and ``step`` move only the wall
    clock, as NTP or an operator would, so tests can show that intervals do not
    follow a wall clock stepped backwards.
    """

    __slots__ = ("_mono", "_t")

    def __init__(self, start: float | datetime = 1_767_225_600.0) -> None:
        # Default start: 2026-01-01T00:00:00Z.
        self._t = start.timestamp() if isinstance(start, datetime) else float(start)
        self._mono = 1_000.0

    def time(self) -> float:
        return self._t

    def now(self) -> datetime:
        return utc_from_timestamp(self._t)

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward: use step() to move the wall clock back")
        self._t += seconds
        self._mono += seconds

    def set(self, when: float | datetime) -> None:
        """Set the wall clock (the monotonic reading does not move)."""
        self._t = when.timestamp() if isinstance(when, datetime) else float(when)

    def step(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (either way); the monotonic reading stays."""
        self._t += seconds


def utc_from_timestamp(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
