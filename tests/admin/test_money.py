"""Money through the API: exact decimal strings both ways, idempotent top-ups, entries in
pages that stay right while entries are added, caps, thresholds and standing."""

from __future__ import annotations

from decimal import Decimal

from metering_middleware.rating import SqliteRatingStore

from .conftest import Admin, auth


async def test_amounts_are_exact_strings(admin: Admin) -> None:
    h = auth()
    r = await admin.client.post(
        "/accounts/alice/topups",
        json={"amount": "0.10", "idempotency_key": "t1", "reason": "wire 42"},
        headers=h,
    )
    assert r.status_code == 201
    doc = r.json()
    # 1000.00 - 120.00 - 30.00 + 0.10, exactly (no float ever: 0.1 would not be).
    assert doc["balance"]["balance"] == "850.10"
    assert doc["entry"]["amount"] == "0.10" and doc["entry"]["kind"] == "topup"
    assert doc["entry"]["id"] == "topup:t1" and doc["entry"]["reason"] == "wire 42"
    fix = await admin.client.post(
        "/accounts/alice/corrections", json={"amount": "-0.0125", "reason": "rounding"}, headers=h
    )
    assert fix.json()["balance"]["balance"] == "850.0875"
    async with SqliteRatingStore(admin.db, create=False) as ratings:
        assert (await ratings.balances(account="alice"))["alice"] == Decimal("850.0875")
    plan = (await admin.client.get(f"/plans/{admin.plan_id}", headers=h)).json()
    assert plan["price_paid"] == "120.00" and plan["points"] == "10000"
    assert plan["ordered_at"] == "2026-03-10T04:00:00Z"


async def test_a_top_up_is_posted_once_per_key(admin: Admin) -> None:
    h = auth()
    body = {"amount": "25.00", "idempotency_key": "order-7"}
    first = await admin.client.post("/accounts/alice/topups", json=body, headers=h)
    again = await admin.client.post("/accounts/alice/topups", json=body, headers=h)
    assert (first.status_code, first.json()["posted"]) == (201, True)
    assert (again.status_code, again.json()["posted"]) == (200, False)
    assert again.json()["balance"]["balance"] == first.json()["balance"]["balance"] == "875.00"
    entries = (await admin.client.get("/accounts/alice/entries?kind=topup", headers=h)).json()
    assert [e["id"] for e in entries["items"]] == ["topup:seed-1", "topup:order-7"]


async def test_entry_pages_are_stable_while_entries_are_added(admin: Admin) -> None:
    h = auth()
    for n in range(5):
        await admin.client.post(
            "/accounts/alice/topups", json={"amount": "1.00", "idempotency_key": f"p{n}"}, headers=h
        )
    page = (await admin.client.get("/accounts/alice/entries?limit=3", headers=h)).json()
    seen = [e["seq"] for e in page["items"]]
    # Entries added between two pages come at the end: nothing skipped, nothing twice.
    await admin.client.post(
        "/accounts/alice/topups", json={"amount": "2.00", "idempotency_key": "late"}, headers=h
    )
    cursor = page["next_cursor"]
    while cursor:
        page = (
            await admin.client.get(
                "/accounts/alice/entries", params={"limit": 3, "cursor": cursor}, headers=h
            )
        ).json()
        seen += [e["seq"] for e in page["items"]]
        cursor = page["next_cursor"]
    everything = (await admin.client.get("/accounts/alice/entries", headers=h)).json()["items"]
    assert seen == [e["seq"] for e in everything] and len(seen) == 3 + 5 + 1
    assert everything[-1]["id"] == "topup:late"


async def test_cap_threshold_suspend_restore(admin: Admin) -> None:
    h = auth()
    cap = await admin.client.put(
        "/accounts/alice/monthly-cap", json={"amount": "300.50"}, headers=h
    )
    low = await admin.client.put("/accounts/alice/low-balance", json={"amount": "50"}, headers=h)
    assert cap.json()["monthly_cap"] == "300.50"
    assert low.json()["low_balance"] == "50" and low.json()["monthly_cap"] == "300.50"
    off = await admin.client.put("/accounts/alice/monthly-cap", json={"amount": None}, headers=h)
    assert off.json()["monthly_cap"] is None and off.json()["low_balance"] == "50"
    held = await admin.client.post(
        "/accounts/alice/suspend", json={"reason": "chargeback"}, headers=h
    )
    assert held.json()["standing"] == "held"
    notices = (await admin.client.get("/notices?account=alice", headers=h)).json()["items"]
    assert notices[-1]["kind"] == "account.held" and notices[-1]["data"] == {"reason": "chargeback"}
    back = await admin.client.post("/accounts/alice/restore", headers=h)
    assert back.json()["standing"] == "good"
    kinds = [n["kind"] for n in (await admin.client.get("/notices", headers=h)).json()["items"]]
    assert kinds[-2:] == ["account.held", "account.released"]


async def test_plans_bought_renewed_and_refunded_move_the_balance(admin: Admin) -> None:
    h = auth()
    bought = await admin.client.post(
        "/accounts/alice/plans",
        json={
            "kind": "single",
            "category": "ocr",
            "points": "2000",
            "price": "40.00",
            "id": "rp-ocr",
        },
        headers=h,
    )
    assert bought.status_code == 201, bought.text
    assert bought.json()["categories"] == ["ocr"] and bought.json()["remaining"] == "2000"
    balance = (await admin.client.get("/accounts/alice/balance", headers=h)).json()["balance"]
    assert balance == "810.00"
    renewed = await admin.client.post("/plans/qps-seed/renew", json={"new_id": "qps-2"}, headers=h)
    assert renewed.status_code == 201
    sub = renewed.json()
    # A subscription's renewal starts when the current period ends (no gap, no overlap).
    assert sub["start"] == "2026-04-10T04:00:00Z" and sub["price_paid"] == "30.00"
    quote = (await admin.client.get("/plans/rp-ocr/refund", headers=h)).json()
    assert quote["refundable"] is True and quote["amount"] == "40.00" and quote["refunded"] is False
    done = (await admin.client.post("/plans/rp-ocr/refund", headers=h)).json()
    assert done["refunded"] is True and done["amount"] == "40.00"
    balance = (await admin.client.get("/accounts/alice/balance", headers=h)).json()["balance"]
    assert balance == "820.00"  # 810 - 30 (renewal) + 40 (refund)
    plans = (await admin.client.get("/plans?account=alice", headers=h)).json()["items"]
    assert {p["id"]: p["refunded_at"] is not None for p in plans} == {
        "rp-seed": False,
        "qps-seed": False,
        "rp-ocr": True,
        "qps-2": False,
    }


async def test_accounts_search_and_pages(admin: Admin) -> None:
    h = auth()
    for name in ("Alicia", "carol", "dave", "malice"):
        await admin.client.post(f"/accounts/{name}/keys", headers=h)
    found = (await admin.client.get("/accounts?search=LIC", headers=h)).json()
    assert [a["account"] for a in found["items"]] == ["Alicia", "alice", "malice"]
    names: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await admin.client.get("/accounts", params=params, headers=h)).json()
        names += [a["account"] for a in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
        # An account created behind the cursor does not shift the next page.
        await admin.client.post("/accounts/aaa-new/keys", headers=h)
    assert names == ["Alicia", "alice", "bob", "carol", "dave", "malice"]
    bill = (await admin.client.get("/accounts/alice/bills/2026-03", headers=h)).json()
    assert bill["month"] == "2026-03" and bill["amount_due"] == "0.00"
    assert {p["id"] for p in bill["plans"]} == {"rp-seed", "qps-seed"}
