"""A wall clock stepped an hour (NTP, an operator) during a full window changes no
admission: the in-process sliding logs (memory backend, the Redis ``local`` fallback)
lie on the monotonic reading; only ``Decision.at`` follows the wall clock."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from metering_middleware.clock import ManualClock
from metering_middleware.limiter import AdmitStatus, Decision, MemoryLimiter
from metering_middleware.limiter.redis import RedisLimiter

from .redis_server import RedisServer, free_port

HOUR = 3600.0
Admit = Callable[[], Awaitable[Decision]]
Make = Callable[[ManualClock], Awaitable[tuple[Admit, Callable[[], Awaitable[None]]]]]


async def _memory(clock: ManualClock) -> tuple[Admit, Callable[[], Awaitable[None]]]:
    lim = MemoryLimiter(clock)

    async def admit() -> Decision:
        return await lim.admit("acct", "facebody", "DetectFace", 3)

    return admit, lim.close


async def _local_fallback(clock: ManualClock) -> tuple[Admit, Callable[[], Awaitable[None]]]:
    # Nothing listens on the port: every call is decided by the ``local`` policy.
    lim = RedisLimiter(
        f"redis://127.0.0.1:{free_port()}/0", clock, failure_policy="local", breaker_threshold=1
    )

    async def admit() -> Decision:
        d = await lim.admit("acct", "facebody", "DetectFace", 3)
        assert d.degraded
        return d

    return admit, lim.close


async def _run(
    make: Make, step: float
) -> tuple[list[tuple[AdmitStatus, int | None, float, float]], bool]:
    """Fill a 3-QPS window over 0.5 s, step the wall clock by ``step``, go on calling."""
    clock = ManualClock()
    admit, close = await make(clock)
    seen: list[Decision] = []
    walls: list[float] = []

    async def call() -> None:
        seen.append(await admit())
        walls.append(clock.time())

    try:
        for _ in range(3):
            await call()
            clock.advance(0.25)
        clock.step(step)  # the window is full
        await call()  # 0.75 s: throttled, retry at 1.0 s
        for _ in range(4):
            clock.advance(0.25)
            await call()
    finally:
        await close()
    outcomes = [(d.status, d.remaining, round(d.reset, 6), round(d.retry_after, 6)) for d in seen]
    return outcomes, [d.at for d in seen] == walls


@pytest.mark.parametrize("make", [_memory, _local_fallback], ids=["memory", "local_policy"])
@pytest.mark.parametrize("step", [-HOUR, HOUR], ids=["back", "forward"])
async def test_a_clock_step_during_a_full_window_changes_no_admission(
    make: Make, step: float
) -> None:
    steady, _ = await _run(make, 0.0)
    assert [s for s, *_ in steady] == [
        AdmitStatus.ADMITTED,
        AdmitStatus.ADMITTED,
        AdmitStatus.ADMITTED,
        AdmitStatus.THROTTLED,
        AdmitStatus.ADMITTED,  # 1.0 s: the first admission left
        AdmitStatus.ADMITTED,
        AdmitStatus.ADMITTED,
        AdmitStatus.THROTTLED,
    ]
    assert steady[3][3] == 0.25  # retry after: the exact time the first one leaves
    # Stepped back, a wall-time log refused everything for the hour; stepped forward,
    # it freed the full window at once (six admissions within one second).
    stepped, at_is_wall_time = await _run(make, step)
    assert stepped == steady
    assert at_is_wall_time  # what a decision says about when follows the wall clock


async def test_a_step_back_does_not_refuse_calls_until_the_wall_clock_catches_up() -> None:
    clock = ManualClock()
    lim = MemoryLimiter(clock)
    for _ in range(3):
        assert (await lim.admit("acct", "facebody", "DetectFace", 3)).admitted
    clock.step(-HOUR)
    for _ in range(60):  # a minute later (a wall-time log refused all of it, for an hour)
        clock.advance(1.0)
        for _ in range(3):
            assert (await lim.admit("acct", "facebody", "DetectFace", 3)).admitted
        assert not (await lim.admit("acct", "facebody", "DetectFace", 3)).admitted


async def test_redis_clock_stepped_back_an_hour_is_not_an_hour_of_refusals(
    redis_server: RedisServer,
) -> None:
    # The shared log lies on Redis's own clock (TIME), the only clock all gateways
    # share; the explicit test time stands in for it here. Stepped back more than a
    # window, the script starts the log afresh (at most N more admissions, once) instead
    # of deciding "as of" the newest entry until the clock catches up.
    lim = RedisLimiter(
        redis_server.url,
        ManualClock(),
        allow_explicit_time=True,
        key_prefix=f"steps{uuid.uuid4().hex[:8]}:",
        failure_policy="closed",
        socket_timeout=5.0,
    )
    t = 1_767_225_600.0
    try:
        for i in range(3):
            assert (await lim.admit("acct", "facebody", "DetectFace", 3, now=t + i / 10)).admitted
        assert not (await lim.admit("acct", "facebody", "DetectFace", 3, now=t + 0.3)).admitted
        back = t + 0.3 - HOUR
        # A small step back (under a window) is "no time passed": still full.
        assert not (await lim.admit("acct", "facebody", "DetectFace", 3, now=t - 0.5)).admitted
        for i in range(3):
            d = await lim.admit("acct", "facebody", "DetectFace", 3, now=back + i / 10)
            assert d.admitted and d.remaining == 2 - i
        # Exact again on the new clock: full until the first of those leaves.
        refused = await lim.admit("acct", "facebody", "DetectFace", 3, now=back + 0.5)
        assert refused.status is AdmitStatus.THROTTLED
        assert refused.retry_after == pytest.approx(0.5)
        assert (await lim.admit("acct", "facebody", "DetectFace", 3, now=back + 1.0)).admitted
    finally:
        await lim.close()
