"""Refunds and renewals end to end: calls through the example gateway on an injected clock,
signed at it, then the plans' money as `metering plans refund|renew` computes it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware.rating import (
    BalanceError,
    Month,
    SqliteRatingStore,
    build_bill,
    buy_qps_subscription,
    buy_resource_plan,
    refund,
    renew_plan,
)
from tests.support.money import DETECT, topup

from .test_standing_gateway import CATALOG, START, metered_gateway

HOUR = timedelta(hours=1)
COEF = CATALOG.by_item()[DETECT].coefficient  # points per DetectFace call
FIRST_TIER = CATALOG.by_item()[DETECT].first_tier_price  # 0.50


async def _plan(rating: SqliteRatingStore, plan_id: str, calls: int, at: object) -> None:
    await buy_resource_plan(
        rating, CATALOG, account="acme", kind="single", categories={"facebody"},
        points=COEF * calls, ordered_at=at, price_paid="10", plan_id=plan_id,
    )  # fmt: skip


async def test_refunds_at_48_hours_used_and_unused_and_none_at_130(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    async with SqliteRatingStore(db) as rating:
        await topup(rating, "acme", "100", START)
        await _plan(rating, "USED", 10, START)
    async with metered_gateway(tmp_path, create_mock_upstream(), {"k": "acme"}) as gw:
        assert [await gw.call("k") for _ in range(4)] == [(200, "")] * 4  # the plan pays
        gw.clock.advance(48 * 3600)
        async with SqliteRatingStore(db) as rating:
            used = await refund(rating, CATALOG, "USED", clock=gw.clock)
        await gw.refreshed()
        # Refunded: the plan pays no more; this call is pay-as-you-go (0.50).
        assert await gw.call("k") == (200, "")
        gw.clock.advance(1)  # plans bought after it (one bought at its instant would pay it)
        async with SqliteRatingStore(db) as rating:
            await _plan(rating, "UNUSED", 10, gw.clock.now())
            await _plan(rating, "LATE", 10, gw.clock.now())
        gw.clock.advance(48 * 3600)
        async with SqliteRatingStore(db) as rating:
            unused = await refund(rating, CATALOG, "UNUSED", clock=gw.clock)
        gw.clock.advance(82 * 3600)  # LATE bought 130 h ago
        async with SqliteRatingStore(db) as rating:
            with pytest.raises(BalanceError, match="120 h"):
                await refund(rating, CATALOG, "LATE", clock=gw.clock)
            balance = (await rating.balances())["acme"]
            entries = await rating.balance_entries("acme")
    # 4 covered calls at the first tier: 10 - 4 x 0.50
    assert (used.used_calls, used.amount) == (4, Decimal("10") - 4 * FIRST_TIER)
    assert (unused.used_calls, unused.amount) == (0, Decimal("10"))
    kinds = [e.kind.value for e in entries]
    assert kinds.count("refund") == 2 and kinds.count("purchase") == 3
    paid = sum(e.amount for e in entries if e.kind.value in ("payg", "rounding"))
    # 100 - 3 plans + two refunds - whatever the call after the refund cost
    assert balance == Decimal("100") - 30 + used.amount + unused.amount + paid
    assert paid == -FIRST_TIER  # the call after the refund: pay-as-you-go


async def test_a_renewed_subscription_covers_the_boundary_without_gap(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    async with SqliteRatingStore(db) as rating:
        await topup(rating, "acme", "50", START)
        first = await buy_qps_subscription(
            rating, CATALOG, account="acme", category="facebody", action="CompareFace",
            qps=20, ordered_at=START, price_paid="20", subscription_id="Q1",
        )  # fmt: skip
    async with metered_gateway(tmp_path, create_mock_upstream(), {"k": "acme"}) as gw:
        gw.clock.advance(10 * 24 * 3600)
        async with SqliteRatingStore(db) as rating:
            second = await renew_plan(rating, CATALOG, "Q1", clock=gw.clock, new_id="Q2")
        assert second.start == first.end  # no gap, no overlap
        gw.clock.set(first.end - timedelta(seconds=3))
        await gw.refreshed()
        assert await gw.call("k", "CompareFace") == (200, "")  # the last second of Q1
        gw.clock.set(first.end + timedelta(seconds=1))
        await gw.refreshed()
        assert await gw.call("k", "CompareFace") == (200, "")  # the first of Q2
        gw.clock.advance(3 * 24 * 3600)
        await gw.settle()
        async with SqliteRatingStore(db) as rating:
            months = sorted({Month.of(first.end - HOUR), Month.of(first.end + HOUR)})
            bills = [await build_bill(rating, "acme", m) for m in months]
            balance = (await rating.balances())["acme"]
    sources = [(ln.kind.value, ln.plan_id, ln.calls) for bill in bills for ln in bill.lines]
    assert sources == [("qps", "Q1", 1), ("qps", "Q2", 1)]  # both free, no pay-as-you-go
    assert balance == Decimal("50") - 20 - 20  # the renewal was paid from the balance
