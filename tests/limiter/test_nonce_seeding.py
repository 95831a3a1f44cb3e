"""Nonces claimed before a restart, seeded into a limiter: its replays are refused again."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from metering_middleware.clock import ManualClock, SystemClock
from metering_middleware.durable_nonces import DurableNonceLimiter, restore_nonces
from metering_middleware.ledger import LedgerWriter, MemoryStore
from metering_middleware.limiter import AdmitStatus, MemoryLimiter, NonceClaim
from metering_middleware.limiter.redis import RedisLimiter, nonce_key

from .redis_server import RedisServer


@pytest.fixture
async def limiter(redis_server: RedisServer) -> AsyncIterator[RedisLimiter]:
    lim = RedisLimiter(
        redis_server.url, SystemClock(), key_prefix=f"s{uuid.uuid4().hex[:10]}:", socket_timeout=5
    )
    await lim.start()
    yield lim
    await lim.close()


async def test_redis_seeding_uses_the_scripts_keys_set_nx_with_the_remaining_ttl(
    limiter: RedisLimiter, redis_client: aioredis.Redis
) -> None:
    now = time.time()
    live = NonceClaim("LTAIkey", "seeded", now + 600)
    expired = NonceClaim("LTAIkey", "expired", now - 1)
    assert await limiter.seed_nonces([("acct:{x}", live), ("acct:{x}", expired)]) == 1
    key = nonce_key(limiter._prefix, "acct:{x}", "LTAIkey", "seeded")
    assert await redis_client.get(key) == str(round(live.expires_at * 1000)).encode()
    assert 590_000 < await redis_client.pttl(key) <= 600_000
    assert not await redis_client.exists(
        nonce_key(limiter._prefix, "acct:{x}", "LTAIkey", "expired")
    )
    # The admission script reads the seeded key: the replay is refused.
    d = await limiter.admit("acct:{x}", "facebody", "DetectFace", 5, nonce=live)
    assert d.status is AdmitStatus.NONCE_REUSED


async def test_redis_seeding_is_idempotent_and_never_shortens_a_held_nonce(
    limiter: RedisLimiter, redis_client: aioredis.Redis
) -> None:
    now = time.time()
    claim = NonceClaim("LTAIkey", "n", now + 600)
    assert (await limiter.admit("acct", "facebody", "DetectFace", 5, nonce=claim)).admitted
    key = nonce_key(limiter._prefix, "acct", "LTAIkey", "n")
    held = await redis_client.get(key)
    # A second gateway starting, seeding the same nonce (with an earlier expiry even).
    assert await limiter.seed_nonces([("acct", NonceClaim("LTAIkey", "n", now + 60))]) == 0
    assert await redis_client.get(key) == held
    assert await redis_client.pttl(key) > 590_000


async def test_redis_seeding_fills_the_failure_policys_own_store_too(
    own_redis: RedisServer,
) -> None:
    lim = RedisLimiter(own_redis.url, SystemClock(), failure_policy="local", socket_timeout=5)
    await lim.start()
    try:
        claim = NonceClaim("LTAIkey", "n", time.time() + 600)
        own_redis.kill()  # down at start: seeding Redis fails, is logged, is not fatal
        assert await lim.seed_nonces([("acct", claim)]) == 0
        d = await lim.admit("acct", "facebody", "DetectFace", 5, nonce=claim)
        assert d.degraded and d.status is AdmitStatus.NONCE_REUSED
    finally:
        await lim.close()


async def test_memory_seeding_holds_the_nonces_for_admit() -> None:
    clock = ManualClock()
    lim = MemoryLimiter(clock)
    claim = NonceClaim("LTAIkey", "n", clock.time() + 600)
    assert await lim.seed_nonces([("acct", claim)]) == 1
    assert await lim.seed_nonces([("acct", claim)]) == 0
    d = await lim.admit("acct", "facebody", "DetectFace", 5, nonce=claim)
    assert d.status is AdmitStatus.NONCE_REUSED


async def test_nonces_claimed_without_redis_reach_it_once_it_answers_again(
    own_redis: RedisServer,
) -> None:
    """The failure policy's own claims are copied to Redis on recovery (from the ledger),
    so a replay to *another* gateway after the outage is refused too."""
    clock = ManualClock(time.time())
    store = MemoryStore()
    writer = LedgerWriter(store, journal=None, clock=clock)
    inner = RedisLimiter(own_redis.url, clock, failure_policy="local", socket_timeout=0.1)

    async def account_of(access_key_id: str) -> str | None:
        return None

    async def reseed() -> None:
        await restore_nonces(store, gateway, clock.time(), account_of)

    gateway = DurableNonceLimiter(inner, writer, reseed=reseed, clock=clock)
    other = RedisLimiter(own_redis.url, SystemClock(), socket_timeout=5)  # another gateway
    admin = aioredis.Redis.from_url(own_redis.url)
    await writer.start()
    await gateway.start()
    try:
        await reseed()  # what the runtime's start does
        # Unreachable, data kept: every command waits out the pause, then times out.
        await admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        for i in range(3):  # the breaker opens after three failures
            await gateway.admit("acct", "facebody", "DetectFace", 5, nonce=_claim(clock, f"t{i}"))
        during = _claim(clock, "during")  # decided without touching Redis at all
        d = await gateway.admit("acct", "facebody", "DetectFace", 5, nonce=during)
        assert d.degraded and d.admitted
        await writer.flush_now()
        while (await admin.ping()) is not True:  # the pause is over when Redis answers
            pass
        clock.advance(5.0)  # past the breaker's cool-down: the next call starts a probe
        d = await gateway.admit("acct", "facebody", "DetectFace", 5, nonce=_claim(clock, "p"))
        assert d.degraded  # decided by the policy while the probe runs behind it
        await inner.wait_probe()
        d = await gateway.admit("acct", "facebody", "DetectFace", 5, nonce=_claim(clock, "x"))
        assert d.admitted and not d.degraded
        await gateway.join()
        d = await other.admit("acct", "facebody", "DetectFace", 5, nonce=during)
        assert d.status is AdmitStatus.NONCE_REUSED
    finally:
        await gateway.close()
        await other.close()
        await admin.aclose()
        await writer.stop()


def _claim(clock: ManualClock, nonce: str) -> NonceClaim:
    return NonceClaim("LTAIkey", nonce, clock.time() + 600)
