"""Bills and their export: exact lines, one rounding line, Alibaba's CSV columns."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from metering_middleware.catalog import default_catalog
from metering_middleware.rating import (
    BILL_COLUMNS,
    Bill,
    Month,
    buy_qps_subscription,
    buy_resource_plan,
    export_rows,
    render_bill,
)

from .helpers import DETECT, PLATE, call, calls_between, utc
from .settle_support import Harness

CATALOG = default_catalog()
SECOND = timedelta(seconds=1)
MAR = Month(2026, 3)
ALIBABA = [
    "BillingCycle",
    "ProductCode",
    "SubscriptionType",
    "Item",
    "UsageStartTime",
    "UsageEndTime",
    "PretaxGrossAmount",
    "DeductedByResourcePackage",
    "PretaxAmount",
    "PaymentAmount",
    "OutstandingAmount",
]


async def mixed_bill(tmp_path: Path) -> Bill:
    """March: 7 DetectFace pay-as-you-go (CNY 0.0112), plate calls on a plan and on a QPS
    subscription, and a February record that arrived after February closed."""
    async with Harness(tmp_path / "l.db", CATALOG, utc(2026, 2, 20)) as h:
        await buy_resource_plan(
            h.rating,
            CATALOG,
            account="acct",
            kind="single",
            categories={"ocr"},
            points=30,
            ordered_at=utc(2026, 2, 1),
            price_paid=50,
            plan_id="rp-1",
        )
        await buy_qps_subscription(
            h.rating,
            CATALOG,
            account="acct",
            category="ocr",
            action="RecognizeLicensePlate",
            qps=5,
            ordered_at=utc(2026, 3, 20),
            price_paid=300,
            subscription_id="qps-1",
        )
        await h.arrive(calls_between(CATALOG, 7, utc(2026, 3, 2), SECOND, DETECT))
        await h.arrive(calls_between(CATALOG, 2, utc(2026, 3, 3), SECOND, prefix="p"))
        await h.arrive([call(CATALOG, "q", utc(2026, 3, 21))])
        await h.arrive([call(CATALOG, "late", utc(2026, 2, 20), DETECT)], at=utc(2026, 3, 10))
        await h.settle(utc(2026, 4, 10))
        return await h.bill("acct", MAR)


def total(rows: list[dict[str, str]], column: str) -> Decimal:
    return sum((Decimal(r[column]) for r in rows), Decimal(0))


async def test_bill_totals_round_only_the_month(tmp_path: Path) -> None:
    bill = await mixed_bill(tmp_path)
    assert bill.final  # settled past March's close (2026-04-02T16:00Z)
    assert bill.total.exact == Decimal("0.0128")  # 8 DetectFace calls, exact
    assert (bill.total.recorded, bill.amount_due, bill.rounding) == (
        Decimal("0.012"),
        Decimal("0.01"),
        Decimal("-0.0028"),
    )
    kinds = [(ln.item, ln.kind.value, ln.adjustment, ln.calls) for ln in bill.lines]
    assert kinds == [
        (DETECT, "payg", False, 7),
        (PLATE, "qps", False, 1),
        (PLATE, "single", False, 2),
        (DETECT, "payg", True, 1),  # February's, billed in March
    ]
    assert [(b.plan.id, b.remaining) for b in bill.plans] == [("rp-1", 0), ("qps-1", None)]


async def test_csv_has_alibabas_columns_and_adds_up_to_the_charge(tmp_path: Path) -> None:
    bill = await mixed_bill(tmp_path)
    text = render_bill(bill, "csv", point_value=CATALOG.point_value)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[: len(ALIBABA)] == ALIBABA == list(BILL_COLUMNS)
    assert [r["Item"] for r in rows] == [
        "PayAsYouGoBill",
        "PayAsYouGoBill",
        "PayAsYouGoBill",
        "Adjustment",
        "Rounding",
    ]
    assert [r["SubscriptionType"] for r in rows][:3] == ["PayAsYouGo", "Subscription", "PayAsYouGo"]
    assert total(rows, "PaymentAmount") == bill.amount_due == Decimal("0.01")
    assert total(rows, "PretaxAmount") == bill.amount_due
    assert rows[0]["PretaxGrossAmount"] == "0.0112"  # exact, never rounded per line
    plan_row = rows[2]
    assert (plan_row["DeductedByResourcePackage"], plan_row["PretaxAmount"]) == ("0.30", "0")
    adjustment = rows[3]
    assert adjustment["BillingCycle"] == "2026-03"
    assert adjustment["UsageStartTime"] == "2026-02-01T00:00:00+08:00"
    assert {r["BillingCycle"] for r in rows} == {"2026-03"}


async def test_json_and_table(tmp_path: Path) -> None:
    bill = await mixed_bill(tmp_path)
    doc = json.loads(render_bill(bill, "json", point_value=CATALOG.point_value))
    assert (doc["amount_due"], doc["payg_exact"], doc["rounding"]) == ("0.01", "0.0128", "-0.0028")
    assert [ln["amount"] for ln in doc["lines"]] == ["0.0112", "0", "0", "0.0016"]
    assert doc["lines"][3]["adjustment"] is True and doc["lines"][3]["usage_month"] == "2026-02"
    table = render_bill(bill, "table", point_value=CATALOG.point_value)
    assert "amount due (CNY)      0.01" in table and "adjustment for 2026-02" in table
    rows = export_rows(bill, point_value=CATALOG.point_value)
    assert rows[-1]["PaymentAmount"] == "-0.0028"


async def test_an_empty_month_bills_nothing(tmp_path: Path) -> None:
    async with Harness(tmp_path / "l.db", CATALOG, utc(2026, 3, 1)) as h:
        bill = await h.bill("nobody", MAR)
    assert bill.lines == () and bill.amount_due == 0
    assert not bill.final and bill.settled_until is None
    rows = export_rows(bill, point_value=CATALOG.point_value)
    assert [r["Item"] for r in rows] == ["Rounding"]
    assert Decimal(rows[0]["PaymentAmount"]) == 0
