"""Intervals follow the monotonic reading: a wall clock stepped back an hour stalls nothing.

Each timer is driven on a ``ManualClock`` whose wall time is stepped back an
hour mid-interval (as NTP or an operator would); the timer still fires after
its interval of monotonic time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from metering_middleware import ManualClock, Outcome
from metering_middleware.ledger.memory import MemoryStore
from metering_middleware.ledger.writer import LedgerWriter
from metering_middleware.limiter.policy import CircuitBreaker
from metering_middleware.reload import BackgroundReload
from tests.ledger.support import make_records

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOUR = 3600.0


def test_manual_clock_keeps_the_two_readings_apart() -> None:
    clock = ManualClock(T0)
    mono = clock.monotonic()
    clock.step(-HOUR)
    assert clock.time() == T0.timestamp() - HOUR
    assert clock.monotonic() == mono
    clock.advance(2.0)
    assert clock.monotonic() == mono + 2.0


async def test_batched_flush_deadline_survives_a_step_back() -> None:
    clock = ManualClock(T0)
    store = MemoryStore()
    writer = LedgerWriter(store, journal=None, mode="batched", flush_interval=0.05, clock=clock)
    async with writer:
        future = writer.submit(make_records(1)[0])
        clock.step(-HOUR)
        clock.advance(0.06)
        await writer.tick()
        assert future.done()
        assert store.writes == 1


async def test_counter_flush_survives_a_step_back() -> None:
    clock = ManualClock(T0)
    store = MemoryStore()
    async with LedgerWriter(store, journal=None, count_interval=1.0, clock=clock) as writer:
        writer.count("a", "ocr", "X", Outcome.REFUSED, "bad_signature", T0)
        clock.step(-HOUR)
        clock.advance(1.0)
        await writer.tick()
        assert store.writes == 1


async def test_reload_interval_survives_a_step_back() -> None:
    clock = ManualClock(T0)
    loads: list[float] = []

    async def load() -> None:
        loads.append(clock.time())

    reload = BackgroundReload(load, clock, 1.0, "test view")
    await reload.start()
    clock.step(-HOUR)
    clock.advance(1.0)
    assert reload.due()


def test_breaker_cooldown_survives_a_step_back() -> None:
    clock = ManualClock(T0)
    breaker = CircuitBreaker(clock, threshold=1, cooldown=5.0)
    assert breaker.record_failure()
    clock.step(-HOUR)
    assert breaker.retry_in() == 5.0
    clock.advance(5.0)
    assert breaker.retry_in() == 0.0
