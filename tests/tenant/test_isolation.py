"""Tenant A's signature reads A, and nothing of B, whatever A puts in the request.

A is ``acme``, B is ``beta`` (tests/tenant/support.py). Every attempt below is genuinely
signed with A's key, so nothing is refused for its signature: each either answers A's
own data, or is refused with a precise code; no answer carries a value of B's that the
request did not itself contain (B's balance, B's API, B's plan's points).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from .sdk import call_api
from .support import Key, TenantGateway, code, data, tenant_gateway

#: Values only B's data holds: B's balance and its plan's points left (seeded so), the
#: API only B called, B's refusal reason, and B's plan id.
B_ONLY = ("776.77", "CompareFace", "throttled", "plan-beta-777", '"170"')


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[TenantGateway]:
    async with tenant_gateway(tmp_path) as gateway:
        yield gateway


def _leaks(answer: httpx.Response, sent: str) -> list[str]:
    """B's values in an answer that the request did not carry itself (an echo is no leak)."""
    return [m for m in B_ONLY if m in answer.text and m not in sent]


async def test_b_reads_b_so_the_markers_are_real(gw: TenantGateway) -> None:
    b = gw.seeded.b
    balance = data(await gw.send(b, "DescribeBalance", "/tenant/v1/balance"))
    assert (balance["account"], balance["balance"]) == ("beta", "776.77")
    plans = data(await gw.send(b, "DescribePlans", "/tenant/v1/plans"))["plans"]
    assert [(p["id"], p["points_left"]) for p in plans] == [("plan-beta-777", "170")]
    month = gw.seeded.month
    got = data(await gw.send(b, "DescribeBill", f"/tenant/v1/bills/{month}"))
    assert {ln["item"] for ln in got["lines"]} == {"facebody.CompareFace"}


ACCOUNT_PARAMS = [
    "Account",
    "account",
    "ACCOUNT",
    "AccountId",
    "account_id",
    "AccountName",
    "Tenant",
    "TenantId",
    "OwnerId",
    "uid",
    "AliUid",
    "CallerId",
    "UserId",
]


@pytest.mark.parametrize("name", ACCOUNT_PARAMS)
async def test_an_account_named_in_the_query_is_refused(gw: TenantGateway, name: str) -> None:
    a = gw.seeded.a
    for action, path in (
        ("DescribeBalance", "/tenant/v1/balance"),
        ("DescribePlans", "/tenant/"),
        ("DescribeBill", "/tenant/v1/bills"),
    ):
        answer = await gw.send(a, action, path, query=[(name, "beta")])
        assert code(answer) == (400, "InvalidParameter.Account"), (name, action)
        assert not _leaks(answer, f"{path}?{name}=beta")


@pytest.mark.parametrize(
    "body",
    [
        b'{"Account": "beta"}',
        b'{"AccountId": "beta", "Month": "2026-11"}',
        b'{"tenant": "beta"}',
    ],
)
async def test_an_account_named_in_a_json_body_is_refused(gw: TenantGateway, body: bytes) -> None:
    answer = await gw.send(
        gw.seeded.a, "DescribeBill", "/tenant/v1/bills", body=body, method="POST"
    )
    assert code(answer) == (400, "InvalidParameter.Account")
    assert not _leaks(answer, body.decode())


async def test_an_account_named_in_a_form_body_is_refused(gw: TenantGateway) -> None:
    body = b"Account=beta"
    answer = await gw.send(
        gw.seeded.a,
        "DescribeBalance",
        "/tenant/v1/balance",
        body=body,
        method="POST",
        extra={"content-type": "application/x-www-form-urlencoded"},
    )
    assert code(answer) == (400, "InvalidParameter.Account")


@pytest.mark.parametrize(
    ("action", "path"),
    [
        ("DescribeBalance", "/tenant/v1/accounts/beta/balance"),
        ("DescribeBalance", "/tenant/beta/v1/balance"),
        ("DescribeBalance", "/tenant/v1/balance/beta"),
        ("DescribePlans", "/tenant/v1/plans/beta"),
        ("DescribeUsage", "/tenant/v1/usage/beta"),
        ("DescribeBill", "/tenant/v1/accounts/beta/bills/2026-12"),
        ("DescribeBill", "/tenant/v1/bills/2026-12/beta"),
    ],
)
async def test_an_account_in_the_path_is_no_path(gw: TenantGateway, action: str, path: str) -> None:
    answer = await gw.send(gw.seeded.a, action, path)
    assert answer.status_code in (400, 404), answer.text
    assert code(answer)[1] in ("InvalidAction.NotFound", "InvalidParameter")
    assert not _leaks(answer, path)


