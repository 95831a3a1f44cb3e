"""The nonce-recording limiter: every decision that claimed a nonce puts it in the ledger."""

from __future__ import annotations

from metering_middleware.clock import ManualClock
from metering_middleware.durable_nonces import DurableNonceLimiter
from metering_middleware.ledger import LedgerWriter, MemoryStore
from metering_middleware.limiter import AdmitStatus, MemoryLimiter, NonceClaim
from metering_middleware.limiter.redis import RedisLimiter
from tests.limiter.redis_server import free_port


async def _held(store: MemoryStore, now: float) -> list[tuple[str, str]]:
    return sorted([(n.account, n.nonce) async for page in store.live_nonces(now) for n in page])


async def test_admitted_and_throttled_claims_are_recorded_a_reused_one_is_not() -> None:
    clock = ManualClock()
    store = MemoryStore()
    async with LedgerWriter(store, journal=None, clock=clock) as writer:
        limiter = DurableNonceLimiter(MemoryLimiter(clock), writer)
        until = clock.time() + 900

        async def admit(nonce: str) -> AdmitStatus:
            claim = NonceClaim("LTAIkey", nonce, until)
            return (await limiter.admit("acme", "facebody", "DetectFace", 1, nonce=claim)).status

        assert await admit("a") is AdmitStatus.ADMITTED
        assert await admit("b") is AdmitStatus.THROTTLED  # it burned its nonce: kept too
        assert await admit("a") is AdmitStatus.NONCE_REUSED  # nothing new claimed
        await limiter.admit("acme", "facebody", "DetectFace", 1)  # a trusted hop: no nonce
        await writer.flush_now()
        assert await _held(store, clock.time()) == [("acme", "a"), ("acme", "b")]


async def test_a_call_refused_for_an_unreachable_redis_claims_and_records_nothing() -> None:
    clock = ManualClock()
    store = MemoryStore()
    redis = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", clock, failure_policy="closed")
    async with LedgerWriter(store, journal=None, clock=clock) as writer:
        limiter = DurableNonceLimiter(redis, writer)
        claim = NonceClaim("LTAIkey", "n", clock.time() + 900)
        d = await limiter.admit("acme", "facebody", "DetectFace", 5, nonce=claim)
        assert d.status is AdmitStatus.UNAVAILABLE  # the client may retry with this nonce
        await writer.flush_now()
        assert await _held(store, clock.time()) == []
    await limiter.close()
