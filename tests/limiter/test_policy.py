"""The failure policy's share and the circuit breaker, on a ManualClock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering_middleware.clock import ManualClock
from metering_middleware.limiter import BreakerState, CircuitBreaker, local_share


@pytest.mark.parametrize(
    ("limit", "processes", "share"),
    [(5, 1, (5, 1.0)), (5, 2, (2, 1.0)), (4, 4, (1, 1.0)), (1, 3, (1, 3.0)), (2, 5, (1, 3.0))],
)
def test_local_share(limit: int, processes: int, share: tuple[int, float]) -> None:
    assert local_share(limit, processes) == share


@given(st.integers(1, 200), st.integers(1, 64))
def test_shares_never_add_up_to_more_than_the_limit(limit: int, processes: int) -> None:
    calls, window = local_share(limit, processes)
    assert calls >= 1
    assert processes * calls / window <= limit  # the deployment's rate, on average


def test_breaker_opens_after_k_consecutive_failures() -> None:
    clock = ManualClock()
    b = CircuitBreaker(clock, threshold=3, cooldown=2.0)
    assert b.allow() and not b.record_failure()
    assert b.allow() and not b.record_failure()
    b.record_success()  # not consecutive any more
    for _ in range(2):
        assert b.allow() and not b.record_failure()
    assert b.allow() and b.record_failure()
    assert b.state is BreakerState.OPEN and b.opens == 1
    assert not b.allow() and b.retry_in() == 2.0


def test_half_open_lets_one_probe_through() -> None:
    clock = ManualClock()
    b = CircuitBreaker(clock, threshold=1, cooldown=2.0)
    b.record_failure()
    clock.advance(1.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.allow() and b.state is BreakerState.HALF_OPEN
    assert not b.allow()  # one probe at a time
    b.record_failure()  # the probe failed: a new cool-down
    assert b.state is BreakerState.OPEN and not b.allow() and b.opens == 1
    clock.advance(2.0)
    assert b.allow()
    assert b.record_success() and b.state is BreakerState.CLOSED
    assert b.allow() and b.retry_in() == 0.0


def test_an_abandoned_probe_lets_the_next_call_probe() -> None:
    clock = ManualClock()
    b = CircuitBreaker(clock, threshold=1, cooldown=2.0)
    b.record_failure()
    clock.advance(2.0)
    assert b.allow() and not b.allow()
    b.abandon()
    assert b.allow() and b.state is BreakerState.HALF_OPEN


def test_breaker_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(ManualClock(), threshold=0)
    with pytest.raises(ValueError, match="cooldown"):
        CircuitBreaker(ManualClock(), cooldown=0)
    with pytest.raises(ValueError, match="at least 1"):
        local_share(0, 1)
