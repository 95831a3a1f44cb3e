"""The tenant view admits exactly what the meter would: a fresh, genuine V3 signature of a
known, enabled key, each nonce once; and it limits each account's calls per second.

Real HTTP against the example gateway on a ManualClock; requests signed by the project's
signer at the gateway's clock. Both nonce paths run: the verifier's store (no limiter)
and the limiter's claim (``enforce_qps``), as the meter has them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from metering_middleware import ManualClock
from metering_middleware.signing import sign_v1_params, sign_v3
from metering_middleware.tenant import MAX_BODY_BYTES

from .support import Key, TenantGateway, code, data, signed_headers, tenant_gateway

BALANCE = ("DescribeBalance", "/tenant/v1/balance")


@pytest.fixture(params=[False, True], ids=["verifier-nonces", "limiter-nonces"])
async def gw(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[TenantGateway]:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    async with tenant_gateway(tmp_path, clock=clock, tenant_qps=3, enforce_qps=request.param) as g:
        yield g


def _clock(gw: TenantGateway) -> ManualClock:
    assert isinstance(gw.clock, ManualClock)
    return gw.clock


async def test_a_replayed_request_is_refused(gw: TenantGateway) -> None:
    a = gw.seeded.a
    headers = signed_headers(a, *BALANCE, [], b"", gw.clock.now())
    first = await gw.raw("GET", BALANCE[1], [], headers)
    assert data(first)["account"] == "acme"
    again = await gw.raw("GET", BALANCE[1], [], headers)
    assert code(again) == (400, "SignatureNonceUsed")
    # Still refused later in the window, and to another of the view's paths (same nonce).
    _clock(gw).advance(60)
    assert code(await gw.raw("GET", BALANCE[1], [], headers)) == (400, "SignatureNonceUsed")


@pytest.mark.parametrize("enforce_qps", [False, True], ids=["verifier-nonces", "limiter-nonces"])
async def test_a_replay_after_a_restart_is_refused(tmp_path: Path, enforce_qps: bool) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    async with tenant_gateway(tmp_path, clock=clock, enforce_qps=enforce_qps) as gw:
        headers = signed_headers(gw.seeded.a, *BALANCE, [], b"", clock.now())
        assert data(await gw.raw("GET", BALANCE[1], [], headers))["account"] == "acme"
        seeded = gw.seeded
    clock.advance(30)
    # A new gateway process on the same ledger: the nonce was kept in the ledger file.
    async with tenant_gateway(
        tmp_path, clock=clock, enforce_qps=enforce_qps, seeded=seeded
    ) as again:
        assert code(await again.raw("GET", BALANCE[1], [], headers)) == (400, "SignatureNonceUsed")
        assert data(await again.send(seeded.a, *BALANCE))["account"] == "acme"


async def test_a_nonce_spent_on_a_viapi_call_is_spent_here_too(gw: TenantGateway) -> None:
    a = gw.seeded.a
    nonce = uuid.uuid4().hex
    body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
    headers = {
        "host": "facebody.cn-shanghai.aliyuncs.com",
        "x-acs-action": "DetectFace",
        "x-acs-version": "2019-12-30",
        "content-type": "application/x-www-form-urlencoded",
    }
    headers |= sign_v3(
        "POST", "/", [], headers, body, a.id, a.secret, now=gw.clock.now(), nonce=nonce
    )
    async with httpx.AsyncClient(base_url=gw.base, timeout=10.0) as client:
        metered = await client.post("/", content=body, headers=headers)
    assert metered.status_code == 200, metered.text
    answer = await gw.send(a, *BALANCE, nonce=nonce)
    assert code(answer) == (400, "SignatureNonceUsed")


async def test_a_stale_or_future_date_is_refused(gw: TenantGateway) -> None:
    a = gw.seeded.a
    for skew in (-901, 901, -86400):
        answer = await gw.send(a, *BALANCE, now=gw.clock.now() + timedelta(seconds=skew))
        assert code(answer) == (400, "InvalidTimeStamp.Expired"), skew
    # Inside the window (15 minutes either way) it is accepted.
    answer = await gw.send(a, *BALANCE, now=gw.clock.now() - timedelta(seconds=890))
    assert data(answer)["account"] == "acme"


async def test_a_tampered_request_is_refused(gw: TenantGateway) -> None:
    a, month = gw.seeded.a, gw.seeded.month
    now = gw.clock.now()
    # The query: signed for one month, sent asking another.
    headers = signed_headers(a, "DescribeBill", "/tenant/v1/bills", [("Month", month)], b"", now)
    answer = await gw.raw("GET", "/tenant/v1/bills", [("Month", "2026-01")], headers)
    assert code(answer) == (400, "SignatureDoesNotMatch")
    # The path: signed for the balance, sent to the plans.
    headers = signed_headers(a, "DescribeBalance", "/tenant/v1/balance", [], b"", now)
    answer = await gw.raw("GET", "/tenant/v1/plans", [], headers)
    assert code(answer) == (400, "SignatureDoesNotMatch")
    # The action header: signed as the balance, sent naming the plans.
    headers = signed_headers(a, "DescribeBalance", "/tenant/", [], b"", now)
    answer = await gw.raw("GET", "/tenant/", [], {**headers, "x-acs-action": "DescribePlans"})
    assert code(answer) == (400, "SignatureDoesNotMatch")
    # The body: its hash is signed.
    body = b'{"Month": "%s"}' % month.encode()
    headers = signed_headers(a, "DescribeBill", "/tenant/v1/bills", [], body, now, "POST")
    answer = await gw.raw("POST", "/tenant/v1/bills", [], headers, b'{"Month": "2026-01"}')
    assert code(answer) == (400, "SignatureDoesNotMatch")
    # An x-acs-* header added after signing.
    headers = signed_headers(a, *BALANCE, [], b"", now)
    answer = await gw.raw("GET", BALANCE[1], [], {**headers, "x-acs-account": "beta"})
    assert code(answer) == (400, "SignatureDoesNotMatch")
    # None of them burnt a nonce or a slot: the genuine request still goes through.
    assert data(await gw.send(a, *BALANCE))["account"] == "acme"


async def test_unknown_and_disabled_keys_are_refused(gw: TenantGateway) -> None:
    answer = await gw.send(Key("LTAInobodyhasthiskey0000", "x" * 30), *BALANCE)
    assert code(answer) == (404, "InvalidAccessKeyId.NotFound")
    answer = await gw.send(gw.seeded.a_disabled, *BALANCE)
    assert code(answer) == (403, "InvalidAccessKeyId.Inactive")


async def test_v1_and_unsigned_requests_are_refused_with_a_clear_code(gw: TenantGateway) -> None:
    a = gw.seeded.a
    async with httpx.AsyncClient(base_url=gw.base, timeout=10.0) as client:
        unsigned = await client.get(BALANCE[1])
        assert code(unsigned) == (400, "MissingParameter")
        assert "Authorization" in unsigned.json()["Message"]
        params = sign_v1_params(
            "GET",
            [("Action", "DescribeBalance"), ("Version", "2026-12-01"), ("Format", "JSON")],
            a.id,
            a.secret,
            now=gw.clock.now(),
            nonce=uuid.uuid4().hex,
        )
        v1 = await client.get(BALANCE[1], params=params)
        assert code(v1) == (400, "UnsupportedSignatureVersion")
        form = await client.post(
            "/tenant/",
            content="&".join(f"{k}={v}" for k, v in params).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert code(form) == (400, "UnsupportedSignatureVersion")
        bearer = await client.get(BALANCE[1], headers={"authorization": "Bearer abc"})
        assert code(bearer) == (400, "UnsupportedSignatureVersion")
        malformed = await client.get(
            BALANCE[1], headers={"authorization": "ACS3-HMAC-SHA256 Credential="}
        )
        assert code(malformed) == (400, "SignatureDoesNotMatch")


async def test_the_v1_sdk_is_refused(gw: TenantGateway) -> None:
    import asyncio

    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.request import CommonRequest

    a = gw.seeded.a

    def call() -> tuple[int, str]:
        client = AcsClient(a.id, a.secret, "cn-shanghai")
        request = CommonRequest(domain=gw.endpoint, version="2026-12-01")
        request.set_uri_pattern(BALANCE[1])  # ROA style: "acs <AK>:<HMAC-SHA1>" signature
        request.set_protocol_type("http")
        request.set_method("GET")
        request.set_accept_format("JSON")
        try:
            client.do_action_with_exception(request)
        except ServerException as exc:
            return exc.get_http_status(), exc.get_error_code()
        return 200, ""

    # The V1-era SDK signs with its own clock: move the gateway's there (it is real time).
    _clock(gw).set(datetime.now(UTC))
    assert await asyncio.to_thread(call) == (400, "UnsupportedSignatureVersion")


async def test_each_account_is_limited_per_second(gw: TenantGateway) -> None:
    a, b = gw.seeded.a, gw.seeded.b
    for _ in range(3):  # tenant_qps=3
        assert (await gw.send(a, *BALANCE)).status_code == 200
    throttled = await gw.send(a, *BALANCE)
    assert code(throttled) == (429, "Throttling.User")
    assert "retry-after" in throttled.headers
    # One account's budget is not another's; all of A's endpoints share A's.
    assert (await gw.send(b, *BALANCE)).status_code == 200
    assert code(await gw.send(a, "DescribePlans", "/tenant/v1/plans")) == (429, "Throttling.User")
    _clock(gw).advance(1.0)
    assert (await gw.send(a, *BALANCE)).status_code == 200


async def test_forged_calls_do_not_spend_a_s_budget(gw: TenantGateway) -> None:
    a = gw.seeded.a
    forged = Key(a.id, "guessed-secret-guessed-secret-")
    for _ in range(10):
        assert code(await gw.send(forged, *BALANCE)) == (400, "SignatureDoesNotMatch")
    for _ in range(3):
        assert (await gw.send(a, *BALANCE)).status_code == 200


async def test_routing_refusals(gw: TenantGateway) -> None:
    a = gw.seeded.a
    cases = [
        (("DescribeNothing", "/tenant/"), {}, (400, "InvalidAction.NotFound")),
        (("DescribeBalance", "/tenant/v1/nowhere"), {}, (404, "InvalidAction.NotFound")),
        (("DescribeBalance", "/tenant/v1/plans"), {}, (400, "InvalidParameter")),
        (("DescribeBalance", "/tenant/"), {"x-acs-version": "2019-12-30"}, None),
    ]
    for (action, path), extra, expected in cases:
        _clock(gw).advance(1.0)  # out of the per-second budget's way
        answer = await gw.send(a, action, path, extra=extra)
        assert code(answer) == (expected or (400, "InvalidAction.NotFound")), (action, path)
    _clock(gw).advance(1.0)
    answer = await gw.send(a, *BALANCE, method="PUT")
    assert code(answer) == (405, "MethodNotAllowed")
    _clock(gw).advance(1.0)
    answer = await gw.send(a, *BALANCE, query=[("Month", "2026-11")])
    assert code(answer) == (400, "InvalidParameter")
    answer = await gw.send(
        a, "DescribeBill", "/tenant/v1/bills", query=[("Month", "2026-11"), ("Month", "2026-10")]
    )
    assert code(answer) == (400, "InvalidParameter")
    _clock(gw).advance(1.0)
    answer = await gw.send(a, "DescribeBill", "/tenant/v1/bills", query=[("Month", "13-2026")])
    assert code(answer) == (400, "InvalidParameter.Month")
    answer = await gw.send(a, "DescribeUsage", "/tenant/v1/usage", query=[("Tz", "Mars/Base")])
    assert code(answer) == (400, "InvalidParameter")
    answer = await gw.send(a, "DescribeUsage", "/tenant/v1/usage", query=[("Since", "2020-01-01")])
    assert code(answer) == (400, "InvalidParameter")  # longer than MAX_USAGE_DAYS
    _clock(gw).advance(1.0)
    big = b'{"Month": "' + b"x" * MAX_BODY_BYTES + b'"}'
    answer = await gw.send(a, "DescribeBill", "/tenant/v1/bills", body=big, method="POST")
    assert code(answer) == (413, "RequestEntityTooLarge")
    answer = await gw.send(a, "DescribeBill", "/tenant/v1/bills", body=b"[1]", method="POST")
    assert code(answer) == (400, "InvalidParameter")
    answer = await gw.send(
        a,
        "DescribeBill",
        "/tenant/v1/bills",
        body=b"<x/>",
        method="POST",
        extra={"content-type": "text/xml"},
    )
    assert code(answer) == (415, "UnsupportedMediaType")


async def test_ambiguous_parameters_are_refused(gw: TenantGateway) -> None:
    a, month = gw.seeded.a, gw.seeded.month
    bodies = [
        b'{"Month": "%s", "Month": "2026-01"}' % month.encode(),  # a member given twice
        b'{"Month": {"$gt": ""}}',  # not a value
        b'{"Month": ["%s"]}' % month.encode(),
    ]
    for body in bodies:
        _clock(gw).advance(1.0)
        answer = await gw.send(a, "DescribeBill", "/tenant/v1/bills", body=body, method="POST")
        assert code(answer) == (400, "InvalidParameter"), body
    # The same member in the query and the body must agree too.
    answer = await gw.send(
        a,
        "DescribeBill",
        "/tenant/v1/bills",
        query=[("Month", month)],
        body=b'{"Month": "2026-01"}',
        method="POST",
    )
    assert code(answer) == (400, "InvalidParameter")
    _clock(gw).advance(1.0)
    # An instant naming two zones is no instant.
    answer = await gw.send(
        a, "DescribeUsage", "/tenant/v1/usage", query=[("Since", "2026-12-01T00:00:00+08:00Z")]
    )
    assert code(answer) == (400, "InvalidParameter")
    # What agrees is accepted: the month twice, the same.
    answer = await gw.send(
        a,
        "DescribeBill",
        "/tenant/v1/bills",
        query=[("Month", month)],
        body=b'{"Month": "%s"}' % month.encode(),
        method="POST",
    )
    assert data(answer)["month"] == month