async def test_b_s_plan_id_is_not_found_for_a(gw: TenantGateway) -> None:
    a, s = gw.seeded.a, gw.seeded
    # In the path (ROA), and as a parameter at the root (RPC style).
    answer = await gw.send(a, "DescribePlan", f"/tenant/v1/plans/{s.b_plan}")
    assert code(answer) == (404, "InvalidPlanId.NotFound")
    answer = await gw.send(a, "DescribePlan", "/tenant/", query=[("PlanId", s.b_plan)])
    assert code(answer) == (404, "InvalidPlanId.NotFound")
    assert not _leaks(answer, s.b_plan)
    # A filter on the list is no parameter of the list: refused, not applied to all plans.
    answer = await gw.send(a, "DescribePlans", "/tenant/v1/plans", query=[("PlanId", s.b_plan)])
    assert code(answer) == (400, "InvalidParameter")
    # A's own plan, the same way, is found: the refusal above is about whose plan it is.
    mine = data(await gw.send(a, "DescribePlan", f"/tenant/v1/plans/{s.a_plan}"))
    assert (mine["id"], mine["account"]) == (s.a_plan, "acme")


async def test_b_s_bill_month_gives_a_s_own_bill(gw: TenantGateway) -> None:
    a, s = gw.seeded.a, gw.seeded
    got = data(await gw.send(a, "DescribeBill", f"/tenant/v1/bills/{s.month}"))
    assert got["account"] == "acme"
    assert {ln["item"] for ln in got["lines"]} == {"facebody.DetectFace"}
    for action, path in (
        ("DescribeDeduction", f"/tenant/v1/deductions/{s.month}"),
        ("DescribeMonthPreview", f"/tenant/v1/preview/{s.month}"),
        ("DescribeUsage", "/tenant/v1/usage"),
    ):
        answer = await gw.send(a, action, path)
        assert data(answer)["account"] == "acme"
        assert not _leaks(answer, path)


@pytest.mark.parametrize(
    "extra",
    [
        {"x-acs-account": "beta"},  # signed (every x-acs-* header must be)
        {"x-acs-caller-uid": "beta"},
        {"x-account": "beta", "x-tenant": "beta"},
        {"x-metering-trusted-hop": "anything"},  # the meter's internal-hop header
        {"x-acs-accesskey-id": "someone-else"},  # what STS tokens send beside the signature
    ],
)
async def test_headers_never_name_the_account(gw: TenantGateway, extra: dict[str, str]) -> None:
    answer = await gw.send(gw.seeded.a, "DescribeBalance", "/tenant/v1/balance", extra=extra)
    got = data(answer)
    assert (got["account"], got["balance"]) == ("acme", "97.50")
    assert not _leaks(answer, json.dumps(extra))


async def test_a_s_key_id_with_b_s_secret_is_refused(gw: TenantGateway) -> None:
    s = gw.seeded
    mixed = Key(s.a.id, s.b.secret)
    answer = await gw.send(mixed, "DescribeBalance", "/tenant/v1/balance")
    assert code(answer) == (400, "SignatureDoesNotMatch")
    mixed = Key(s.b.id, s.a.secret)
    answer = await gw.send(mixed, "DescribeBalance", "/tenant/v1/balance")
    assert code(answer) == (400, "SignatureDoesNotMatch")
    assert not _leaks(answer, "")


async def test_the_sdk_with_b_s_ids_reads_a_or_is_refused(gw: TenantGateway) -> None:
    s = gw.seeded
    attempts = [
        ("DescribeBalance", "/tenant/v1/balance", {"Account": "beta"}, None),
        ("DescribePlan", f"/tenant/v1/plans/{s.b_plan}", None, None),
        ("DescribePlan", "/tenant/", None, {"PlanId": s.b_plan}),
        ("DescribeBill", f"/tenant/v1/bills/{s.month}", None, None),
        ("DescribeBill", "/tenant/v1/bills", None, {"Month": s.month, "AccountId": "beta"}),
    ]
    for action, pathname, query, body in attempts:
        answer = await asyncio.to_thread(
            call_api,
            gw.endpoint,
            s.a.id,
            s.a.secret,
            action,
            pathname=pathname,
            method="POST" if body else "GET",
            query=query,
            body=body,
        )
        text = json.dumps(answer.body)
        sent = f"{pathname}{query}{body}"
        assert not [m for m in B_ONLY if m in text and m not in sent], (action, text)
        if answer.status == 200:
            assert answer.body["Data"]["account"] == "acme"
        else:
            assert answer.code in ("InvalidParameter.Account", "InvalidPlanId.NotFound")
