"""The limiter contract, one body for both backends (memory and a real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering_middleware.limiter import AdmitStatus, NonceClaim

from .harness import Harness, make_harness, reference_admits
from .redis_server import RedisServer

BACKENDS = ["memory", "redis"]


@pytest.fixture(params=BACKENDS)
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    harness = await make_harness(request.param, url)
    yield harness
    await harness.close()


async def test_admits_n_in_a_window_then_throttles(h: Harness) -> None:
    first = await h.admit(3)
    assert first.admitted and first.remaining == 2 and first.reset == pytest.approx(1.0)
    h.clock.advance(0.25)
    assert (await h.admit(3)).remaining == 1
    h.clock.advance(0.25)
    third = await h.admit(3)
    assert third.admitted and third.remaining == 0
    h.clock.advance(0.25)
    refused = await h.admit(3)
    assert refused.status is AdmitStatus.THROTTLED
    assert refused.remaining == 0
    # The first admission (at 0) leaves the window at 1.0; now is 0.75.
    assert refused.retry_after == pytest.approx(0.25)
    assert refused.reset == pytest.approx(0.25)
    assert refused.at == pytest.approx(h.clock.time())


async def test_window_is_half_open_at_one_second(h: Harness) -> None:
    assert (await h.admit(1)).admitted
    h.clock.advance(0.999999)
    assert (await h.admit(1)).status is AdmitStatus.THROTTLED
    h.clock.advance(0.000001)  # exactly one second later: the first admission has left
    assert (await h.admit(1)).admitted


async def test_refused_calls_are_not_counted(h: Harness) -> None:
    assert (await h.admit(1)).admitted
    for _ in range(5):
        h.clock.advance(0.1)
        assert not (await h.admit(1)).admitted
    h.clock.advance(0.5)  # 1.0 after the only admission: free again despite 5 refusals
    assert (await h.admit(1)).admitted


async def test_limits_are_per_account_and_per_api(h: Harness) -> None:
    assert (await h.admit(1, account="a")).admitted
    assert not (await h.admit(1, account="a")).admitted
    assert (await h.admit(1, account="b")).admitted
    assert (await h.admit(1, account="a", api=("facebody", "CompareFace"))).admitted
    # Same action name in another category is another API.
    assert (await h.admit(1, account="a", api=("imageseg", "DetectFace"))).admitted


async def test_accounts_with_awkward_names_stay_apart(h: Harness) -> None:
    assert (await h.admit(1, account="x}:q:facebody")).admitted
    assert (await h.admit(1, account="x", api=("q", "facebody:facebody"))).admitted
    assert (await h.admit(1, account="{x}")).admitted
    assert (await h.admit(1, account="%7Bx%7D")).admitted


async def test_a_lowered_limit_applies_at_once(h: Harness) -> None:
    for _ in range(5):
        assert (await h.admit(5)).admitted
        h.clock.advance(0.1)
    # Now at 0.5 with admissions at 0.0..0.4; limit 2: four must leave before one fits.
    refused = await h.admit(2)
    assert refused.status is AdmitStatus.THROTTLED
    assert refused.retry_after == pytest.approx(0.8)  # the one at 0.3 leaves at 1.3


async def test_a_reused_nonce_is_refused_and_not_counted(h: Harness) -> None:
    claim = NonceClaim("LTAIkey", "nonce-1", h.clock.time() + 900)
    assert (await h.admit(2, nonce=claim)).admitted
    again = await h.admit(2, nonce=claim)
    assert again.status is AdmitStatus.NONCE_REUSED and again.remaining is None
    # Only one admission counted: one more fits.
    assert (await h.admit(2, nonce=NonceClaim("LTAIkey", "nonce-2", h.clock.time() + 900))).admitted
    # Nonces are per AccessKeyId.
    other_key = await h.admit(5, nonce=NonceClaim("LTAIother", "nonce-1", h.clock.time() + 900))
    assert other_key.admitted


async def test_a_throttled_call_consumes_its_nonce(h: Harness) -> None:
    assert (await h.admit(1)).admitted
    claim = NonceClaim("LTAIkey", "n", h.clock.time() + 900)
    assert (await h.admit(1, nonce=claim)).status is AdmitStatus.THROTTLED
    h.clock.advance(1.0)
    # Capacity is back, but the nonce was checked first and is held.
    assert (await h.admit(1, nonce=claim)).status is AdmitStatus.NONCE_REUSED


async def test_a_nonce_is_held_until_its_expiry(h: Harness) -> None:
    claim = NonceClaim("LTAIkey", "n", h.clock.time() + 900)
    assert (await h.admit(100, nonce=claim)).admitted
    h.clock.advance(899.9)
    assert (await h.admit(100, nonce=claim)).status is AdmitStatus.NONCE_REUSED
    h.clock.advance(0.1)
    assert (await h.admit(100, nonce=claim)).admitted


async def test_an_explicit_time_needs_the_test_setting(h: Harness) -> None:
    with pytest.raises(ValueError, match="limit"):
        await h.admit(0)
    h.limiter._allow_explicit = False
    with pytest.raises(ValueError, match="allow_explicit_time"):
        await h.admit(1)
    assert (await h.limiter.admit("a", "facebody", "DetectFace", 1)).admitted


async def test_concurrent_admissions_never_exceed_the_limit(h: Harness) -> None:
    decisions = await asyncio.gather(*(h.admit(7) for _ in range(50)))
    assert sum(d.admitted for d in decisions) == 7


# -- the rule against a brute-force model --------------------------------------------------

_steps = st.lists(
    st.tuples(
        # microsecond steps, with exact window edges and bursts at one instant
        st.one_of(
            st.integers(0, 1_500_000),
            st.sampled_from([0, 1, 999_999, 1_000_000, 1_000_001]),
        ),
        st.sampled_from([1, 2, 3, 5]),
    ),
    min_size=1,
    max_size=40,
)


async def _check_against_model(h: Harness, steps: list[tuple[int, int]]) -> None:
    admitted: list[int] = []
    now_us = round(h.clock.time() * 1_000_000)
    for dt, limit in steps:
        now_us += dt
        h.clock.set(now_us / 1_000_000)
        expect, inside = reference_admits(admitted, now_us, limit)
        decision = await h.admit(limit)
        assert decision.admitted is expect, (now_us, limit, admitted)
        if expect:
            admitted.append(now_us)
            assert decision.remaining == limit - inside - 1
        else:
            # A retry at now + retry_after is the first instant the model admits again.
            retry_us = now_us + round(decision.retry_after * 1_000_000)
            assert reference_admits(admitted, retry_us, limit)[0]
            assert not reference_admits(admitted, retry_us - 1, limit)[0]


@pytest.mark.parametrize("kind", BACKENDS)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_steps)
def test_decisions_match_the_brute_force_rule(
    kind: str, steps: list[tuple[int, int]], redis_server: RedisServer
) -> None:
    async def run() -> None:
        h = await make_harness(kind, redis_server.url)
        try:
            await _check_against_model(h, steps)
        finally:
            await h.close()

    asyncio.run(run())
