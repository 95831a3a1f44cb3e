"""A tenant reads its own usage, plans, balance and bills with the official SDK.

Real HTTP (uvicorn), the example gateway over a real SQLite ledger, and Alibaba's own
``alibabacloud_tea_openapi`` ``Client.call_api`` as the client: ROA style on the
endpoints' paths, RPC style on the view's root, GET and POST with a JSON body. Every
answer is the report layer's own ``to_json()`` of the caller's account, money as strings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from metering_middleware.reports import account_overview, bill, plan_balances

from .sdk import call_api
from .support import BETA_MARKERS, TenantGateway, tenant_gateway


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[TenantGateway]:
    async with tenant_gateway(tmp_path) as gateway:
        yield gateway


async def _call(gw: TenantGateway, action: str, **options: object) -> tuple[int, dict, str | None]:
    key = gw.seeded.a
    answer = await asyncio.to_thread(
        call_api,
        gw.endpoint,
        key.id,
        key.secret,
        action,
        **options,  # type: ignore[arg-type]
    )
    return answer.status, answer.body, answer.code


async def test_usage_through_call_api(gw: TenantGateway) -> None:
    s = gw.seeded
    status, body, code = await _call(
        gw,
        "DescribeUsage",
        pathname="/tenant/v1/usage",
        query={
            "Since": s.first_call.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Until": gw.clock.now().replace(second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:00Z"),
            "GroupBy": "action",
        },
    )
    assert (status, code) == (200, None), body
    usage = body["Data"]
    assert usage["account"] == "acme"
    assert usage["group"] == ["category", "action"]
    assert usage["rows"] == [
        {
            "day": None,
            "category": "facebody",
            "action": "DetectFace",
            "charged": 5,
            "free": {"InvalidImage.Download": 2},
            "refused": {},
            "total": 7,
        }
    ]
    assert isinstance(body["RequestId"], str) and body["RequestId"]


async def test_plans_through_call_api(gw: TenantGateway) -> None:
    status, body, code = await _call(gw, "DescribePlans", pathname="/tenant/v1/plans")
    assert (status, code) == (200, None), body
    expected = await plan_balances(gw.db, "acme", gw.clock.now())
    plans = body["Data"]["plans"]
    assert [p["id"] for p in plans] == ["plan-acme-1"]
    # The same text the report layer makes (its state is computed at "now": compare the rest).
    for got, want in zip(plans, (p.to_json() for p in expected), strict=True):
        assert {k: v for k, v in got.items() if k != "state"} == {
            k: v for k, v in want.items() if k != "state"
        }
    assert plans[0]["points"] == "100" and plans[0]["points_left"] == "0"  # strings, exact


async def test_balance_through_call_api_rpc_style_post(gw: TenantGateway) -> None:
    # RPC style: the view's root, the action alone names the endpoint; a JSON body.
    status, body, code = await _call(
        gw, "DescribeBalance", pathname="/tenant/", method="POST", style="RPC", body={}
    )
    assert (status, code) == (200, None), body
    balance = body["Data"]
    assert balance["account"] == "acme"
    # 100 topped up, 1 for the plan, 3 pay-as-you-go calls at 0.50.
    assert balance["balance"] == "97.50"
    assert balance == (await account_overview(gw.db, "acme", gw.clock.now())).to_json()


async def test_bills_through_call_api(gw: TenantGateway) -> None:
    s = gw.seeded
    status, body, code = await _call(gw, "DescribeBill", pathname=f"/tenant/v1/bills/{s.month}")
    assert (status, code) == (200, None), body
    got = body["Data"]
    assert got == (await bill(gw.db, "acme", s.month, now=gw.clock.now())).to_json()
    assert got["amount_due"] == "1.50"
    assert [(ln["source"], ln["calls"], ln["amount"]) for ln in got["lines"]] == [
        ("single", 2, "0"),
        ("payg", 3, "1.50"),
    ]
    # The same bill with the month in a JSON body, POSTed to the collection's path.
    status, again, code = await _call(
        gw, "DescribeBill", pathname="/tenant/v1/bills", method="POST", body={"Month": s.month}
    )
    assert (status, code) == (200, None)
    assert again["Data"] == got


async def test_deduction_and_preview_through_call_api(gw: TenantGateway) -> None:
    s = gw.seeded
    status, body, _ = await _call(
        gw, "DescribeDeduction", pathname=f"/tenant/v1/deductions/{s.month}"
    )
    assert status == 200
    assert body["Data"]["calls"] == 5 and body["Data"]["amount"] == "1.50"
    status, body, _ = await _call(gw, "DescribeMonthPreview", pathname="/tenant/v1/preview")
    assert status == 200
    assert body["Data"]["account"] == "acme"


async def test_the_sdk_surfaces_a_refusal_code(gw: TenantGateway) -> None:
    status, body, code = await _call(
        gw, "DescribeBalance", pathname="/tenant/v1/balance", query={"Account": "beta"}
    )
    assert (status, code) == (400, "InvalidParameter.Account")
    assert not any(marker in str(body) for marker in BETA_MARKERS[:2])
    # A secret that is not the key's: the SDK's own signature is refused.
    key = gw.seeded.a
    answer = await asyncio.to_thread(
        call_api, gw.endpoint, key.id, "not-the-secret", "DescribeBalance", pathname="/tenant/"
    )
    assert (answer.status, answer.code) == (400, "SignatureDoesNotMatch")
