"""The package's public face, its factory, and the verify-then-admit flow."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import metering_middleware.limiter as limiter_pkg
from metering_middleware.clock import ManualClock
from metering_middleware.limiter import (
    AdmitStatus,
    DeferredNonceStore,
    FailurePolicy,
    LimiterError,
    LimiterSettings,
    MemoryLimiter,
    NonceClaim,
    open_limiter,
)
from metering_middleware.limiter.redis import RedisLimiter
from metering_middleware.signing import SignatureVerifier, SignedCall, sign_v1_params

from .redis_server import RedisServer

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_exported_names() -> None:
    assert sorted(limiter_pkg.__all__) == sorted(
        [
            "DEFAULT_POLICY_NAME",
            "THROTTLING_CODE",
            "THROTTLING_MESSAGE",
            "UPSTREAM_BUDGET",
            "UPSTREAM_THROTTLING_CODE",
            "WINDOW_SECONDS",
            "AdmitStatus",
            "BreakerState",
            "CircuitBreaker",
            "Decision",
            "DeferredNonceStore",
            "FailurePolicy",
            "Limiter",
            "LimiterError",
            "LimiterSettings",
            "MemoryLimiter",
            "NonceClaim",
            "UpstreamBudgets",
            "local_share",
            "open_limiter",
            "parse_budget_spec",
            "rate_limit_headers",
            "refusal",
            "upstream_budget_kind",
        ]
    )
    for name in limiter_pkg.__all__:
        assert hasattr(limiter_pkg, name)


async def test_urls_choose_the_backend(tmp_path: Path, redis_server: RedisServer) -> None:
    clock = ManualClock()
    memory = open_limiter("memory://", clock, lock_path=str(tmp_path / "x.lock"))
    assert isinstance(memory, MemoryLimiter)
    settings = LimiterSettings(
        url=redis_server.url, failure_policy=FailurePolicy.OPEN, processes=4, key_prefix="f:"
    )
    shared = open_limiter(settings, clock)
    assert isinstance(shared, RedisLimiter)
    assert (shared.policy, shared.processes) == (FailurePolicy.OPEN, 4)
    await shared.start()
    try:
        assert (await shared.admit("a", "facebody", "DetectFace", 1)).admitted
    finally:
        await shared.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "memcached://x"}, "unsupported limiter URL"),
        ({"url": "memory://somewhere"}, "take no path"),
        ({"failure_policy": "maybe"}, "failure_policy"),
        ({"throttle_status": 418}, "throttle_status"),
        ({"processes": 0}, "processes"),
        ({"socket_timeout": 0}, "socket_timeout"),
    ],
)
def test_bad_settings_name_the_setting(settings: dict[str, object], message: str) -> None:
    with pytest.raises(LimiterError, match=message):
        LimiterSettings(**settings)  # type: ignore[arg-type]


async def test_verify_without_claiming_then_admit_claims_the_nonce() -> None:
    clock = ManualClock(T0)
    params = sign_v1_params(
        "POST", [("Action", "DetectFace")], "LTAIak", "s3cret", now=T0, nonce="n1"
    )
    call = SignedCall("v1", "POST", "/", tuple(params), {}, b"", "LTAIak")
    verifier = SignatureVerifier(DeferredNonceStore(), clock)
    limiter = MemoryLimiter(clock)
    for expected in (AdmitStatus.ADMITTED, AdmitStatus.NONCE_REUSED):
        await verifier.verify(call, "s3cret")  # the signature only: the nonce is not taken
        claim = NonceClaim.of(call, 900)
        assert claim == NonceClaim("LTAIak", "n1", T0.timestamp() + 900)
        decision = await limiter.admit("acct", "facebody", "DetectFace", 2, nonce=claim)
        assert decision.status is expected
