"""month_deduction() and bill(): what settlement stored, per plan and tier, one account."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from metering_middleware.reports import (
    LedgerSource,
    UnknownAccount,
    UnknownMonth,
    bill,
    month_deduction,
)
from tests.reports.conftest import LedgerAt
from tests.reports.support import PLATE, Ledger, source, utc

NOW = utc(2026, 11, 20)


async def _build(file: Path | str) -> None:
    async with Ledger(file, utc(2026, 10, 1)) as led:
        for name in ("acme", "acme2"):
            await led.account(name)
        await led.plan("acme", "100", utc(2026, 11, 1), "P1-small")
        await led.plan("acme", "500", utc(2026, 11, 1), "P2-big")
        await led.calls("acme", [utc(2026, 11, 2, 1, i) for i in range(10)])
        await led.calls("acme", [utc(2026, 11, 3, 1, i) for i in range(4)], PLATE)
        await led.calls("acme2", [utc(2026, 11, 2, 1, i) for i in range(3)])
        await led.settle(utc(2026, 11, 10))


@pytest.fixture(scope="module")
def path(module_ledger: LedgerAt) -> LedgerSource:
    """Built once per module and backend: the reports only read it."""
    file = module_ledger("ledger")
    asyncio.run(_build(file))
    return source(file)


async def test_which_plan_or_tier_settled_what(path: LedgerSource) -> None:
    d = await month_deduction(path, "acme", "2026-11", now=NOW)
    assert [
        (s.source, s.plan_id, s.tier, s.unit_price, s.calls, s.points, s.amount) for s in d.sources
    ] == [
        ("single", "P1-small", None, None, 2, Decimal(100), Decimal(0)),
        ("single", "P2-big", None, None, 8, Decimal(400), Decimal(0)),
        ("payg", None, 0, Decimal("0.15"), 4, Decimal(0), Decimal("0.60")),
    ]
    assert (d.calls, d.points, d.amount) == (14, Decimal(500), Decimal("0.60"))
    assert [(ln.item, ln.source, ln.calls) for ln in d.lines] == [
        ("facebody.DetectFace", "single", 2),
        ("facebody.DetectFace", "single", 8),
        (PLATE, "payg", 4),
    ]
    doc = d.to_json()
    assert doc["sources"][2] == {
        "source": "payg",
        "plan_id": None,
        "tier": 0,
        "unit_price": "0.15",
        "calls": 4,
        "points": "0",
        "amount": "0.60",
    }
    assert doc["month"] == "2026-11" and doc["amount"] == "0.60"


async def test_another_tenant_sees_its_own_lines_only(path: LedgerSource) -> None:
    d = await month_deduction(path, "acme2", "2026-11")
    assert [(s.source, s.calls, s.amount) for s in d.sources] == [("payg", 3, Decimal("1.50"))]
    b = await bill(path, "acme2", "2026-11")
    assert b.plans == () and b.amount_due == Decimal("1.50")


async def test_the_bill(path: LedgerSource) -> None:
    b = await bill(path, "acme", "2026-11", now=NOW)
    assert (b.exact, b.recorded, b.amount_due, b.rounding) == (
        Decimal("0.60"),
        Decimal("0.600"),
        Decimal("0.60"),
        Decimal("0.00"),
    )
    assert [(p.id, p.points_left) for p in b.plans] == [("P1-small", 0), ("P2-big", 100)]
    assert b.final is False and b.settled_until == utc(2026, 11, 9, 23, 59)
    assert [ln.adjustment for ln in b.lines] == [False, False, False]
    doc = b.to_json()
    assert doc["amount_due"] == "0.60" and doc["settled_until"] == "2026-11-09T23:59:00Z"
    assert doc["lines"][2]["unit_price"] == "0.15" and doc["plans"][1]["points_left"] == "100"
    empty = await bill(path, "acme", "2026-10", now=NOW)
    assert empty.lines == () and empty.amount_due == 0


async def test_months_and_accounts_that_are_not_there(path: LedgerSource) -> None:
    with pytest.raises(UnknownMonth, match="2026-12 has not started"):
        await month_deduction(path, "acme", "2026-12", now=NOW)
    with pytest.raises(UnknownMonth, match="YYYY-MM"):
        await bill(path, "acme", "november")
    with pytest.raises(UnknownMonth, match=r"1\.\.12"):
        await bill(path, "acme", "2026-13")
    with pytest.raises(UnknownAccount):
        await bill(path, "acme3", "2026-11")
