"""QPS admission through the middleware: refused calls are free, counted and explained."""

from __future__ import annotations

import asyncio

from .harness import Env, make_env


async def burst(env: Env, n: int, **v3: object) -> list[int]:
    signed = [env.v3(**v3) for _ in range(n)]  # type: ignore[arg-type]
    # All n arrive at the same instant (the clock stands still while they are sent).
    return [(await env.request(**kwargs)).status for kwargs in signed]


async def test_calls_above_the_default_entitlement_are_throttled(env: Env) -> None:
    statuses = await burst(env, 4)
    assert statuses == [200, 200, 429, 429]  # facebody default: 2 QPS
    assert len(await env.store.calls()) == 2
    await env.runtime.writer.flush_now()
    refused = [c for c in await env.store.outcome_counts() if c.outcome.value == "refused"]
    assert [(c.detail, c.count) for c in refused] == [("throttled", 2)]


async def test_throttled_answer_and_rate_limit_headers(env: Env) -> None:
    signed = [env.v3() for _ in range(3)]
    first, _, refused = [await env.request(**kw) for kw in signed]
    assert first.headers[b"ratelimit-policy"] == b'"qps";q=2;w=1'
    assert first.headers[b"ratelimit"].startswith(b'"qps";r=1;')
    assert refused.status == 429
    assert refused.json()["Code"] == "Throttling.User"
    assert int(refused.headers[b"retry-after"]) >= 1
    assert refused.headers[b"ratelimit"].startswith(b'"qps";r=0;')


async def test_ocr_default_is_one_qps_and_status_is_configurable() -> None:
    env = await make_env(throttle_status=400)
    try:
        host = "ocr.cn-shanghai.aliyuncs.com"
        statuses = await burst(env, 2, action="RecognizeLicensePlate", host=host)
        assert statuses == [200, 400]  # VIAPI's own status for Throttling.User
        env.clock.advance(1.0)
        assert (await env.request(**env.v3("RecognizeLicensePlate", host=host))).status == 200
    finally:
        await env.runtime.stop()


async def test_limits_are_per_api(env: Env) -> None:
    assert await burst(env, 3) == [200, 200, 429]
    env.clock.step(-3.0)
    other = [env.v3("RecognizeFace") for _ in range(2)]
    assert [(await env.request(**kw)).status for kw in other] == [200, 200]


async def test_nonce_replay_is_refused_by_the_limiter(env: Env) -> None:
    signed = env.v3(nonce="only-once")
    assert (await env.request(**signed)).status == 200
    again = await env.request(**signed)
    assert again.status == 400 and again.json()["Code"] == "SignatureNonceUsed"


async def test_enforcement_can_be_switched_off() -> None:
    env = await make_env(enforce_qps=False)
    try:
        assert env.runtime.limiter is None
        assert await burst(env, 5) == [200] * 5
        signed = env.v3(nonce="n-1")
        await env.request(**signed)
        assert (await env.request(**signed)).status == 400  # nonces still single-use
    finally:
        await env.runtime.stop()


async def test_concurrent_burst_admits_exactly_the_limit(env: Env) -> None:
    signed = [env.v3() for _ in range(10)]
    responses = await asyncio.gather(*(env.request(**kw) for kw in signed))
    assert sorted(r.status for r in responses) == [200, 200] + [429] * 8
