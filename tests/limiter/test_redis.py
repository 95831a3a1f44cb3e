"""What only the Redis backend does: its keys, Redis's clock, the script cache, round trips."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from metering_middleware.clock import ManualClock
from metering_middleware.limiter import AdmitStatus, LimiterError, NonceClaim
from metering_middleware.limiter.redis import RedisLimiter, log_key, nonce_key

from .redis_server import RedisServer


@pytest.fixture
async def limiter(redis_server: RedisServer) -> AsyncIterator[RedisLimiter]:
    # The gateway's clock is 26 years off: only Redis's TIME may matter.
    lim = RedisLimiter(
        redis_server.url,
        ManualClock(1_000_000_000.0),
        key_prefix=f"r{uuid.uuid4().hex[:10]}:",
        failure_policy="closed",
        socket_timeout=5.0,
    )
    await lim.start()
    yield lim
    await lim.close()


async def _redis_now(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return seconds + micros / 1_000_000


async def test_decisions_use_redis_time_not_the_gateway_clock(
    limiter: RedisLimiter, redis_client: aioredis.Redis
) -> None:
    before = await _redis_now(redis_client)
    d = await limiter.admit("acct", "facebody", "DetectFace", 2)
    after = await _redis_now(redis_client)
    assert d.admitted and not d.degraded
    assert before <= d.at <= after


async def test_an_accounts_keys_share_one_cluster_slot_and_expire(
    limiter: RedisLimiter, redis_client: aioredis.Redis
) -> None:
    prefix = limiter._prefix
    now = await _redis_now(redis_client)
    claim = NonceClaim("LTAIkey", "nonce-1", now + 900)
    for category, action in [("facebody", "DetectFace"), ("ocr", "RecognizeCharacter")]:
        d = await limiter.admit("acct:{7}", category, action, 2, nonce=claim)
        claim = NonceClaim("LTAIkey", f"nonce-{category}", now + 900)
        assert d.admitted
    keys = sorted(k.decode() for k in await redis_client.keys(prefix + "*") if isinstance(k, bytes))
    assert keys == sorted(
        [
            log_key(prefix, "acct:{7}", "facebody", "DetectFace"),
            log_key(prefix, "acct:{7}", "ocr", "RecognizeCharacter"),
            nonce_key(prefix, "acct:{7}", "LTAIkey", "nonce-1"),
            nonce_key(prefix, "acct:{7}", "LTAIkey", "nonce-facebody"),
        ]
    )
    assert len({key_slot(k.encode()) for k in keys}) == 1
    other = log_key(prefix, "acct:{8}", "facebody", "DetectFace")
    assert key_slot(other.encode()) != key_slot(keys[0].encode())
    for k in keys:
        ttl_ms = await redis_client.pttl(k)
        if ":q:" in k:
            assert 0 < ttl_ms <= 1001  # one window after the newest admission
        else:
            assert 899_000 < ttl_ms <= 900_000  # the nonce's timestamp + 15 minutes


async def test_script_reloaded_after_redis_loses_its_cache(
    limiter: RedisLimiter, redis_client: aioredis.Redis
) -> None:
    assert (await limiter.admit("acct", "facebody", "DetectFace", 2)).admitted
    await redis_client.script_flush()
    again = await limiter.admit("acct", "facebody", "DetectFace", 2)
    assert again.admitted and not again.degraded and again.remaining == 0
    assert limiter.failures == 0
    assert (await limiter.admit("acct", "facebody", "DetectFace", 2)).status is (
        AdmitStatus.THROTTLED
    )


async def test_one_round_trip_per_admission(own_redis: RedisServer) -> None:
    lim = RedisLimiter(own_redis.url, ManualClock(), socket_timeout=5.0)
    stats = aioredis.Redis.from_url(own_redis.url)
    try:
        await lim.start()
        await lim.admit("warm", "facebody", "DetectFace", 5)  # connection handshake done
        await stats.config_resetstat()
        admissions = 0
        for i in range(40):
            claim = NonceClaim("LTAIkey", f"n{i}", 4_000_000_000.0) if i % 2 else None
            await lim.admit(f"acct-{i % 3}", "facebody", "DetectFace", 5, nonce=claim)
            admissions += 1
        info = await stats.info("commandstats")
    finally:
        await lim.close()
        await stats.aclose()
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}
    # Redis counts the commands a script runs too; those are not round trips.
    inside_script = {"time", "get", "set", "lrange", "ltrim", "del", "lpush", "pexpire"}
    round_trips = {k: v for k, v in calls.items() if k not in inside_script}
    assert round_trips == {"config|resetstat": 1, "evalsha": admissions}
    assert calls["set"] == admissions // 2  # the nonces, claimed inside the same script


async def test_explicit_time_is_refused_without_the_test_setting(limiter: RedisLimiter) -> None:
    with pytest.raises(ValueError, match="allow_explicit_time"):
        await limiter.admit("acct", "facebody", "DetectFace", 2, now=1_767_225_600.0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(LimiterError, match="failure policy"):
        RedisLimiter("redis://127.0.0.1:1/0", ManualClock(), failure_policy="sometimes")
    with pytest.raises(LimiterError, match="hash tag"):
        RedisLimiter("redis://127.0.0.1:1/0", ManualClock(), key_prefix="{x}:")
    with pytest.raises(LimiterError, match="processes"):
        RedisLimiter("redis://127.0.0.1:1/0", ManualClock(), processes=0)
