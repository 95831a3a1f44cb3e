"""One limiter of either backend, on a ManualClock, for the contract tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from metering_middleware.clock import ManualClock
from metering_middleware.limiter import Decision, MemoryLimiter, NonceClaim
from metering_middleware.limiter.redis import RedisLimiter

__all__ = ["Harness", "make_harness", "reference_admits"]


@dataclass
class Harness:
    clock: ManualClock
    limiter: MemoryLimiter | RedisLimiter

    async def admit(
        self,
        limit: int,
        *,
        account: str = "acct-1",
        api: tuple[str, str] = ("facebody", "DetectFace"),
        nonce: NonceClaim | None = None,
    ) -> Decision:
        # Both backends decide on the test's clock (Redis through the explicit-time setting).
        return await self.limiter.admit(
            account, api[0], api[1], limit, nonce=nonce, now=self.clock.time()
        )

    async def close(self) -> None:
        await self.limiter.close()


async def make_harness(
    kind: str, redis_url: str | None = None, *, budgets: dict[str, int] | None = None
) -> Harness:
    clock = ManualClock()
    limiter: MemoryLimiter | RedisLimiter
    if kind == "memory":
        limiter = MemoryLimiter(clock, allow_explicit_time=True, budgets=budgets)
    else:
        assert redis_url is not None
        # A prefix per harness: tests share one server and never see each other's keys.
        # Policy closed and generous timeouts: a Redis failure shows up as a refusal (and a
        # failed test), never as a silent fallback decision; a busy CI machine never flakes.
        limiter = RedisLimiter(
            redis_url,
            clock,
            allow_explicit_time=True,
            key_prefix=f"t{uuid.uuid4().hex[:10]}:",
            failure_policy="closed",
            socket_timeout=5.0,
            connect_timeout=5.0,
            budgets=budgets,
        )
    await limiter.start()
    return Harness(clock, limiter)


def reference_admits(admitted_us: list[int], now_us: int, limit: int) -> tuple[bool, int]:
    """The rule by brute force: (admit?, admissions in (now - 1 s, now] before deciding)."""
    inside = sum(1 for t in admitted_us if now_us - 1_000_000 < t <= now_us)
    return inside < limit, inside
