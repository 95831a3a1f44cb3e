"""The worked example of docs/rating.md, so the document cannot drift from the code."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from metering_middleware.catalog import default_catalog
from metering_middleware.rating import (
    Month,
    buy_qps_subscription,
    buy_resource_plan,
    render_bill,
)

from .helpers import DETECT, PLATE, call, utc
from .settle_support import Harness

CATALOG = default_catalog()


async def test_the_worked_example(tmp_path: Path) -> None:
    async with Harness(tmp_path / "l.db", CATALOG, utc(2026, 2, 20)) as h:
        bought = utc(2026, 3, 1)
        for pid, kind, categories, points in (
            ("S", "single", {"ocr"}, "30"),
            ("G", "general", None, "45.16"),
        ):
            await buy_resource_plan(
                h.rating,
                CATALOG,
                account="acme",
                kind=kind,
                categories=categories,
                points=points,
                ordered_at=bought,
                price_paid=50,
                plan_id=pid,
            )
        await buy_qps_subscription(
            h.rating,
            CATALOG,
            account="acme",
            category="ocr",
            action="RecognizeLicensePlate",
            qps=5,
            ordered_at=utc(2026, 3, 15),
            price_paid=300,
            subscription_id="Q",
        )
        await h.arrive([call(CATALOG, "feb-1", utc(2026, 2, 20), PLATE, "acme")])
        t = utc(2026, 3, 2, 10)
        march = [call(CATALOG, "c1", t, DETECT, "acme")]
        march += [
            call(CATALOG, f"c{i}", t + (i - 1) * timedelta(minutes=1), PLATE, "acme")
            for i in range(2, 8)
        ]
        await h.arrive(march)
        await h.settle(utc(2026, 3, 2, 11))
        first = await h.bill("acme", Month(2026, 3))
        assert (first.amount_due, [b.remaining for b in first.plans]) == (
            Decimal("0.15"),
            [0, 0, None],
        )

        await h.arrive(
            [call(CATALOG, "late", utc(2026, 3, 2, 9, 59), PLATE, "acme")], at=utc(2026, 3, 5)
        )
        await h.arrive(
            [call(CATALOG, "feb-2", utc(2026, 2, 25), PLATE, "acme")], at=utc(2026, 3, 10)
        )
        await h.arrive([call(CATALOG, "c8", utc(2026, 3, 16, 9), PLATE, "acme")])
        await h.arrive([call(CATALOG, "c9", utc(2026, 3, 31, 16, 30), DETECT, "acme")])
        await h.settle(utc(2026, 4, 5))
        bill, april = await h.bill("acme", Month(2026, 3)), await h.bill("acme", Month(2026, 4))
    table = render_bill(bill, "table", point_value=CATALOG.point_value)
    for row in (
        "facebody  facebody.DetectFace        general G           1      0.16    0",
        "ocr       ocr.RecognizeLicensePlate  qps Q               1      0       0",
        "ocr       ocr.RecognizeLicensePlate  single S            2      30      0",
        "ocr       ocr.RecognizeLicensePlate  general G           3      45      0",
        "ocr       ocr.RecognizeLicensePlate  payg tier 1 @ 0.15  2      0       0.30",
        "ocr       ocr.RecognizeLicensePlate  payg tier 1 @ 0.15  1      0       0.15"
        "    adjustment for 2026-02",
    ):
        assert row in table
    assert bill.amount_due == Decimal("0.45")
    assert (april.total.exact, april.total.recorded, april.amount_due, april.rounding) == (
        Decimal("0.0016"),
        Decimal("0.001"),
        Decimal("0.00"),
        Decimal("-0.0016"),
    )
    assert april.lines[0].item == DETECT
