"""Settlement through the real SQLite store, on an injected clock (billing rules 3, 5, 7, 8)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from metering_middleware.catalog import default_catalog, parse_catalog
from metering_middleware.rating import (
    Month,
    SourceKind,
    buy_qps_subscription,
    buy_resource_plan,
    image_categories,
)

from .conftest import LedgerAt
from .helpers import DETECT, PLATE, call, calls_between, utc
from .settle_support import Harness, summary

CATALOG = default_catalog()
SECOND = timedelta(seconds=1)
MARCH = Month(2026, 3)


async def test_alibaba_worked_example_through_store_settle_and_bill(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 3, 2)) as h:
        await h.arrive(calls_between(CATALOG, 15_000, utc(2026, 3, 2), SECOND))
        report = await h.settle(utc(2026, 3, 3))
        bill = await h.bill("acct", MARCH)
    assert (report.records, report.accounts, report.rerated) == (15_000, 1, ())
    assert [(ln.source.tier, ln.calls, ln.amount) for ln in bill.lines] == [
        (0, 10_000, Decimal("1500.00")),
        (1, 5_000, Decimal("500.00")),
    ]
    assert bill.amount_due == Decimal("2000.00") and bill.rounding == 0


async def test_overlapping_plans_of_both_kinds(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 2, 20)) as h:
        ordered = utc(2026, 2, 20)
        single = await buy_resource_plan(
            h.rating,
            CATALOG,
            account="acct",
            kind="single",
            categories={"ocr"},
            points=30,
            ordered_at=ordered,
            price_paid=50,
            plan_id="s1",
        )
        general = await buy_resource_plan(
            h.rating,
            CATALOG,
            account="acct",
            kind="general",
            points="45.16",
            ordered_at=ordered,
            price_paid=50,
            plan_id="g1",
        )
        t = utc(2026, 3, 1)
        await h.arrive(
            [call(CATALOG, "d1", t, DETECT)]  # facebody: only the general plan covers it
            + [call(CATALOG, f"p{i}", t + (i + 1) * SECOND) for i in range(6)]
        )
        await h.settle(utc(2026, 3, 2))
        bill = await h.bill("acct", MARCH)
    assert general.categories == image_categories(CATALOG)
    assert "videoenhan" not in general.categories
    assert single.end == utc(2027, 2, 20)  # a year, by default
    got = [(ln.item, ln.kind, ln.plan_id, ln.calls, ln.points, ln.amount) for ln in bill.lines]
    assert got == [
        (DETECT, SourceKind.GENERAL, "g1", 1, Decimal("0.16"), 0),
        (PLATE, SourceKind.SINGLE, "s1", 2, Decimal(30), 0),  # single before general
        (PLATE, SourceKind.GENERAL, "g1", 3, Decimal(45), 0),
        (PLATE, SourceKind.PAYG, None, 1, 0, Decimal("0.15")),  # beyond all plans
    ]
    assert {b.plan.id: b.remaining for b in bill.plans} == {"s1": 0, "g1": 0}
    assert bill.amount_due == Decimal("0.15")


async def test_a_plan_expiring_mid_month_covers_up_to_its_end_exclusive(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 2, 10)) as h:
        plan = await buy_resource_plan(
            h.rating,
            CATALOG,
            account="acct",
            kind="single",
            categories={"ocr"},
            points=1500,
            ordered_at=utc(2026, 2, 10),
            price_paid=15,
            validity_months=1,
            plan_id="short",
        )
        assert plan.end == utc(2026, 3, 10)  # one calendar month in UTC+8
        await h.arrive(
            [call(CATALOG, "a", plan.end - timedelta(microseconds=1)), call(CATALOG, "b", plan.end)]
        )
        await h.settle(utc(2026, 3, 11))
        bill = await h.bill("acct", MARCH)
    assert [(ln.kind, ln.calls) for ln in bill.lines] == [
        (SourceKind.SINGLE, 1),
        (SourceKind.PAYG, 1),
    ]
    assert [b.remaining for b in bill.plans] == [Decimal(1485)]


async def test_qps_subscription_starting_mid_month_and_its_renewal(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 3, 1)) as h:
        first = await buy_qps_subscription(
            h.rating,
            CATALOG,
            account="acct",
            category="ocr",
            action="RecognizeLicensePlate",
            qps=10,
            ordered_at=utc(2026, 3, 15),
            price_paid=300,
            subscription_id="q1",
        )
        renewal = await buy_qps_subscription(
            h.rating,
            CATALOG,
            account="acct",
            category="ocr",
            action="RecognizeLicensePlate",
            qps=20,
            ordered_at=utc(2026, 4, 1),
            price_paid=600,
            subscription_id="q2",
        )
        assert (first.start, first.end) == (utc(2026, 3, 15), utc(2026, 4, 15))
        assert renewal.start == first.end  # bought before expiry: starts when it ends
        calls = calls_between(CATALOG, 3, utc(2026, 3, 14, 23, 59, 58), SECOND)
        calls += calls_between(CATALOG, 2, first.end - SECOND, SECOND, prefix="r")
        await h.arrive(calls)
        await h.settle(utc(2026, 4, 16))
        march, april = await h.bill("acct", MARCH), await h.bill("acct", Month(2026, 4))
    assert [(ln.kind, ln.plan_id, ln.calls) for ln in march.lines] == [
        (SourceKind.QPS, "q1", 1),  # from 2026-03-15T00:00Z on
        (SourceKind.PAYG, None, 2),
    ]
    assert [(ln.kind, ln.plan_id, ln.calls) for ln in april.lines] == [
        (SourceKind.QPS, "q1", 1),
        (SourceKind.QPS, "q2", 1),
    ]
    assert march.amount_due == Decimal("0.30") and april.amount_due == 0


async def test_tier_boundary_crossed_mid_day_settled_in_several_passes(ledger: LedgerAt) -> None:
    # 12,000 calls from 08:00 UTC, one every 2 s: the 10,001st (tier 2) is at 13:33:20.
    calls = calls_between(CATALOG, 12_000, utc(2026, 3, 5, 8), 2 * SECOND)
    async with Harness(ledger("many.db"), CATALOG, utc(2026, 3, 5)) as h:
        written = 0
        for cut in (utc(2026, 3, 5, 10), utc(2026, 3, 5, 13, 33, 20), utc(2026, 3, 6)):
            batch = [c for c in calls[written:] if c.occurred_at < cut]
            written += len(batch)
            await h.arrive(batch, at=cut)
            # The horizon is 30 s before the cut: the last calls wait for the next pass.
            await h.settle(cut + 30 * SECOND)
        many = await h.bill("acct", MARCH)
    async with Harness(ledger("one.db"), CATALOG, utc(2026, 3, 5)) as h:
        await h.arrive(calls)
        await h.settle(utc(2026, 3, 6))
        one = await h.bill("acct", MARCH)
    assert [(ln.source.tier, ln.calls) for ln in many.lines] == [(0, 10_000), (1, 2_000)]
    assert summary(many.lines) == summary(one.lines)
    assert many.amount_due == Decimal("1700.00")


async def test_months_are_beijing_months_not_utc_months(ledger: LedgerAt) -> None:
    edge = utc(2026, 1, 31, 16)  # 2026-02-01T00:00+08:00
    calls = calls_between(CATALOG, 10_000, edge - 10_000 * SECOND, SECOND)
    calls.append(call(CATALOG, "feb", edge))
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 1, 31)) as h:
        await h.arrive(calls)
        await h.settle(utc(2026, 2, 1))
        jan, feb = await h.bill("acct", Month(2026, 1)), await h.bill("acct", Month(2026, 2))
    # In UTC all 10,001 calls are January's, and the last would be priced at tier 2.
    assert [(ln.source.tier, ln.calls) for ln in jan.lines] == [(0, 10_000)]
    assert [(ln.source.tier, ln.calls, ln.amount) for ln in feb.lines] == [(0, 1, Decimal("0.15"))]


async def test_a_plan_with_too_few_points_for_one_call_is_skipped(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 3, 1)) as h:
        await buy_resource_plan(
            h.rating,
            CATALOG,
            account="acct",
            kind="general",
            categories={"ocr", "facebody"},
            points=20,
            ordered_at=utc(2026, 3, 1),
            price_paid=1,
            plan_id="g",
        )
        t = utc(2026, 3, 2)
        await h.arrive(
            [
                call(CATALOG, "1", t),
                call(CATALOG, "2", t + SECOND),
                call(CATALOG, "3", t + 2 * SECOND, DETECT),
            ]
        )
        await h.settle(utc(2026, 3, 3))
        bill = await h.bill("acct", MARCH)
    assert [(ln.item, ln.kind, ln.calls, ln.points) for ln in bill.lines] == [
        (DETECT, SourceKind.GENERAL, 1, Decimal("0.16")),  # 0.16 still fits in the 5 left
        (PLATE, SourceKind.GENERAL, 1, Decimal(15)),
        (PLATE, SourceKind.PAYG, 1, Decimal(0)),  # 5 points left < 15: skipped
    ]
    assert [b.remaining for b in bill.plans] == [Decimal("4.84")]


PRICE_CHANGE = utc(2026, 3, 15, 4)
CHANGING = parse_catalog(
    {
        "point_value": "0.01",
        "categories": {"ocr": {"version": "2019-12-30", "default_qps": 1, "max_qps": 20}},
        "items": [
            {
                "category": "ocr",
                "action": "RecognizeLicensePlate",
                "prices": [
                    {
                        "effective_from": utc(2020, 1, 1),
                        "tiers": [{"up_to": 6, "price": "0.15"}, {"price": "0.10"}],
                    },
                    {
                        "effective_from": PRICE_CHANGE,
                        "tiers": [{"up_to": 6, "price": "0.12"}, {"price": "0.08"}],
                    },
                ],
            }
        ],
    }
)


async def test_a_price_change_mid_month_prices_each_call_at_its_time(ledger: LedgerAt) -> None:
    calls = calls_between(CHANGING, 5, PRICE_CHANGE - 5 * SECOND, SECOND)
    calls += calls_between(CHANGING, 3, PRICE_CHANGE, SECOND, prefix="n")
    async with Harness(ledger("l.db"), CHANGING, utc(2026, 3, 15)) as h:
        await h.arrive(calls)
        await h.settle(utc(2026, 3, 16))
        bill = await h.bill("acct", MARCH)
        before = summary(await h.lines())
        await h.rerate(MARCH)  # re-rating never picks up another price
        after = summary(await h.lines())
    got = {(ln.source.tier, ln.source.unit_price, ln.calls) for ln in bill.lines}
    assert got == {
        (0, Decimal("0.15"), 5),
        (0, Decimal("0.12"), 1),  # the tier count goes on across the change
        (1, Decimal("0.08"), 2),
    }
    assert bill.amount_due == Decimal("1.03") and before == after
