"""Redis stopped mid-run and restarted: each failure policy, the breaker, the recovery.

A restart is not an outage: stale pooled connections are retried once on a new
connection (not failures), and the background probe resumes shared limits within one
cool-down of Redis answering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from metering_middleware.clock import ManualClock
from metering_middleware.limiter import AdmitStatus, BreakerState, NonceClaim
from metering_middleware.limiter.redis import RedisLimiter

from .proxy import lossy_proxy
from .redis_server import RedisServer

POLICIES = ["open", "closed", "local"]


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


async def _admit(
    lim: RedisLimiter, limit: int = 4, nonce: NonceClaim | None = None, now: float | None = None
) -> AdmitStatus:
    return (await lim.admit("acct", "facebody", "DetectFace", limit, nonce=nonce, now=now)).status


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
        # Still within the cool-down: the policy keeps deciding, nothing probes.
        assert (await lim.admit("acct", "facebody", "DetectFace", 4)).degraded
        assert lim.probes == 0
        clock.advance(5.0)
        # The cool-down is over: this call is decided by the policy and starts the
        # probe behind it (SCRIPT LOAD); the calls after it are Redis's again.
        assert (await lim.admit("acct", "facebody", "DetectFace", 4)).degraded
        await lim.wait_probe()
        assert lim.probes == 1 and lim.breaker.state is BreakerState.CLOSED
        shared = await lim.admit("acct", "facebody", "DetectFace", 4)
        assert shared.admitted and not shared.degraded  # script loaded by the probe
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
        assert (await lim.admit("acct", "facebody", "DetectFace", 4)).degraded
        await lim.wait_probe()
        assert lim.probes == 1
        assert lim.failures == 3 and lim.breaker.state is BreakerState.OPEN
        await _admit(lim)
        assert lim.failures == 3 and lim.probes == 1  # cooling down again
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
        assert await _admit(lim) is AdmitStatus.UNAVAILABLE  # starts the probe
        await lim.wait_probe()
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


async def _burst(lim: RedisLimiter, n: int, tag: str, clock: ManualClock) -> list[object]:
    """n admissions at once (n pooled connections), each with a fresh nonce."""
    claims = [NonceClaim("LTAIkey", f"{tag}-{i}", clock.time() + 900) for i in range(n)]
    return list(
        await asyncio.gather(
            *(
                lim.admit("acct", "facebody", "DetectFace", 1000, nonce=c, now=clock.time())
                for c in claims
            )
        )
    )


@pytest.mark.parametrize("policy", POLICIES)
async def test_a_restart_between_calls_is_not_a_failure(
    policy: str, own_redis: RedisServer
) -> None:
    # Redis is killed and back on the same port before this process runs again (the
    # event loop is blocked meanwhile): every pooled socket is dead, the server is up.
    # Before redis-py's retry, each stale socket counted as a Redis failure and eight
    # of them opened the breaker: a whole cool-down of policy decisions, 503s under
    # closed, with Redis answering all along.
    clock = ManualClock()
    lim = _limiter(own_redis.url, clock, policy, breaker_threshold=3, allow_explicit_time=True)
    await lim.start()
    try:
        before = await _burst(lim, 8, "before", clock)
        assert all(d.admitted and not d.degraded for d in before)  # type: ignore[attr-defined]
        own_redis.kill()
        own_redis.start()  # empty, no script cached
        after = await _burst(lim, 8, "after", clock)
        assert [d.status for d in after] == [AdmitStatus.ADMITTED] * 8  # type: ignore[attr-defined]
        assert not any(d.degraded for d in after)  # type: ignore[attr-defined]
        assert lim.failures == 0 and lim.breaker.state is BreakerState.CLOSED
        assert lim.breaker.opens == 0 and lim.degraded == 0
        # Decided by the restarted Redis: its log holds exactly the eight admissions.
        raw = aioredis.Redis.from_url(own_redis.url)
        try:
            keys = await raw.keys("mm:{acct}:q:*")
            assert len(keys) == 1 and await raw.llen(keys[0]) == 8
        finally:
            await raw.aclose()
    finally:
        await lim.close()


@pytest.mark.parametrize("policy", POLICIES)
async def test_redis_restarted_while_calls_flow(policy: str, own_redis: RedisServer) -> None:
    # Default breaker settings. Eight clients call all the time; Redis is killed (in a
    # thread: this process keeps running and sees the outage) and started again on the
    # same port. Once it is back, one cool-down of monotonic time and one probe later
    # every call is Redis's again: no stale socket fails a call, no second cool-down.
    clock = ManualClock()
    lim = RedisLimiter(own_redis.url, clock, failure_policy=policy, processes=1)
    await lim.start()
    # (phase, breaker closed when the call started, degraded, status)
    decisions: list[tuple[str, bool, bool, AdmitStatus]] = []
    phase = ["before"]
    stop = asyncio.Event()
    reached = asyncio.Event()
    target = [0]

    async def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            closed = lim.breaker.state is BreakerState.CLOSED
            claim = NonceClaim("LTAIkey", f"c{i}-{n}", clock.time() + 900)
            n += 1
            d = await lim.admit("acct", "facebody", "DetectFace", 1_000_000, nonce=claim)
            decisions.append((phase[0], closed, d.degraded, d.status))
            if len(decisions) >= target[0]:
                reached.set()
            await asyncio.sleep(0)

    async def count(n: int) -> None:
        target[0] = len(decisions) + n
        reached.clear()
        await reached.wait()

    tasks = [asyncio.create_task(client(i)) for i in range(8)]
    try:
        await count(50)
        await asyncio.to_thread(own_redis.kill)
        phase[0] = "down"
        await count(50)
        assert lim.breaker.state is not BreakerState.CLOSED  # a real outage, seen
        await asyncio.to_thread(own_redis.start)
        phase[0] = "back"
        probes = lim.probes
        clock.advance(0.2)  # one (default) cool-down after Redis is back
        await count(50)
        await lim.wait_probe()
        await count(200)
    finally:
        stop.set()
        await asyncio.gather(*tasks)  # no admission raised
        await lim.close()
    back = [d for d in decisions if d[0] == "back"]
    assert lim.probes == probes + 1  # the first probe after Redis was back succeeded
    shared = [d for d in back if d[1]]  # started with the breaker closed again
    assert len(shared) >= 200
    assert not any(degraded for _, _, degraded, _ in shared)
    assert {s for _, _, _, s in shared} == {AdmitStatus.ADMITTED}
    # Failure-policy decisions after Redis was back: only those while the probe ran.
    assert all(not closed for _, closed, degraded, _ in back if degraded)
    down = {s for p, _, degraded, s in decisions if p == "down" and degraded}
    assert down == ({AdmitStatus.UNAVAILABLE} if policy == "closed" else {AdmitStatus.ADMITTED})


async def test_a_retried_admission_is_counted_once_and_keeps_its_nonce(
    own_redis: RedisServer,
) -> None:
    # The script ran on Redis and then the connection broke before its reply arrived.
    # redis-py runs it again on a new connection; the claim token makes that second run
    # the same admission: not a second log entry, and its own nonce is not a replay.
    clock = ManualClock()
    async with lossy_proxy(own_redis.port) as proxy:
        lim = _limiter(
            f"redis://127.0.0.1:{proxy.port}/0", clock, "closed", allow_explicit_time=True
        )
        await lim.start()
        try:
            now = clock.time()  # explicit time: the window does not depend on the machine
            claim = NonceClaim("LTAIkey", "lost-reply", now + 900)
            proxy.lose_reply_to = b"EVALSHA"
            d = await lim.admit("acct", "facebody", "DetectFace", 2, nonce=claim, now=now)
            assert proxy.lost == 1 and proxy.commands.count(b"EVALSHA") == 2  # ran twice
            assert d.status is AdmitStatus.ADMITTED and not d.degraded
            assert d.remaining == 1  # one admission in the window, not two
            assert lim.failures == 0
            # The nonce is held all the same: a replay is refused.
            replay = await lim.admit("acct", "facebody", "DetectFace", 2, nonce=claim, now=now)
            assert replay.status is AdmitStatus.NONCE_REUSED
            # A throttled first run consumed nothing: its retry decides again, once.
            assert (await lim.admit("acct", "facebody", "DetectFace", 2, now=now)).remaining == 0
            late = NonceClaim("LTAIkey", "lost-throttled", clock.time() + 900)
            proxy.lose_reply_to = b"EVALSHA"
            t = await lim.admit("acct", "facebody", "DetectFace", 2, nonce=late, now=now)
            assert proxy.lost == 2 and t.status is AdmitStatus.THROTTLED
            again = await lim.admit("acct", "facebody", "DetectFace", 2, nonce=late, now=now)
            assert again.status is AdmitStatus.NONCE_REUSED  # a throttled call consumes it
        finally:
            await lim.close()
    raw = aioredis.Redis.from_url(own_redis.url)
    try:
        assert await raw.llen("mm:{acct}:q:facebody:DetectFace") == 2
    finally:
        await raw.aclose()
