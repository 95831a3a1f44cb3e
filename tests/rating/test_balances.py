"""Balances: entries posted by purchases, settlement, top-ups and refunds; standing moved by
them; a closed month's entries sum to minus its bill's amount due."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from metering_middleware.catalog import default_catalog
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.rating import (
    BalanceEntry,
    BalanceError,
    EntryKind,
    Month,
    PlanError,
    buy_qps_subscription,
    buy_resource_plan,
)
from metering_middleware.rating.cash import (
    balance_view,
    correct_balance,
    hold_account,
    release_account,
    set_monthly_cap,
    top_up,
)
from metering_middleware.rating.renewals import quote_refund, refund, renew_plan

from .conftest import LedgerAt
from .helpers import PLATE, call, calls_between, utc
from .settle_support import Harness

CATALOG = default_catalog()
SECOND = timedelta(seconds=1)
MAR, APR = Month(2026, 3), Month(2026, 4)
START = utc(2026, 3, 1, 1)


async def _account(h: Harness, name: str = "acct") -> None:
    await CredentialManager(h.ledger, SecretBox(None), h.clock).add(name, None)


async def _entries_rows(h: Harness) -> list[tuple[Any, ...]]:
    return await h.query("SELECT id, kind, amount, month FROM balance_entries ORDER BY seq")


async def test_top_ups_are_validated_idempotent_and_only_for_enabled_accounts(
    ledger: LedgerAt,
) -> None:
    async with Harness(ledger("b.db"), CATALOG, START) as h:
        await _account(h)
        for bad in ("0", "-1", "1.001", "abc", "NaN", "Infinity", "1e12"):
            with pytest.raises(BalanceError):
                await top_up(h.rating, "acct", bad, clock=h.clock)
        with pytest.raises(BalanceError, match="no account"):
            await top_up(h.rating, "ghost", "5", clock=h.clock)
        entry, new = await top_up(h.rating, "acct", "12.50", key="pay-1", clock=h.clock)
        again, new_again = await top_up(h.rating, "acct", "12.50", key="pay-1", clock=h.clock)
        assert (new, new_again, again.id) == (True, False, entry.id)
        with pytest.raises(BalanceError, match="different content"):
            await top_up(h.rating, "acct", "13", key="pay-1", clock=h.clock)
        assert (await balance_view(h.rating, "acct")).balance == Decimal("12.50")
        await CredentialManager(h.ledger, SecretBox(None), h.clock).disable("acct")
        with pytest.raises(BalanceError, match="disabled"):
            await top_up(h.rating, "acct", "5", clock=h.clock)
        # A correction still works on a disabled account, and needs its reason.
        with pytest.raises(BalanceError, match="reason"):
            await correct_balance(h.rating, "acct", "-2", " ", clock=h.clock)
        await correct_balance(h.rating, "acct", "-2.5", "duplicate wire", clock=h.clock)
        assert (await balance_view(h.rating, "acct")).balance == Decimal("10.00")
        rows = await _entries_rows(h)
    assert [r[:3] for r in rows] == [
        ("topup:pay-1", "topup", "12.50"),
        (rows[1][0], "correction", "-2.5"),
    ]


async def test_entries_are_immutable(ledger: LedgerAt) -> None:
    async with Harness(ledger("i.db"), CATALOG, START) as h:
        await _account(h)
        await top_up(h.rating, "acct", "5", clock=h.clock)
        for sql in ("UPDATE balance_entries SET amount = '500'", "DELETE FROM balance_entries"):
            assert "immutable" in await h.refused(sql)
        assert await h.rating.balances() == {"acct": Decimal("5")}


async def test_a_purchase_is_charged_and_can_require_funds(ledger: LedgerAt) -> None:
    async with Harness(ledger("p.db"), CATALOG, START) as h:
        await _account(h)
        await top_up(h.rating, "acct", "40", clock=h.clock)
        with pytest.raises(BalanceError, match="top up first"):
            await buy_resource_plan(
                h.rating, CATALOG, account="acct", kind="general", points=100,
                ordered_at=START, price_paid="50", plan_id="G", require_funds=True,
            )  # fmt: skip
        assert (await h.rating.plan_book()).find("G") is None  # nothing bought
        await buy_resource_plan(
            h.rating, CATALOG, account="acct", kind="general", points=100,
            ordered_at=START, price_paid="30", plan_id="G", require_funds=True,
        )  # fmt: skip
        assert (await balance_view(h.rating, "acct")).balance == Decimal("10")
        assert (await _entries_rows(h))[-1] == ("purchase:G", "purchase", "-30", None)


async def test_settlement_posts_usage_once_and_the_closed_month_sums_to_its_bill(
    ledger: LedgerAt,
) -> None:
    # 7 DetectFace calls in March: 7 x 0.0016 = 0.0112 exact, charged 0.01.
    face = [call(CATALOG, f"f{i}", utc(2026, 3, 2, 0, i), item="facebody.DetectFace")
            for i in range(7)]  # fmt: skip
    async with Harness(ledger("s.db"), CATALOG, START) as h:
        await _account(h)
        await top_up(h.rating, "acct", "1", clock=h.clock)
        await h.arrive(face[:3])
        await h.settle(utc(2026, 3, 3))
        await h.settle(utc(2026, 3, 3, 1))  # nothing new: nothing posted
        await h.arrive(face[3:], at=utc(2026, 3, 4))
        await h.settle(utc(2026, 3, 5))
        open_month = (await balance_view(h.rating, "acct")).balance
        await h.settle(utc(2026, 4, 5))  # past March's close (end + 2 days)
        bill = await h.bill("acct", MAR)
        closed = (await balance_view(h.rating, "acct")).balance
        await h.settle(utc(2026, 4, 6))
        rows = await _entries_rows(h)
    assert open_month == Decimal("1") - Decimal("0.0112")
    assert bill.final and bill.amount_due == Decimal("0.01")
    assert closed == Decimal("0.99")
    march = [r for r in rows if r[3] == "2026-03"]
    assert [(r[0], r[2]) for r in march] == [
        ("payg:acct:2026-03:1", "-0.0048"),
        ("payg:acct:2026-03:2", "-0.0064"),
        ("rounding:acct:2026-03:1", "0.0012"),
    ]
    assert sum(Decimal(r[2]) for r in march) == -bill.amount_due


async def test_a_re_rate_posts_only_the_difference(ledger: LedgerAt) -> None:
    plates = calls_between(CATALOG, 4, utc(2026, 3, 2), SECOND)  # 4 x 0.15 pay-as-you-go
    async with Harness(ledger("r.db"), CATALOG, START) as h:
        await _account(h)
        await h.arrive(plates)
        await h.settle(utc(2026, 3, 3))
        # A plan bought back-dated into the settled period re-rates March: 2 calls covered.
        await buy_resource_plan(
            h.rating, CATALOG, account="acct", kind="single", categories={"ocr"},
            points=30, ordered_at=utc(2026, 3, 1, 12), price_paid="0", plan_id="S",
        )  # fmt: skip
        report = await h.settle(utc(2026, 3, 3, 1))
        balance = (await balance_view(h.rating, "acct")).balance
        rows = await _entries_rows(h)
    assert report.rerated == ("acct",)
    payg = [(r[0], r[2]) for r in rows if r[1] == "payg"]
    assert payg == [("payg:acct:2026-03:1", "-0.60"), ("payg:acct:2026-03:2", "0.30")]
    assert balance == Decimal("-0.30")


async def test_standing_follows_settlement_and_top_ups(ledger: LedgerAt) -> None:
    plates = calls_between(CATALOG, 2, utc(2026, 3, 2), SECOND)
    async with Harness(ledger("o.db"), CATALOG, START) as h:
        await _account(h)
        await top_up(h.rating, "acct", "0.20", clock=h.clock)
        await h.arrive(plates)
        assert await h.rating.standings() == {}
        await h.settle(utc(2026, 3, 3))  # 0.20 - 0.30 < 0: overdue from now
        first = (await h.rating.standings())["acct"]
        await h.settle(utc(2026, 3, 3, 23))  # 23 h: still only overdue
        assert (await h.rating.standings())["acct"].suspended_at is None
        await h.settle(utc(2026, 3, 4, 0, 0, 1))
        suspended = (await h.rating.standings())["acct"]
        h.clock.set(utc(2026, 3, 4, 1))
        await top_up(h.rating, "acct", "0.05", clock=h.clock)  # not enough
        still = await h.rating.standings()
        await top_up(h.rating, "acct", "0.05", clock=h.clock)  # exactly zero: restored
        after = await h.rating.standings()
        notices = [r[0] for r in await h.query("SELECT kind FROM notices ORDER BY seq")]
    assert first.overdue_since == utc(2026, 3, 3) and first.suspended_at is None
    assert suspended.suspended_at == utc(2026, 3, 4, 0, 0, 1)
    assert "acct" in still and after == {}
    assert notices == ["account.overdue", "account.suspended", "account.restored"]


async def test_an_operator_hold_is_lifted_only_by_hand(ledger: LedgerAt) -> None:
    async with Harness(ledger("h.db"), CATALOG, START) as h:
        await _account(h)
        await hold_account(h.rating, "acct", "chargeback", clock=h.clock)
        with pytest.raises(BalanceError, match="already"):
            await hold_account(h.rating, "acct", "again", clock=h.clock)
        await top_up(h.rating, "acct", "100", clock=h.clock)
        assert (await balance_view(h.rating, "acct")).standing == "held"
        await release_account(h.rating, "acct", clock=h.clock)
        assert (await balance_view(h.rating, "acct")).standing == "good"
        with pytest.raises(BalanceError, match="not suspended"):
            await release_account(h.rating, "acct", clock=h.clock)
        with pytest.raises(BalanceError, match="positive"):
            await set_monthly_cap(h.rating, "acct", "-1", clock=h.clock)


async def _plan(h: Harness, plan_id: str = "S", points: int = 150) -> None:
    await buy_resource_plan(
        h.rating, CATALOG, account="acct", kind="single", categories={"ocr"},
        points=points, ordered_at=START, price_paid="10", plan_id=plan_id,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("hours", "used", "amount"),
    [(48, 0, Decimal("10")), (48, 4, Decimal("9.40")), (48, 100, Decimal("0"))],
)
async def test_refund_within_120_hours(
    ledger: LedgerAt, hours: int, used: int, amount: Decimal
) -> None:
    async with Harness(ledger("f.db"), CATALOG, START) as h:
        await _account(h)
        await _plan(h, points=1500)  # 100 plate calls
        await h.arrive(calls_between(CATALOG, used, utc(2026, 3, 1, 2), SECOND))
        h.clock.set(START + timedelta(hours=hours))
        quote = await refund(h.rating, CATALOG, "S", clock=h.clock)
        balance = (await balance_view(h.rating, "acct")).balance
        with pytest.raises(PlanError, match="already refunded"):
            await refund(h.rating, CATALOG, "S", clock=h.clock)
    # used calls are valued at the first tier (0.15), the refund never below zero
    assert (quote.used_calls, quote.amount) == (used, amount)
    assert balance == -Decimal("10") + amount


async def test_no_refund_after_120_hours_and_nothing_is_written(ledger: LedgerAt) -> None:
    async with Harness(ledger("n.db"), CATALOG, START) as h:
        await _account(h)
        await _plan(h)
        h.clock.set(START + timedelta(hours=130))
        quote = await quote_refund(h.rating, CATALOG, "S", clock=h.clock)
        with pytest.raises(BalanceError, match="120 h"):
            await refund(h.rating, CATALOG, "S", clock=h.clock)
        plan = (await h.rating.plan_book()).find("S")
        rows = await _entries_rows(h)
    assert not quote.refundable and quote.amount == 0
    assert plan is not None and plan.refunded_at is None
    assert [r[1] for r in rows] == ["purchase"]


async def test_a_refunded_plan_covers_no_late_record_of_an_earlier_call(ledger: LedgerAt) -> None:
    async with Harness(ledger("late.db"), CATALOG, START) as h:
        await _account(h)
        await _plan(h, points=1500)
        await h.arrive(calls_between(CATALOG, 2, utc(2026, 3, 1, 2), SECOND))
        h.clock.set(utc(2026, 3, 2))
        quote = await refund(h.rating, CATALOG, "S", clock=h.clock)
        # A call of before the refund whose record lands after it: pay-as-you-go, and it
        # takes none of the refunded plan's points (the refund was computed without it).
        await h.arrive([call(CATALOG, "late", utc(2026, 3, 1, 3))], at=utc(2026, 3, 2, 1))
        await h.settle(utc(2026, 3, 2, 2))
        await h.rerate(MAR)
        bill = await h.bill("acct", MAR)
    assert quote.amount == Decimal("9.70")
    by_source = {(ln.kind.value, ln.plan_id): ln.calls for ln in bill.lines}
    assert by_source == {("single", "S"): 2, ("payg", None): 1}
    assert bill.amount_due == Decimal("0.15")


async def test_a_renewal_chains_without_gap_and_is_paid_from_the_balance(ledger: LedgerAt) -> None:
    async with Harness(ledger("q.db"), CATALOG, START) as h:
        await _account(h)
        await top_up(h.rating, "acct", "600", clock=h.clock)
        first = await buy_qps_subscription(
            h.rating, CATALOG, account="acct", category="facebody", action="DetectFace",
            qps=10, ordered_at=START, price_paid="200", subscription_id="Q1",
        )  # fmt: skip
        h.clock.set(START + timedelta(days=20))
        second = await renew_plan(h.rating, CATALOG, "Q1", clock=h.clock, new_id="Q2")
        third = await renew_plan(h.rating, CATALOG, "Q1", clock=h.clock, new_id="Q3")
        with pytest.raises(BalanceError, match="top up first"):
            await renew_plan(h.rating, CATALOG, "Q1", clock=h.clock, new_id="Q4")
        h.clock.set(third.end + SECOND)
        with pytest.raises(PlanError, match="expired"):
            await renew_plan(h.rating, CATALOG, "Q3", clock=h.clock)
        with pytest.raises(PlanError, match="no plan"):
            await renew_plan(h.rating, CATALOG, "nope", clock=h.clock)
        balance = (await balance_view(h.rating, "acct")).balance
    assert (second.start, third.start) == (first.end, second.end)
    assert balance == Decimal("600") - 3 * Decimal("200")


async def test_a_resource_plan_renewal_starts_at_purchase_and_stacks(ledger: LedgerAt) -> None:
    async with Harness(ledger("rp.db"), CATALOG, START) as h:
        await _account(h)
        await top_up(h.rating, "acct", "10", clock=h.clock)
        await _plan(h)
        h.clock.set(START + timedelta(days=30))
        renewed = await renew_plan(h.rating, CATALOG, "S", clock=h.clock, require_funds=False)
        book = await h.rating.plan_book()
    original = book.find("S")
    assert original is not None and renewed.start == START + timedelta(days=30)
    assert renewed.end - renewed.start >= timedelta(days=365)  # its own 12 months
    assert len(book.plans) == 2  # both valid: they stack


def test_past_purchases_migrate_to_one_entry_each(tmp_path: Path) -> None:
    from metering_middleware.ledger.migrate import load_migrations

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for m in load_migrations():
        if m.version < 4:
            conn.executescript(m.sql)
    conn.execute(
        "INSERT INTO rating_plans (id, account, kind, categories, action, qps, points,"
        " start_at, end_at, ordered_at, price_paid, recorded_at) VALUES"
        " ('A', 'acct', 'single', 'ocr', NULL, NULL, '100', 't0', 't1', 't0', '25.5', 't0'),"
        " ('B', 'acct', 'general', 'ocr', NULL, NULL, '100', 't0', 't1', 't0', '0', 't0')"
    )
    conn.execute(
        "INSERT INTO rating_refunds (plan_id, refunded_at, amount, recorded_at)"
        " VALUES ('A', 't2', '20', 't2')"
    )
    conn.commit()
    m4 = next(m for m in load_migrations() if m.version == 4)
    conn.executescript(m4.sql)
    rows = conn.execute("SELECT id, kind, amount FROM balance_entries ORDER BY seq").fetchall()
    conn.close()
    assert rows == [
        ("purchase:A", "purchase", "-25.5"),
        ("purchase:B", "purchase", "0"),
        ("refund:A", "refund", "20"),
    ]


async def test_migrated_entries_are_summed_by_the_first_read(tmp_path: Path) -> None:
    async with Harness(tmp_path / "m.db", CATALOG, START) as h:
        await _account(h)
        await _plan(h)
    with sqlite3.connect(tmp_path / "m.db") as conn:
        # As a migration leaves them: entries the totals have not summed yet.
        conn.execute("DELETE FROM balance_totals")
        conn.execute("UPDATE balance_mark SET last_seq = 0")
    async with Harness(tmp_path / "m.db", CATALOG, START) as h:
        assert await h.rating.balances() == {"acct": Decimal("-10")}
        await top_up(h.rating, "acct", "15", clock=h.clock)
        assert await h.rating.balances() == {"acct": Decimal("5")}


def test_plate_item_is_the_one_priced_in_these_tests() -> None:
    assert CATALOG.by_item()[PLATE].first_tier_price == Decimal("0.15")


_ = BalanceEntry, EntryKind  # public names these tests rely on exist
