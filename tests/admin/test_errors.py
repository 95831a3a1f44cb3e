"""Bad input is a 4xx Alibaba-style body with a precise Code, never a 500 nor a traceback,
and a refused request writes nothing (the whole ledger read before and after)."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Admin, auth

JSON = {"content-type": "application/json"}
TOPUP = "/accounts/alice/topups"
PLANS = "/accounts/alice/plans"

# (name, method, path, request kwargs, status, Code, a part of the Message)
CASES: list[tuple[str, str, str, dict[str, Any], int, str, str]] = [
    (
        "truncated JSON",
        "POST",
        TOPUP,
        {"content": b'{"amount": "1.00",'},
        400,
        "MalformedJSON",
        "JSON",
    ),
    ("not JSON at all", "POST", TOPUP, {"content": b"amount=1"}, 400, "MalformedJSON", "JSON"),
    ("a list body", "POST", TOPUP, {"json": [1, 2]}, 400, "InvalidParameter", "body"),
    ("no body", "POST", TOPUP, {}, 400, "MissingParameter", "body"),
    (
        "amount as a number",
        "POST",
        TOPUP,
        {"json": {"amount": 10, "idempotency_key": "k"}},
        400,
        "InvalidParameter",
        "body.amount",
    ),
    (
        "amount as a float",
        "POST",
        TOPUP,
        {"json": {"amount": 0.1, "idempotency_key": "k"}},
        400,
        "InvalidParameter",
        "body.amount",
    ),
    (
        "missing amount",
        "POST",
        TOPUP,
        {"json": {"idempotency_key": "k"}},
        400,
        "MissingParameter",
        "body.amount",
    ),
    (
        "missing key",
        "POST",
        TOPUP,
        {"json": {"amount": "1.00"}},
        400,
        "MissingParameter",
        "body.idempotency_key",
    ),
    (
        "three decimals",
        "POST",
        TOPUP,
        {"json": {"amount": "1.001", "idempotency_key": "k"}},
        400,
        "InvalidParameter",
        "body.amount",
    ),
    (
        "negative top-up",
        "POST",
        TOPUP,
        {"json": {"amount": "-5", "idempotency_key": "k"}},
        400,
        "InvalidParameter",
        "positive",
    ),
    (
        "NaN",
        "POST",
        TOPUP,
        {"json": {"amount": "NaN", "idempotency_key": "k"}},
        400,
        "InvalidParameter",
        "body.amount",
    ),
    (
        "words",
        "POST",
        TOPUP,
        {"json": {"amount": "ten", "idempotency_key": "k"}},
        400,
        "InvalidParameter",
        "decimal",
    ),
    (
        "unknown field",
        "POST",
        TOPUP,
        {"json": {"amount": "1.00", "idempotency_key": "k", "cents": 1}},
        400,
        "InvalidParameter",
        "body.cents",
    ),
    (
        "key with spaces",
        "POST",
        TOPUP,
        {"json": {"amount": "1.00", "idempotency_key": "a b"}},
        400,
        "InvalidParameter",
        "body.idempotency_key",
    ),
    (
        "unknown account",
        "POST",
        "/accounts/zed/topups",
        {"json": {"amount": "1.00", "idempotency_key": "k"}},
        404,
        "Account.NotFound",
        "zed",
    ),
    (
        "zero correction",
        "POST",
        "/accounts/alice/corrections",
        {"json": {"amount": "0", "reason": "x"}},
        400,
        "InvalidParameter",
        "zero",
    ),
    (
        "blank reason",
        "POST",
        "/accounts/alice/corrections",
        {"json": {"amount": "1", "reason": "  "}},
        400,
        "InvalidParameter",
        "body.reason",
    ),
    (
        "zero cap",
        "PUT",
        "/accounts/alice/monthly-cap",
        {"json": {"amount": "0"}},
        400,
        "InvalidParameter",
        "body.amount",
    ),
    (
        "cap missing amount",
        "PUT",
        "/accounts/alice/monthly-cap",
        {"json": {}},
        400,
        "MissingParameter",
        "body.amount",
    ),
    (
        "threshold of unknown",
        "PUT",
        "/accounts/zed/low-balance",
        {"json": {"amount": "1.00"}},
        404,
        "Account.NotFound",
        "zed",
    ),
    (
        "suspend without reason",
        "POST",
        "/accounts/bob/suspend",
        {"json": {}},
        400,
        "MissingParameter",
        "body.reason",
    ),
    (
        "restore a good account",
        "POST",
        "/accounts/alice/restore",
        {},
        409,
        "Account.NotSuspended",
        "not suspended",
    ),
    (
        "suspend unknown",
        "POST",
        "/accounts/zed/suspend",
        {"json": {"reason": "x"}},
        404,
        "Account.NotFound",
        "zed",
    ),
    (
        "plan of unknown account",
        "POST",
        "/accounts/zed/plans",
        {"json": {"kind": "general", "points": "1", "price": "1"}},
        404,
        "Account.NotFound",
        "zed",
    ),
    (
        "unknown plan kind",
        "POST",
        PLANS,
        {"json": {"kind": "platinum", "points": "1", "price": "1"}},
        400,
        "InvalidParameter",
        "body",
    ),
    (
        "points in words",
        "POST",
        PLANS,
        {"json": {"kind": "general", "points": "many", "price": "1"}},
        400,
        "Plan.Invalid",
        "points",
    ),
    (
        "negative price",
        "POST",
        PLANS,
        {"json": {"kind": "general", "points": "10", "price": "-1"}},
        400,
        "Plan.Invalid",
        "price",
    ),
    (
        "unknown category",
        "POST",
        PLANS,
        {"json": {"kind": "single", "category": "nope", "points": "10", "price": "1"}},
        400,
        "Plan.Invalid",
        "nope",
    ),
    (
        "single without category",
        "POST",
        PLANS,
        {"json": {"kind": "single", "points": "10", "price": "1"}},
        400,
        "InvalidParameter",
        "body.category",
    ),
    (
        "unknown API for QPS",
        "POST",
        PLANS,
        {"json": {"kind": "qps", "category": "facebody", "action": "Nope", "qps": 1, "price": "1"}},
        400,
        "Plan.Invalid",
        "Nope",
    ),
    (
        "QPS as a string",
        "POST",
        PLANS,
        {
            "json": {
                "kind": "qps",
                "category": "facebody",
                "action": "DetectFace",
                "qps": "5",
                "price": "1",
            }
        },
        400,
        "InvalidParameter",
        "body.qps",
    ),
    (
        "too many QPS",
        "POST",
        PLANS,
        {
            "json": {
                "kind": "qps",
                "category": "facebody",
                "action": "DetectFace",
                "qps": 51,
                "price": "1",
            }
        },
        400,
        "Plan.Invalid",
        "QPS",
    ),
    (
        "not enough balance",
        "POST",
        PLANS,
        {"json": {"kind": "general", "points": "10", "price": "99999"}},
        409,
        "Balance.Insufficient",
        "top up",
    ),
    (
        "plan id taken",
        "POST",
        PLANS,
        {"json": {"kind": "general", "points": "10", "price": "1", "id": "rp-seed"}},
        409,
        "Plan.AlreadyExists",
        "rp-seed",
    ),
    ("renew unknown plan", "POST", "/plans/nope/renew", {"json": {}}, 404, "Plan.NotFound", "nope"),
    (
        "renew beyond the balance",
        "POST",
        "/plans/rp-seed/renew",
        {"json": {"price": "5000"}},
        409,
        "Balance.Insufficient",
        "top up",
    ),
    ("refund unknown plan", "POST", "/plans/nope/refund", {}, 404, "Plan.NotFound", "nope"),
    ("quote unknown plan", "GET", "/plans/nope/refund", {}, 404, "Plan.NotFound", "nope"),
    ("show unknown plan", "GET", "/plans/nope", {}, 404, "Plan.NotFound", "nope"),
    ("show unknown key", "GET", "/keys/LTAInope", {}, 404, "AccessKey.NotFound", "LTAInope"),
    (
        "disable unknown key",
        "POST",
        "/keys/LTAInope/disable",
        {},
        404,
        "AccessKey.NotFound",
        "LTAInope",
    ),
    # An account's name is not a key id here (the CLI's disable takes either).
    (
        "disable by account name",
        "POST",
        "/keys/alice/disable",
        {},
        404,
        "AccessKey.NotFound",
        "alice",
    ),
    ("show unknown account", "GET", "/accounts/zed", {}, 404, "Account.NotFound", "zed"),
    (
        "entries of unknown account",
        "GET",
        "/accounts/zed/entries",
        {},
        404,
        "Account.NotFound",
        "zed",
    ),
    (
        "entries of an unknown kind",
        "GET",
        "/accounts/alice/entries?kind=gift",
        {},
        400,
        "InvalidParameter",
        "query.kind",
    ),
    ("keys of unknown account", "GET", "/accounts/zed/keys", {}, 404, "Account.NotFound", "zed"),
    (
        "bill of a bad month",
        "GET",
        "/accounts/alice/bills/2026-13",
        {},
        400,
        "InvalidParameter.Month",
        "1..12",
    ),
    (
        "bill of a month to come",
        "GET",
        "/accounts/alice/bills/2026-05",
        {},
        400,
        "InvalidParameter.Month",
        "not started",
    ),
    (
        "deductions of unknown account",
        "GET",
        "/accounts/zed/deductions/2026-03",
        {},
        404,
        "Account.NotFound",
        "zed",
    ),
    ("usage of unknown account", "GET", "/accounts/zed/usage", {}, 404, "Account.NotFound", "zed"),
    (
        "usage with a naive time",
        "GET",
        "/accounts/alice/usage?since=2026-03-01T00:00:00&until=2026-03-02T00:00:00Z",
        {},
        400,
        "InvalidParameter.Range",
        "naive",
    ),
    (
        "usage reversed",
        "GET",
        "/accounts/alice/usage?since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z",
        {},
        400,
        "InvalidParameter.Range",
        "before",
    ),
    (
        "usage off the minute",
        "GET",
        "/accounts/alice/usage?since=2026-03-01T00:00:30Z",
        {},
        400,
        "InvalidParameter.Range",
        "minute",
    ),
    (
        "usage since in words",
        "GET",
        "/accounts/alice/usage?since=yesterday",
        {},
        400,
        "InvalidParameter",
        "query.since",
    ),
    (
        "usage of a bad zone",
        "GET",
        "/accounts/alice/usage?tz=Asia/Shanghai",
        {},
        400,
        "InvalidParameter",
        "query.tz",
    ),
    (
        "usage by a bad group",
        "GET",
        "/accounts/alice/usage?group=week",
        {},
        400,
        "InvalidParameter",
        "week",
    ),
    (
        "preview of a bad month",
        "GET",
        "/accounts/alice/preview?month=March",
        {},
        400,
        "InvalidParameter",
        "query.month",
    ),
    (
        "overview of unknown account",
        "GET",
        "/accounts/zed/overview",
        {},
        404,
        "Account.NotFound",
        "zed",
    ),
    (
        "plan states of unknown account",
        "GET",
        "/accounts/zed/plans",
        {},
        404,
        "Account.NotFound",
        "zed",
    ),
    (
        "bill of unknown account",
        "GET",
        "/accounts/zed/bills/2026-03",
        {},
        404,
        "Account.NotFound",
        "zed",
    ),
    ("limit too large", "GET", "/accounts?limit=5000", {}, 400, "InvalidParameter", "query.limit"),
    ("limit zero", "GET", "/plans?limit=0", {}, 400, "InvalidParameter", "query.limit"),
    ("limit in words", "GET", "/notices?limit=many", {}, 400, "InvalidParameter", "query.limit"),
    ("garbled cursor", "GET", "/accounts?cursor=%%%", {}, 400, "InvalidCursor", "cursor"),
    (
        "notices of a bad kind",
        "GET",
        "/notices?kind=nope",
        {},
        400,
        "InvalidParameter",
        "query.kind",
    ),
    (
        "account name with a newline",
        "POST",
        "/accounts/bad%0Aname/keys",
        {},
        400,
        "InvalidParameter",
        "path.account",
    ),
    ("unknown route", "GET", "/accounts/alice/invoices", {}, 404, "NotFound", "no route"),
    ("wrong method", "DELETE", "/accounts/alice", {}, 405, "MethodNotAllowed", "DELETE"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code", "part"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_bad_input_is_a_precise_4xx_and_writes_nothing(
    admin: Admin,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    part: str,
) -> None:
    before = admin.dump()
    headers = {**auth(), **JSON}
    r = await admin.client.request(method, path, headers=headers, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert body["Code"] == code
    assert part in body["Message"], body["Message"]
    assert "Traceback" not in r.text and "\n" not in body["Message"]
    assert r.headers["x-acs-request-id"] == body["RequestId"]
    assert admin.dump() == before


async def test_refusals_after_a_state_change_write_nothing(admin: Admin) -> None:
    c, h = admin.client, auth()
    # The same idempotency key with another amount: refused, the first top-up stays.
    ok = await c.post(TOPUP, json={"amount": "5.00", "idempotency_key": "pay-1"}, headers=h)
    assert ok.status_code == 201
    refusals = [
        (
            "POST",
            TOPUP,
            {"amount": "6.00", "idempotency_key": "pay-1"},
            409,
            "IdempotencyKey.Conflict",
        ),
    ]
    assert (
        await c.post("/accounts/bob/suspend", json={"reason": "x"}, headers=h)
    ).status_code == 200
    refusals.append(
        ("POST", "/accounts/bob/suspend", {"reason": "again"}, 409, "Account.AlreadySuspended")
    )
    assert (await c.post(f"/plans/{admin.qps_id}/refund", headers=h)).status_code == 200
    refusals.append(("POST", f"/plans/{admin.qps_id}/refund", None, 409, "Plan.AlreadyRefunded"))
    refusals.append(("GET", f"/plans/{admin.qps_id}/refund", None, 409, "Plan.AlreadyRefunded"))
    refusals.append(("POST", f"/plans/{admin.qps_id}/renew", {}, 409, "Plan.NotRenewable"))
    # bob has no enabled key: no top-up.
    assert (await c.post(f"/keys/{admin.bob_key}/disable", headers=h)).status_code == 200
    refusals.append(
        (
            "POST",
            "/accounts/bob/topups",
            {"amount": "1.00", "idempotency_key": "b"},
            409,
            "Account.Disabled",
        )
    )
    before = admin.dump()
    for method, path, body, status, code in refusals:
        r = await c.request(method, path, json=body, headers=h)
        assert (r.status_code, r.json()["Code"]) == (status, code), (path, r.text)
    assert admin.dump() == before


async def test_late_refund_is_refused_and_writes_nothing_but_settlement(admin: Admin) -> None:
    admin.clock.advance(timedelta(hours=130).total_seconds())
    quote = await admin.client.get(f"/plans/{admin.plan_id}/refund", headers=auth())
    assert quote.status_code == 200 and quote.json()["refundable"] is False
    before = admin.dump()
    r = await admin.client.post(f"/plans/{admin.plan_id}/refund", headers=auth())
    assert (r.status_code, r.json()["Code"]) == (409, "Refund.NotAllowed")
    after = admin.dump()
    # The refund settles the account first (results only); no refund, no balance entry.
    assert after["rating_refunds"] == before["rating_refunds"] == []
    assert after["balance_entries"] == before["balance_entries"]


async def test_cursors_are_bound_to_their_list_and_cannot_be_edited(admin: Admin) -> None:
    h = auth()
    for name in ("carol", "dave"):
        assert (await admin.client.post(f"/accounts/{name}/keys", headers=h)).status_code == 201
    first = (await admin.client.get("/accounts?limit=1", headers=h)).json()
    cursor = first["next_cursor"]
    assert cursor is not None
    # The same cursor on another list, or on the same list with another filter.
    for path in (f"/plans?cursor={cursor}", f"/accounts/alice/entries?cursor={cursor}"):
        r = await admin.client.get(path, headers=h)
        assert (r.status_code, r.json()["Code"]) == (400, "InvalidCursor"), path
    body, tag = cursor.split(".")
    import base64

    forged = base64.urlsafe_b64encode(json.dumps(["bob"]).encode()).decode().rstrip("=")
    for bad in (f"{forged}.{tag}", f"{body}.{tag[:-2]}", f"{body}x.{tag}", body, "..."):
        r = await admin.client.get("/accounts", params={"cursor": bad}, headers=h)
        assert (r.status_code, r.json()["Code"]) == (400, "InvalidCursor"), bad


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["amount", "idempotency_key", "reason", "kind", "points", "price"])
                | st.text(max_size=6),
                inner,
                max_size=4,
            )
        ),
        max_leaves=8,
    )
)
async def test_no_json_body_makes_a_500(admin: Admin, body: Any) -> None:
    for path in (TOPUP, PLANS, "/accounts/alice/corrections"):
        r = await admin.client.post(path, content=json.dumps(body), headers={**auth(), **JSON})
        assert r.status_code < 500, (path, body, r.text)
        if r.status_code >= 400:
            assert set(r.json()) == {"RequestId", "HostId", "Code", "Message", "Recommend"}


async def test_a_server_failure_is_an_alibaba_500_without_a_traceback(admin: Admin) -> None:
    # A notice row whose details are not JSON (a damaged ledger): a bug's path, not input.
    with sqlite3.connect(admin.db) as conn:
        conn.execute(
            "INSERT INTO notices (id, kind, account, subject, at, data, recorded_at)"
            " VALUES ('x', 'account.held', 'alice', 's', '2026-03-10T04:00:00.000000Z', '{',"
            " '2026-03-10T04:00:00.000000Z')"
        )
    app = admin.client._transport.app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
        r = await client.get("/notices", headers=auth())
        doc = (await client.get("/openapi.json", headers=auth())).json()
    assert r.status_code == 500
    assert r.json()["Code"] == "InternalError" and "Traceback" not in r.text
    assert "500" in doc["paths"]["/notices"]["get"]["responses"]


async def test_a_ledger_moved_away_is_a_503(admin: Admin) -> None:
    assert (await admin.client.get("/accounts/alice/balance", headers=auth())).status_code == 200
    admin.db.rename(admin.db.with_suffix(".moved"))
    for path in ("/accounts/alice/balance", "/accounts", "/notices"):
        r = await admin.client.get(path, headers=auth())
        assert (r.status_code, r.json()["Code"]) == (503, "ServiceUnavailable"), (path, r.text)
