"""The operator's upstream budget, one body for both backends (memory and a real Redis):
shared by every account, decided with the account's own limit, atomically."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from example_gateway.config import load_config
from metering_middleware import ConfigError, MeteringConfig, MeteringRuntime
from metering_middleware.clock import ManualClock
from metering_middleware.durable_nonces import DurableNonceLimiter
from metering_middleware.ledger import LedgerWriter, MemoryStore
from metering_middleware.limiter import (
    AdmitStatus,
    LimiterError,
    LimiterSettings,
    MemoryLimiter,
    NonceClaim,
    UpstreamBudgets,
    parse_budget_spec,
    rate_limit_headers,
    refusal,
    upstream_budget_kind,
)
from metering_middleware.limiter.redis import RedisLimiter, budget_key

from .harness import Harness, make_harness
from .redis_server import RedisServer

BACKENDS = ["memory", "redis"]
API = ("facebody", "DetectFace")


@pytest.fixture(params=BACKENDS)
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    harness = await make_harness(
        request.param, url, budgets={"facebody": 3, "facebody.CompareFace": 1}
    )
    yield harness
    await harness.close()


async def test_the_budget_caps_every_account_together(h: Harness) -> None:
    # Four accounts entitled to 2 QPS each (8 sold), 3 QPS at Alibaba.
    statuses = [(await h.admit(2, account=f"t{i % 4}")).status for i in range(8)]
    assert statuses == [AdmitStatus.ADMITTED] * 3 + [AdmitStatus.UPSTREAM_BUDGET] * 5
    assert h.limiter.decisions.counts == {"admitted": 3, "upstream_budget": 5}


async def test_a_budget_refusal_describes_the_account_and_the_budget(h: Harness) -> None:
    for account in ("a", "b", "c"):
        assert (await h.admit(5, account=account)).admitted
        h.clock.advance(0.25)
    # Now 0.75: the budget's oldest admission (at 0) leaves at 1.0.
    d = await h.admit(5, account="d")
    assert d.status is AdmitStatus.UPSTREAM_BUDGET
    assert d.limit == 5 and d.remaining == 5  # the account's own quota is untouched
    assert d.retry_after == pytest.approx(0.25)
    assert d.reset == 0.0  # no admission of its own to leave
    error = refusal(d)
    assert error is not None and (error.code, error.status) == ("Throttling.Api", 429)
    assert error.reason == "upstream_budget"
    headers = dict(rate_limit_headers(d))
    assert headers[b"ratelimit-policy"] == b'"qps";q=5;w=1'
    assert headers[b"ratelimit"] == b'"qps";r=5;t=0'
    assert headers[b"retry-after"] == b"1"
    h.clock.advance(0.25)
    assert (await h.admit(5, account="d")).admitted  # exactly when Retry-After said


async def test_a_budget_refusal_leaves_no_trace_in_the_accounts_log(h: Harness) -> None:
    assert (await h.admit(5, account="big")).admitted
    assert (await h.admit(5, account="big")).admitted
    assert (await h.admit(5, account="big")).admitted  # the budget (3) is used up
    h.clock.advance(0.5)
    for _ in range(4):  # refused by the budget, not by its own limit of 2
        assert (await h.admit(2, account="small")).status is AdmitStatus.UPSTREAM_BUDGET
    h.clock.advance(0.5)  # the budget frees; the refusals used none of small's 2
    first = await h.admit(2, account="small")
    second = await h.admit(2, account="small")
    assert first.admitted and first.remaining == 1
    assert second.admitted and second.remaining == 0
    third = await h.admit(2, account="small")
    assert third.status is AdmitStatus.THROTTLED  # now its own limit


async def test_a_throttled_call_takes_nothing_from_the_budget(h: Harness) -> None:
    assert (await h.admit(1, account="a")).admitted
    for _ in range(5):  # over a's own limit: throttled, whatever the budget has left
        assert (await h.admit(1, account="a")).status is AdmitStatus.THROTTLED
    assert (await h.admit(1, account="b")).admitted
    assert (await h.admit(1, account="c")).admitted  # 3 = the budget: a's refusals took none
    assert (await h.admit(1, account="d")).status is AdmitStatus.UPSTREAM_BUDGET


async def test_the_accounts_own_limit_is_checked_first(h: Harness) -> None:
    for account in ("a", "b", "c"):
        assert (await h.admit(1, account=account)).admitted
    # Both full: the answer is the account's own limit (Throttling.User), not the budget.
    assert (await h.admit(1, account="a")).status is AdmitStatus.THROTTLED


async def test_budgets_are_per_api_with_a_category_default(h: Harness) -> None:
    for action in ("DetectFace", "RecognizeFace"):  # the default (3) applies to each API
        for i in range(3):
            assert (await h.admit(9, account=f"x{i}", api=("facebody", action))).admitted
        refused = await h.admit(9, account="y", api=("facebody", action))
        assert refused.status is AdmitStatus.UPSTREAM_BUDGET
    # One API named on its own: 1.
    assert (await h.admit(9, api=("facebody", "CompareFace"))).admitted
    assert (await h.admit(9, api=("facebody", "CompareFace"))).status is (
        AdmitStatus.UPSTREAM_BUDGET
    )
    # Another category has no budget: only the account's limit counts.
    for _ in range(9):
        assert (await h.admit(9, api=("ocr", "RecognizeCharacter"))).admitted


async def test_a_budget_refused_call_consumes_its_nonce_and_a_replay_no_budget(
    h: Harness,
) -> None:
    for account in ("a", "b"):
        assert (await h.admit(5, account=account)).admitted
    replayed = NonceClaim("LTAIkey", "n-1", h.clock.time() + 900)
    assert (await h.admit(5, account="c", nonce=replayed)).admitted  # the budget's third
    # Replays are refused for their nonce and take no budget (nothing was admitted).
    for _ in range(3):
        d = await h.admit(5, account="c", nonce=replayed)
        assert d.status is AdmitStatus.NONCE_REUSED
    h.clock.advance(1.0)
    claim = NonceClaim("LTAIkey", "n-2", h.clock.time() + 900)
    for account in ("a", "b", "a"):
        assert (await h.admit(5, account=account)).admitted
    # Over the budget, as a throttled call: the nonce is held, a retry must sign anew.
    assert (await h.admit(5, account="c", nonce=claim)).status is AdmitStatus.UPSTREAM_BUDGET
    h.clock.advance(1.0)
    assert (await h.admit(5, account="c", nonce=claim)).status is AdmitStatus.NONCE_REUSED


async def test_an_attacker_gets_its_own_entitlement_however_idle_the_others(
    h: Harness,
) -> None:
    # The budget has room for 3, the attacker is entitled to 2: spare budget left by
    # idle tenants is never the attacker's.
    for _ in range(3):
        decisions = await asyncio.gather(*(h.admit(2, account="attacker") for _ in range(20)))
        assert sum(d.admitted for d in decisions) == 2
        assert all(d.status is AdmitStatus.THROTTLED for d in decisions if not d.admitted), (
            "refusals over its own limit are its own (Throttling.User)"
        )
        h.clock.advance(1.0)
    # And the budget it did not use is there for the others.
    assert (await h.admit(2, account="other")).admitted


async def test_concurrent_admissions_never_exceed_the_budget(h: Harness) -> None:
    decisions = await asyncio.gather(*(h.admit(2, account=f"t{i % 10}") for i in range(60)))
    assert sum(d.admitted for d in decisions) == 3
    assert {d.status for d in decisions} == {AdmitStatus.ADMITTED, AdmitStatus.UPSTREAM_BUDGET}


# -- the rule against a brute-force model --------------------------------------------------

_events = st.lists(
    st.tuples(
        st.one_of(
            st.integers(0, 700_000),
            st.sampled_from([0, 1, 999_999, 1_000_000, 1_000_001]),
        ),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([1, 2, 3]),
    ),
    min_size=1,
    max_size=40,
)


def _inside(times: list[int], now_us: int) -> int:
    return sum(1 for t in times if now_us - 1_000_000 < t <= now_us)


@pytest.mark.parametrize("kind", BACKENDS)
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=_events, budget=st.sampled_from([1, 2, 4]))
def test_decisions_match_the_brute_force_rule(
    kind: str, events: list[tuple[int, str, int]], budget: int, redis_server: RedisServer
) -> None:
    async def run() -> None:
        h = await make_harness(kind, redis_server.url, budgets={"facebody": budget})
        own: dict[str, list[int]] = {}
        shared: list[int] = []
        now_us = round(h.clock.time() * 1_000_000)
        try:
            for dt, account, limit in events:
                now_us += dt
                h.clock.set(now_us / 1_000_000)
                mine = own.setdefault(account, [])
                if _inside(mine, now_us) >= limit:
                    expect = AdmitStatus.THROTTLED
                elif _inside(shared, now_us) >= budget:
                    expect = AdmitStatus.UPSTREAM_BUDGET
                else:
                    expect = AdmitStatus.ADMITTED
                    mine.append(now_us)
                    shared.append(now_us)
                d = await h.admit(limit, account=account)
                assert d.status is expect, (now_us, account, limit, own, shared)
                if expect is AdmitStatus.UPSTREAM_BUDGET:
                    # Retry-After names the first instant the budget has room again.
                    retry_us = now_us + round(d.retry_after * 1_000_000)
                    assert _inside(shared, retry_us) < budget
                    assert _inside(shared, retry_us - 1) >= budget
        finally:
            await h.close()

    asyncio.run(run())


# -- settings ------------------------------------------------------------------------------


def test_the_setting_per_api_with_a_category_default() -> None:
    b = UpstreamBudgets({"facebody": 50, "facebody.DetectFace": 100, "ocr.RecognizeCharacter": 7})
    assert b.budget("facebody", "DetectFace") == 100
    assert b.budget("facebody", "CompareFace") == 50
    assert b.budget("ocr", "RecognizeCharacter") == 7
    assert b.budget("ocr", "RecognizeTable") is None
    assert b.budget("imageseg", "SegmentBody") is None
    assert not UpstreamBudgets({}) and UpstreamBudgets({"ocr": 1})
    assert b.spec() == {"facebody": 50, "facebody.DetectFace": 100, "ocr.RecognizeCharacter": 7}
    unknown = b.unknown(frozenset({"facebody"}), frozenset({("facebody", "DetectFace")}))
    assert unknown == ["ocr.RecognizeCharacter"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"facebody": 0}, r"upstream_qps\.facebody: must be a positive integer"),
        ({"facebody": True}, "positive integer"),
        ({"facebody": "50"}, "positive integer"),
        ({"facebody.": 5}, r"write a category \(facebody\) or one API"),
        ({".DetectFace": 5}, "write a category"),
        ({"a.b.c": 5}, "write a category"),
    ],
)
def test_bad_budgets_are_refused(spec: dict[str, object], message: str) -> None:
    with pytest.raises(LimiterError, match=message):
        UpstreamBudgets(spec)
    with pytest.raises(LimiterError, match=message):
        LimiterSettings(upstream_qps=spec)  # type: ignore[arg-type]


def test_the_environment_spelling() -> None:
    assert parse_budget_spec("facebody=50, facebody.DetectFace=100,") == {
        "facebody": 50,
        "facebody.DetectFace": 100,
    }
    with pytest.raises(LimiterError, match="is not <category>=<QPS>"):
        parse_budget_spec("facebody:50")
    with pytest.raises(LimiterError, match="is not <category>=<QPS>"):
        parse_budget_spec("=50")


def test_the_refusal_is_configurable() -> None:
    kind = upstream_budget_kind("Throttling.User", 400)
    assert (kind.code, kind.status, kind.reason) == ("Throttling.User", 400, "upstream_budget")
    assert upstream_budget_kind().status == 429
    with pytest.raises(ValueError, match="429, 400 or 503"):
        upstream_budget_kind("Throttling.Api", 500)
    with pytest.raises(ValueError, match="non-empty"):
        upstream_budget_kind(" ", 429)


# -- Redis only ----------------------------------------------------------------------------


async def test_one_round_trip_with_a_budget_and_keys_apart(own_redis: RedisServer) -> None:
    prefix = f"b{uuid.uuid4().hex[:8]}:"
    lim = RedisLimiter(
        own_redis.url, ManualClock(), socket_timeout=5.0, key_prefix=prefix, budgets={"facebody": 9}
    )
    stats = aioredis.Redis.from_url(own_redis.url)
    try:
        await lim.start()
        await lim.admit("warm", "ocr", "RecognizeCharacter", 5)  # connection handshake done
        await stats.config_resetstat()
        for i in range(30):
            claim = NonceClaim("LTAIkey", f"n{i}", 4_000_000_000.0) if i % 2 else None
            await lim.admit(f"acct-{i % 3}", *API, 5, nonce=claim)
        info = await stats.info("commandstats")
        keys = {k.decode() for k in await stats.keys(prefix + "*") if isinstance(k, bytes)}
    finally:
        await lim.close()
        await stats.aclose()
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}
    inside_script = {
        "time", "get", "set", "lrange", "ltrim", "del", "lpush", "pexpire", "lindex", "rpop",
        "llen",
    }  # fmt: skip
    round_trips = {k: v for k, v in calls.items() if k not in inside_script}
    assert round_trips == {"config|resetstat": 1, "evalsha": 30}
    # One budget log for the API, shared by the three accounts; it expires like theirs.
    assert budget_key(prefix, *API) in keys
    assert sum(1 for k in keys if ":q:" in k) == 4  # warm + three accounts


async def test_script_reloaded_with_a_budget_after_redis_loses_its_cache(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    lim = RedisLimiter(
        redis_server.url,
        ManualClock(),
        key_prefix=f"b{uuid.uuid4().hex[:8]}:",
        failure_policy="closed",
        socket_timeout=5.0,
        budgets={"facebody": 2},
    )
    await lim.start()
    try:
        assert (await lim.admit("a", *API, 5)).admitted
        await redis_client.script_flush()
        again = await lim.admit("b", *API, 5)
        assert again.admitted and not again.degraded
        assert (await lim.admit("c", *API, 5)).status is AdmitStatus.UPSTREAM_BUDGET
        assert lim.failures == 0
    finally:
        await lim.close()


# -- while Redis fails: the failure policy, as without a budget ----------------------------


@pytest.mark.parametrize("policy", ["open", "closed", "local"])
async def test_the_failure_policy_with_a_budget(policy: str, own_redis: RedisServer) -> None:
    clock = ManualClock()
    lim = RedisLimiter(
        own_redis.url,
        clock,
        failure_policy=policy,
        processes=2,
        breaker_threshold=1,
        breaker_cooldown=60.0,
        socket_timeout=5.0,
        budgets={"facebody": 4},
    )
    await lim.start()
    try:
        assert (await lim.admit("z", *API, 4)).admitted  # shared, before the failure
        own_redis.kill()
        decisions = [await lim.admit(account, *API, 4) for account in ("a", "a", "a", "b", "c")]
        assert all(d.degraded for d in decisions)
        statuses = [d.status for d in decisions]
        if policy == "open":  # neither the limit nor the budget is enforced
            assert statuses == [AdmitStatus.ADMITTED] * 5
        elif policy == "closed":
            assert statuses == [AdmitStatus.UNAVAILABLE] * 5
        else:
            # This process's share: 4 / 2 = 2 of a's limit, 4 / 2 = 2 of the budget.
            assert statuses == [
                AdmitStatus.ADMITTED,
                AdmitStatus.ADMITTED,
                AdmitStatus.THROTTLED,
                AdmitStatus.UPSTREAM_BUDGET,
                AdmitStatus.UPSTREAM_BUDGET,
            ]
            assert lim.decisions.counts["local_upstream_budget"] == 2
            assert lim.decisions.counts["local_throttled"] == 1
            clock.advance(1.0)  # the budget's local share frees; b's refusals left no trace
            assert (await lim.admit("b", *API, 4)).admitted
            assert (await lim.admit("b", *API, 4)).admitted
            assert (await lim.admit("c", *API, 4)).status is AdmitStatus.UPSTREAM_BUDGET
    finally:
        await lim.close()


# -- the meter's settings (MeteringConfig, the gateway's file and environment) -------------


def test_the_meter_reads_the_budget_from_a_file_and_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        "[metering]\nupstream_throttle_status = 503\n"
        '[metering.upstream_qps]\nfacebody = 50\n"facebody.DetectFace" = 100\n'
        "ocr.RecognizeCharacter = 7\n"  # unquoted: a nested TOML table, flattened
    )
    _, metering = load_config(str(cfg), environ={})
    assert dict(metering.upstream_qps) == {
        "facebody": 50,
        "facebody.DetectFace": 100,
        "ocr.RecognizeCharacter": 7,
    }
    assert (metering.upstream_throttle_code, metering.upstream_throttle_status) == (
        "Throttling.Api",
        503,
    )
    env = MeteringConfig().with_env({"METERING_UPSTREAM_QPS": "imageseg=30, facebody.DetectFace=9"})
    assert dict(env.upstream_qps) == {"imageseg": 30, "facebody.DetectFace": 9}


_TABLE = r'must be a table of <category> or "<category>\.<Action>" = QPS \(a positive integer\)'


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"upstream_qps": {"facebody": 0}},
            rf"argument upstream_qps: {_TABLE}, not \{{'facebody': 0\}}",
        ),
        ({"upstream_qps": {"facebody.": 3}}, f"argument upstream_qps: {_TABLE}"),
        ({"upstream_qps": {"facebody": "50"}}, f"argument upstream_qps: {_TABLE}"),
        ({"upstream_qps": [1]}, f"argument upstream_qps: {_TABLE}"),
        ({"upstream_throttle_status": 500}, "upstream_throttle_status: must be 429 or 400 or 503"),
        ({"upstream_throttle_code": " "}, "upstream_throttle_code: must be a non-empty error code"),
    ],
)
def test_bad_meter_settings_name_the_setting(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MeteringConfig(**settings)


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(
        ConfigError, match=f"environment variable METERING_UPSTREAM_QPS: {_TABLE}, not 'facebody:5'"
    ):
        MeteringConfig().with_env({"METERING_UPSTREAM_QPS": "facebody:5"})


def test_a_budget_naming_nothing_in_the_catalog_is_refused(tmp_path: Path) -> None:
    for typo in ({"facebdy": 50}, {"facebody.DetectFaces": 5}):
        config = MeteringConfig(ledger_url="memory://", upstream_qps=typo)
        with pytest.raises(LimiterError, match="not a category or API"):
            MeteringRuntime(config)


async def test_a_budget_refusals_nonce_is_kept_in_the_ledger_too() -> None:
    # It is held by the limiter (like a throttled call's), so it must outlive a restart.
    clock = ManualClock()
    store = MemoryStore()
    async with LedgerWriter(store, journal=None, clock=clock) as writer:
        limiter = DurableNonceLimiter(MemoryLimiter(clock, budgets={"facebody": 1}), writer)
        until = clock.time() + 900
        for account, nonce, status in (
            ("a", "n-a", AdmitStatus.ADMITTED),
            ("b", "n-b", AdmitStatus.UPSTREAM_BUDGET),
        ):
            claim = NonceClaim("LTAIkey", nonce, until)
            assert (await limiter.admit(account, *API, 5, nonce=claim)).status is status
        await writer.flush_now()
        held = sorted(
            [(n.account, n.nonce) async for page in store.live_nonces(clock.time()) for n in page]
        )
    assert held == [("a", "n-a"), ("b", "n-b")]
