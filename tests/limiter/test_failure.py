"""Redis stopped mid-run and restarted: each failure policy, the breaker, the recovery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from metering_middleware.clock import ManualClock
from metering_middleware.limiter import AdmitStatus, BreakerState, NonceClaim
from metering_middleware.limiter.redis import RedisLimiter

from .redis_server import RedisServer


def _limiter(url: str, clock: ManualClock, policy: str, **options: object) -> RedisLimiter:
    settings: dict[str, object] = {
        "failure_policy": policy,
        "processes": 2,
        "breaker_threshold": 2,
        "breaker_cooldown": 5.0,
        "socket_timeout": 5.0,
    }
    settings.update(options)
    return RedisLimiter(url, clock, **settings)  # type: ignore[arg-type]


async def _admit(lim: RedisLimiter, limit: int = 4, nonce: NonceClaim | None = None) -> AdmitStatus:
    return (await lim.admit("acct", "facebody", "DetectFace", limit, nonce=nonce)).status


@pytest.mark.parametrize("policy", ["open", "closed", "local"])
async def test_redis_killed_and_restarted(policy: str, own_redis: RedisServer) -> None:
    clock = ManualClock()
    lim = _limiter(own_redis.url, clock, policy)
    await lim.start()
    try:
        assert await _admit(lim) is AdmitStatus.ADMITTED
        own_redis.kill()

        # Two failures open the breaker; from then on Redis is not even tried.
        decisions = [await lim.admit("acct", "facebody", "DetectFace", 4) for _ in range(3)]
        assert all(d.degraded for d in decisions)
        assert lim.breaker.state is BreakerState.OPEN and lim.failures == 2
        more = [await lim.admit("acct", "facebody", "DetectFace", 4) for _ in range(5)]
        assert lim.failures == 2
        statuses = [d.status for d in decisions + more]
        if policy == "open":
            assert set(statuses) == {AdmitStatus.ADMITTED}
            assert all(d.remaining is None for d in decisions)
        elif policy == "closed":
            assert set(statuses) == {AdmitStatus.UNAVAILABLE}
            # Retry-After points at the breaker's next probe.
            assert more[-1].retry_after == pytest.approx(5.0)
        else:
            # This process's share of 4 QPS over 2 processes: 2 a second.
            assert statuses.count(AdmitStatus.ADMITTED) == 2
            assert decisions[2].status is AdmitStatus.THROTTLED and decisions[2].limit == 2
            clock.advance(1.0)
            assert await _admit(lim) is AdmitStatus.ADMITTED

        # Nonces while Redis is down: held in-process (closed refuses before claiming).
        claim = NonceClaim("LTAIkey", "during-outage", clock.time() + 900)
        first = await _admit(lim, limit=100, nonce=claim)
        replay = await _admit(lim, limit=100, nonce=claim)
        if policy == "closed":
            assert first is replay is AdmitStatus.UNAVAILABLE
        else:
            assert first is AdmitStatus.ADMITTED and replay is AdmitStatus.NONCE_REUSED

        own_redis.start()  # same port, empty, no script cached
        # Still within the cool-down: the policy keeps deciding.
        assert (await lim.admit("acct", "facebody", "DetectFace", 4)).degraded
        clock.advance(5.0)
        probe = await lim.admit("acct", "facebody", "DetectFace", 4)
        assert probe.admitted and not probe.degraded  # shared again, script reloaded
        assert lim.breaker.state is BreakerState.CLOSED
        assert lim.failures == 2
        if policy == "closed":  # the nonce was never claimed, so it is good now
            assert await _admit(lim, limit=100, nonce=claim) is AdmitStatus.ADMITTED
    finally:
        await lim.close()


async def test_a_failed_probe_reopens_the_breaker(own_redis: RedisServer) -> None:
    clock = ManualClock()
    lim = _limiter(own_redis.url, clock, "open")
    await lim.start()
    try:
        own_redis.kill()
        for _ in range(2):
            await _admit(lim)
        assert lim.breaker.state is BreakerState.OPEN
        clock.advance(5.0)
        assert (await lim.admit("acct", "facebody", "DetectFace", 4)).degraded  # the probe
        assert lim.failures == 3 and lim.breaker.state is BreakerState.OPEN
        await _admit(lim)
        assert lim.failures == 3  # cooling down again
    finally:
        await lim.close()


async def test_a_redis_down_at_start_is_not_fatal(own_redis: RedisServer) -> None:
    own_redis.kill()
    clock = ManualClock()
    lim = _limiter(own_redis.url, clock, "closed")
    await lim.start()
    try:
        assert lim.failures == 1
        assert await _admit(lim) is AdmitStatus.UNAVAILABLE
        own_redis.start()
        clock.advance(5.0)
        assert await _admit(lim) is AdmitStatus.ADMITTED
    finally:
        await lim.close()


async def test_local_share_below_one_per_process(own_redis: RedisServer) -> None:
    # N = 1 QPS over P = 3 processes: each admits one call per 3 seconds.
    clock = ManualClock()
    lim = _limiter(own_redis.url, clock, "local", processes=3)
    await lim.start()
    try:
        own_redis.kill()
        first = await lim.admit("acct", "ocr", "RecognizeCharacter", 1)
        assert first.admitted and first.degraded and first.window == 3.0
        clock.advance(1.0)
        refused = await lim.admit("acct", "ocr", "RecognizeCharacter", 1)
        assert refused.status is AdmitStatus.THROTTLED
        assert refused.retry_after == pytest.approx(2.0)
        clock.advance(2.0)
        assert (await lim.admit("acct", "ocr", "RecognizeCharacter", 1)).admitted
    finally:
        await lim.close()


@contextlib.asynccontextmanager
async def _black_hole() -> AsyncIterator[tuple[str, list[int]]]:
    """A server that accepts and reads but never answers: a hung Redis."""
    received = [0]

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(4096):
            received[0] += len(chunk)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0", received
    finally:
        server.close()


async def test_a_hung_redis_costs_a_timeout_only_until_the_breaker_opens() -> None:
    clock = ManualClock()
    async with _black_hole() as (url, received):
        lim = _limiter(url, clock, "open", socket_timeout=0.05, connect_timeout=0.5)
        try:
            for _ in range(2):  # each waits out the socket timeout, then the policy admits
                d = await lim.admit("acct", "facebody", "DetectFace", 4)
                assert d.admitted and d.degraded
            assert lim.breaker.state is BreakerState.OPEN
            sent = received[0]
            assert sent > 0
            for _ in range(50):
                assert (await lim.admit("acct", "facebody", "DetectFace", 4)).degraded
            assert received[0] == sent  # nothing more went to the dead server
        finally:
            await lim.close()


async def test_redis_killed_under_concurrent_load(own_redis: RedisServer) -> None:
    clock = ManualClock()
    lim = _limiter(own_redis.url, clock, "local", processes=1)
    await lim.start()
    decisions: list[tuple[str, bool, AdmitStatus]] = []
    phase = ["before"]
    stop = asyncio.Event()
    reached = asyncio.Event()
    target = [0]

    async def client() -> None:
        while not stop.is_set():
            d = await lim.admit("acct", "facebody", "DetectFace", 3)
            decisions.append((phase[0], d.degraded, d.status))
            if len(decisions) >= target[0]:
                reached.set()
            await asyncio.sleep(0)

    async def count(n: int) -> None:
        target[0] = len(decisions) + n
        reached.clear()
        await reached.wait()

    tasks = [asyncio.create_task(client()) for _ in range(8)]
    try:
        await count(50)
        own_redis.kill()
        phase[0] = "down"
        await count(50)
        own_redis.start()
        clock.advance(5.0)
        phase[0] = "back"
        await count(50)
    finally:
        stop.set()
        await asyncio.gather(*tasks)  # no admission raised
        await lim.close()
    assert {s for _, _, s in decisions} <= {AdmitStatus.ADMITTED, AdmitStatus.THROTTLED}
    assert not any(degraded for phase_, degraded, _ in decisions if phase_ == "before")
    assert any(degraded for phase_, degraded, _ in decisions if phase_ == "down")
    assert not decisions[-1][1]  # shared again at the end
