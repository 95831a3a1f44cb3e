"""What the shared limiter does while Redis fails, and how it notices Redis is back.

- ``open``: admit every call (the limit is not enforced; nonces are still checked
  in-process).
- ``closed``: refuse every call with 503 ``ServiceUnavailable``.
- ``local``: each of the P gateway processes enforces its own share of the limit,
  ``floor(N / P)`` a second; when N < P, one call per ``ceil(P / N)`` seconds, so the
  deployment as a whole stays at or under N calls a second on average.

A circuit breaker keeps a dead Redis from costing every call a timeout: after
``threshold`` consecutive failures it opens and calls go straight to the policy;
after ``cooldown`` seconds (monotonic) one probe may try Redis (half-open); a success
closes it, a failure starts a new cool-down. ``RedisLimiter`` runs that probe in the
background, so calls never wait on it and the cool-down can be short.
"""

from __future__ import annotations

import math
from enum import StrEnum

from ..clock import Clock
from .base import WINDOW_SECONDS

__all__ = ["BreakerState", "CircuitBreaker", "FailurePolicy", "local_share"]


class FailurePolicy(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    LOCAL = "local"


class BreakerState(StrEnum):
    CLOSED = "closed"  # Redis is used
    OPEN = "open"  # Redis is skipped until the cool-down ends
    HALF_OPEN = "half_open"  # one probe is in flight


def local_share(limit: int, processes: int) -> tuple[int, float]:
    """(calls, window seconds) one of ``processes`` gateways may admit for ``limit`` QPS."""
    if limit < 1 or processes < 1:
        raise ValueError("limit and processes must be at least 1")
    if limit >= processes:
        return limit // processes, WINDOW_SECONDS
    return 1, WINDOW_SECONDS * math.ceil(processes / limit)


class CircuitBreaker:
    """Consecutive-failure breaker with a single half-open probe; time from ``clock``.

    Use: ``if breaker.allow(): try the backend, then record_success() or
    record_failure()`` (or ``abandon()`` if the attempt was cancelled). Any attempt
    that ends (a call in flight when the breaker opened, too) may record its result.
    """

    __slots__ = ("_clock", "_cooldown", "_failures", "_opened_at", "_state", "_threshold", "opens")

    def __init__(self, clock: Clock, *, threshold: int = 3, cooldown: float = 0.2) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        if cooldown <= 0:
            raise ValueError("cooldown must be positive")
        self._clock = clock
        self._threshold = threshold
        self._cooldown = cooldown
        self._failures = 0
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        #: How many times the breaker opened since start (a metric).
        self.opens = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> bool:
        """Whether this call may use the backend; in half-open, only the first caller may."""
        state = self._state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN and self.retry_in() <= 0:
            self._state = BreakerState.HALF_OPEN
            return True
        return False  # open and cooling down, or a probe is already in flight

    def retry_in(self) -> float:
        """Seconds until the next probe may start (0 when closed or due)."""
        if self._state is BreakerState.CLOSED:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock.monotonic())

    def record_success(self) -> bool:
        """Close; True if this closed an open breaker (Redis came back)."""
        recovered = self._state is not BreakerState.CLOSED
        self._state = BreakerState.CLOSED
        self._failures = 0
        return recovered

    def record_failure(self) -> bool:
        """Count a failure; True if this opened the breaker."""
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self._threshold
        ):
            opened = self._state is BreakerState.CLOSED
            self._state = BreakerState.OPEN
            self._opened_at = self._clock.monotonic()
            if opened:
                self.opens += 1
            return opened
        return False

    def abandon(self) -> None:
        """A probe was cancelled before it learnt anything: let the next call probe."""
        if self._state is BreakerState.HALF_OPEN:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock.monotonic() - self._cooldown
