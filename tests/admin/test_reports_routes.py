"""Usage, bills, deductions, plan states and the preview through the API: the reports
layer's numbers for real records, one account's and nothing of another's."""

from __future__ import annotations

from datetime import timedelta

from metering_middleware.catalog import default_catalog
from metering_middleware.ledger.records import CallRecord, Outcome, OutcomeCount
from metering_middleware.rating import SqliteRatingStore, settle
from metering_middleware.stores.sqlite.ledger import SqliteStore

from .conftest import START, Admin, auth

DAY = START + timedelta(hours=1)  # 13:00 on 2026-03-10 in Beijing, after the seed's plans


async def _calls(admin: Admin, account: str, n: int) -> None:
    item = default_catalog().by_item()["facebody.DetectFace"]
    records = [
        CallRecord(
            id=f"{account}-{i}",
            request_id=None,
            account=account,
            access_key_id=admin.alice_key,
            category=item.category,
            action=item.action,
            version=item.version,
            item=item.item,
            occurred_at=DAY + timedelta(minutes=i),
            status=200,
            error_code=None,
            latency_ms=10.0,
        )
        for i in range(n)
    ]
    counts = [
        OutcomeCount(r.occurred_at, account, "facebody", "DetectFace", Outcome.CHARGED, "", 1)
        for r in records
    ]
    counts.append(
        OutcomeCount(
            DAY, account, "facebody", "DetectFace", Outcome.FREE, "InvalidImage.NotFoundFace", 2
        )
    )
    # Arrived (the store's clock) when they occurred: not late records of a closed month.
    admin.clock.set(DAY + timedelta(minutes=n))
    async with SqliteStore(admin.db, clock=admin.clock) as store:
        await store.write(records, counts)


async def _settle(admin: Admin) -> None:
    admin.clock.set(DAY + timedelta(hours=1))
    async with SqliteRatingStore(admin.db, create=False) as ratings:
        await settle(ratings, default_catalog(), admin.clock, lag=timedelta(0))


async def test_usage_bill_deduction_plans_and_preview(admin: Admin) -> None:
    await _calls(admin, "alice", 3)
    await _settle(admin)
    h = auth()
    usage = await admin.client.get(
        "/accounts/alice/usage",
        params={"since": "2026-03-01T00:00:00+08:00", "until": "2026-03-11T00:00:00+08:00"},
        headers=h,
    )
    assert usage.status_code == 200, usage.text
    doc = usage.json()
    assert doc["tz"] == "+08:00" and doc["group"] == ["day", "category", "action"]
    assert [(r["day"], r["action"], r["charged"], r["free"]) for r in doc["rows"]] == [
        ("2026-03-10", "DetectFace", 3, {"InvalidImage.NotFoundFace": 2})
    ]
    assert doc["totals"]["total"] == 5
    bill = (await admin.client.get("/accounts/alice/bills/2026-03", headers=h)).json()
    # The QPS subscription to DetectFace covers its calls first (billing rules' order).
    assert [(ln["source"], ln["plan_id"], ln["calls"]) for ln in bill["lines"]] == [
        ("qps", "qps-seed", 3)
    ]
    assert bill["amount_due"] == "0.00"
    deduction = (await admin.client.get("/accounts/alice/deductions/2026-03", headers=h)).json()
    assert [(s["source"], s["plan_id"], s["calls"]) for s in deduction["sources"]] == [
        ("qps", "qps-seed", 3)
    ]
    plans = (await admin.client.get("/accounts/alice/plans", headers=h)).json()
    states = {p["id"]: (p["state"], p["points_left"]) for p in plans}
    assert states["rp-seed"] == ("active", "10000")
    assert states["qps-seed"] == ("active", None)
    preview = (await admin.client.get("/accounts/alice/preview", headers=h)).json()
    assert preview["month"] == "2026-03" and preview["to_date"] == "0"
    # bob's usage shows none of alice's calls.
    bob = (await admin.client.get("/accounts/bob/usage", headers=h)).json()
    assert bob["rows"] == [] and bob["totals"]["total"] == 0
