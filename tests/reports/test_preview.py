"""month_preview(): settled + not yet settled (priced as settlement would) to date, and the
projection to the month's end through the same tiers and plan points. Exact numbers."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from metering_middleware.rating import Month
from metering_middleware.reports import UnknownMonth, month_preview
from tests.reports.conftest import LedgerAt
from tests.reports.support import DETECT, Ledger, source, table_sizes, utc

NOVEMBER = Month(2026, 11)  # 30 days, from 2026-10-31T16:00Z
HALF = utc(2026, 11, 15, 16)  # 2026-11-16 00:00 +08:00: 15 of 30 days gone


async def test_tiers_to_date_and_projected(ledger: LedgerAt) -> None:
    path = ledger("ledger")
    async with Ledger(path, utc(2026, 10, 31, 16)) as led:
        await led.account("acme")
        await led.account("acme2")
        # One DetectFace a day on days 1..10 (UTC+8): 0.50 for the first 3, then 0.25.
        await led.calls("acme", [NOVEMBER.start + timedelta(days=d, hours=2) for d in range(10)])
        await led.calls("acme2", [NOVEMBER.start + timedelta(hours=3)] * 1)
        await led.settle(NOVEMBER.start + timedelta(days=8))  # days 1..8 settled
        led.clock.set(HALF)
        before = await table_sizes(path)
        p = await month_preview(
            source(path), "acme", NOVEMBER, led.clock.now(), catalog=led.catalog
        )
        assert await table_sizes(path) == before  # nothing written
    assert p.elapsed == Decimal("0.5")
    [item] = p.items  # acme2's call of the same item and month is not acme's
    assert (item.item, item.settled_calls, item.pending_calls, item.projected_calls) == (
        DETECT,
        8,
        2,
        20,
    )
    # settled 3 x 0.50 + 5 x 0.25; pending 2 x 0.25; 10 more at 0.25 by the month's end.
    assert (p.settled, p.pending, p.to_date, p.to_date_due) == (
        Decimal("2.75"),
        Decimal("0.50"),
        Decimal("3.25"),
        Decimal("3.25"),
    )
    assert (p.projected, p.projected_due) == (Decimal("5.75"), Decimal("5.75"))
    doc = p.to_json()
    assert doc["projected"] == "5.75" and doc["elapsed"] == "0.5"
    assert doc["items"][0]["to_date_calls"] == 10 and doc["now"] == "2026-11-15T16:00:00Z"


async def test_plan_points_are_spent_before_the_projection_pays(ledger: LedgerAt) -> None:
    path = ledger("ledger")
    async with Ledger(path, utc(2026, 10, 31, 16)) as led:
        await led.account("acme")
        await led.plan("acme", "500", NOVEMBER.start, "P1")  # 10 DetectFace calls
        await led.calls("acme", [NOVEMBER.start + timedelta(days=d, hours=1) for d in range(10)])
        led.clock.set(HALF)  # nothing settled at all: every call is pending
        p = await month_preview(source(path), "acme", "2026-11", HALF, catalog=led.catalog)
    [item] = p.items
    assert (item.settled_calls, item.pending_calls, item.projected_calls) == (0, 10, 20)
    assert p.settled_until is None and p.to_date == 0
    # The plan covers the 10 so far; the projected 10 more pay 3 x 0.50 + 7 x 0.25.
    assert p.projected == Decimal("3.25")


async def test_a_third_of_the_month_and_a_plan_running_out_midway(ledger: LedgerAt) -> None:
    path = ledger("ledger")
    async with Ledger(path, utc(2026, 10, 31, 16)) as led:
        await led.account("acme")
        await led.plan("acme", "250", NOVEMBER.start, "P1")  # 5 calls
        await led.calls("acme", [NOVEMBER.start + timedelta(days=d, hours=1) for d in range(4)])
        await led.settle(NOVEMBER.start + timedelta(days=2))
        now = NOVEMBER.start + timedelta(days=10)
        p = await month_preview(source(path), "acme", NOVEMBER, now, catalog=led.catalog)
    # 4 calls in 10 of 30 days: 12 by the end; 1 more on the plan, 7 pay 3 x 0.50 + 4 x 0.25.
    assert p.items[0].projected_calls == 12 and p.to_date == 0
    assert p.projected == Decimal("2.50")
    assert p.elapsed == Decimal(1) / Decimal(3)


async def test_a_past_month_projects_itself_and_a_future_one_is_refused(ledger: LedgerAt) -> None:
    path = ledger("ledger")
    async with Ledger(path, utc(2026, 10, 31, 16)) as led:
        await led.account("acme")
        await led.calls("acme", [NOVEMBER.start + timedelta(hours=1)])
        later = utc(2026, 12, 20)
        p = await month_preview(source(path), "acme", NOVEMBER, later, catalog=led.catalog)
        assert p.elapsed == 1 and p.projected == p.to_date == Decimal("0.50")
        with pytest.raises(UnknownMonth, match="not started"):
            await month_preview(source(path), "acme", "2027-01", later, catalog=led.catalog)
        start = await month_preview(source(path), "acme", "2026-12", utc(2026, 11, 30, 16))
        assert start.elapsed == 0 and start.projected is None and start.items == ()


async def test_a_late_record_behind_the_horizon_is_pending(ledger: LedgerAt) -> None:
    path = ledger("ledger")
    async with Ledger(path, utc(2026, 10, 31, 16)) as led:
        await led.account("acme")
        await led.calls("acme", [NOVEMBER.start + timedelta(days=d, hours=2) for d in range(4)])
        await led.settle(NOVEMBER.start + timedelta(days=8))  # all 4 settled: 3 x 0.50 + 0.25
        led.clock.set(NOVEMBER.start + timedelta(days=9))
        # Arrives now, occurred on day 2: behind the horizon, after the settled seq mark.
        await led.calls("acme", [NOVEMBER.start + timedelta(days=1, hours=5)])
        p = await month_preview(
            source(path), "acme", NOVEMBER, led.clock.now(), catalog=led.catalog
        )
    [item] = p.items
    assert (item.settled_calls, item.pending_calls) == (4, 1)
    assert (p.settled, p.pending, p.to_date) == (Decimal("1.75"), Decimal("0.25"), Decimal("2.00"))
