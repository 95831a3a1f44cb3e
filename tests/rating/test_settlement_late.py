"""Late records, adjustments, re-rating, and settling again: the results never depend on
when (or how often) settlement ran."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from metering_middleware.catalog import default_catalog
from metering_middleware.ledger import CallRecord
from metering_middleware.rating import (
    Month,
    SourceKind,
    buy_resource_plan,
    refund_plan,
)

from .conftest import LedgerAt
from .helpers import PLATE, call, calls_between, utc
from .settle_support import Harness, summary

CATALOG = default_catalog()
SECOND = timedelta(seconds=1)
JAN, FEB, MAR = Month(2026, 1), Month(2026, 2), Month(2026, 3)


async def one_pass(
    path: Path | str,
    arrivals: list[tuple[datetime, list[CallRecord]]],
    at: datetime,
    plans: int = 0,
) -> list[tuple[str, str, str, str, str, int, str, str]]:
    """The lines of a single settlement over the same arrivals (same ``recorded_at``)."""
    async with Harness(path, CATALOG, arrivals[0][0]) as h:
        if plans:
            await buy_plan(h, plans)
        for when, records in arrivals:
            await h.arrive(records, at=when)
        await h.settle(at)
        return summary(await h.lines())


DECEMBER = utc(2025, 12, 1)


async def buy_plan(h: Harness, points: int, ordered_at: datetime = DECEMBER) -> None:
    await buy_resource_plan(
        h.rating,
        CATALOG,
        account="acct",
        kind="single",
        categories={"ocr"},
        points=points,
        ordered_at=ordered_at,
        price_paid=10,
        plan_id="p",
    )


async def test_a_late_record_in_an_open_month_re_rates_that_month(ledger: LedgerAt) -> None:
    on_time = calls_between(CATALOG, 4, utc(2026, 3, 5), SECOND)
    late = [call(CATALOG, "late", utc(2026, 3, 4))]  # before all of them, arrives after
    arrivals = [(utc(2026, 3, 5, 1), on_time), (utc(2026, 3, 6), late)]
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 3, 5)) as h:
        await buy_plan(h, 45)  # three plate calls
        await h.arrive(on_time, at=arrivals[0][0])
        first = await h.settle(utc(2026, 3, 5, 2))
        await h.arrive(late, at=arrivals[1][0])
        second = await h.settle(utc(2026, 3, 6, 1))
        bill = await h.bill("acct", MAR)
        lines = summary(await h.lines())
    assert (first.rerated, second.rerated, second.records) == ((), ("acct",), 5)
    # The late call occurred first, so it took the plan's first points: the last on-time
    # call, covered at first, is now pay-as-you-go.
    assert [(ln.kind, ln.calls) for ln in bill.lines] == [
        (SourceKind.SINGLE, 3),
        (SourceKind.PAYG, 2),
    ]
    assert lines == await one_pass(ledger("one.db"), arrivals, utc(2026, 3, 6, 1), plans=45)


async def test_a_record_arriving_after_its_month_closed_is_an_adjustment(ledger: LedgerAt) -> None:
    january = calls_between(CATALOG, 10_000, utc(2026, 1, 10), SECOND)
    late = [call(CATALOG, "late-jan", utc(2026, 1, 20))]
    arrival = utc(2026, 2, 10)  # January closed at 2026-02-02T16:00Z (Feb 3, 00:00 +08:00)
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 1, 10)) as h:
        await h.arrive(january)
        await h.settle(utc(2026, 1, 31))
        jan_before = summary((await h.bill("acct", JAN)).lines)
        await h.arrive(late, at=arrival)
        report = await h.settle(arrival + timedelta(minutes=5))
        jan, feb = await h.bill("acct", JAN), await h.bill("acct", FEB)
        [adjustment] = await h.rating.adjustments()
    assert report.adjustments == 1 and report.rerated == ()
    assert summary(jan.lines) == jan_before  # the closed month is left alone
    # Billed in February, priced at the 10,001st position of *January*, at January's price.
    got = [(ln.adjustment, ln.origin, ln.source.tier, ln.calls, ln.amount) for ln in feb.lines]
    assert got == [(True, JAN, 1, 1, Decimal("0.10"))]
    assert feb.amount_due == Decimal("0.10")
    assert (adjustment.origin, adjustment.billed, adjustment.effective_at) == (JAN, FEB, arrival)


async def test_an_adjustment_takes_a_plan_valid_when_it_occurred(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 1, 10)) as h:
        await buy_resource_plan(
            h.rating,
            CATALOG,
            account="acct",
            kind="single",
            categories={"ocr"},
            points=30,
            ordered_at=utc(2026, 1, 1),
            price_paid=10,
            validity_months=1,
            plan_id="jan-only",
        )
        await h.arrive([call(CATALOG, "jan", utc(2026, 1, 10))])
        await h.arrive([call(CATALOG, "feb", utc(2026, 2, 10))])
        await h.settle(utc(2026, 2, 11))
        await h.arrive([call(CATALOG, "late", utc(2026, 1, 15))], at=utc(2026, 2, 12))
        await h.settle(utc(2026, 2, 13))
        feb = await h.bill("acct", FEB)
    # The plan ended on 2026-02-01: "feb" is pay-as-you-go, but the late January call
    # still gets the plan's last points (valid when it occurred).
    assert [(ln.adjustment, ln.kind, ln.calls) for ln in feb.lines] == [
        (False, SourceKind.PAYG, 1),
        (True, SourceKind.SINGLE, 1),
    ]
    # It reaches into February's first hours (months are UTC+8), and is empty now.
    assert [(b.plan.id, b.remaining) for b in feb.plans] == [("jan-only", Decimal(0))]


async def test_an_adjustment_displaces_nothing_and_gets_points_left(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 1, 10)) as h:
        await buy_plan(h, 45, ordered_at=utc(2026, 1, 1))  # three plate calls
        await h.arrive([call(CATALOG, "jan", utc(2026, 1, 10))])
        await h.settle(utc(2026, 2, 11))
        await h.arrive([call(CATALOG, "late", utc(2026, 1, 5))], at=utc(2026, 2, 12))
        await h.arrive([call(CATALOG, "feb", utc(2026, 2, 13))])
        await h.settle(utc(2026, 2, 14))
        jan, feb = await h.bill("acct", JAN), await h.bill("acct", FEB)
    # "late" occurred before "jan" but arrived after January closed: it does not take
    # "jan"'s points back; it gets what was left when it arrived, before "feb" did.
    assert [(ln.kind, ln.calls) for ln in jan.lines] == [(SourceKind.SINGLE, 1)]
    assert [(ln.adjustment, ln.kind, ln.calls) for ln in feb.lines] == [
        (False, SourceKind.SINGLE, 1),
        (True, SourceKind.SINGLE, 1),
    ]
    assert [b.remaining for b in feb.plans] == [Decimal(0)]


async def test_an_adjustment_in_the_grace_of_the_previous_month_displaces_nothing(
    ledger: LedgerAt,
) -> None:
    # On 2026-03-01 February is still open (until 2026-03-02T16:00Z): a January record
    # arriving then is billed in February, but it arrives after a March record that was
    # settled with the plan's last points. It must not take them back.
    arrivals = [
        (utc(2026, 2, 20), [call(CATALOG, "feb", utc(2026, 2, 19))]),
        (utc(2026, 3, 1, 1), [call(CATALOG, "mar", utc(2026, 3, 1))]),
        (utc(2026, 3, 1, 2), [call(CATALOG, "late", utc(2026, 1, 25))]),
    ]
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 2, 19)) as h:
        await buy_plan(h, 30)  # two plate calls
        for when, records in arrivals[:2]:
            await h.arrive(records, at=when)
        await h.settle(utc(2026, 3, 1, 1, 30))
        mar_before = summary((await h.bill("acct", MAR)).lines)
        await h.arrive(arrivals[2][1], at=arrivals[2][0])
        report = await h.settle(utc(2026, 3, 1, 3))
        feb, mar = await h.bill("acct", FEB), await h.bill("acct", MAR)
        [adjustment] = await h.rating.adjustments()
        lines = summary(await h.lines())
    assert (report.adjustments, report.rerated) == (1, ())
    assert summary(mar.lines) == mar_before  # "mar" keeps the plan's last points
    assert [(ln.kind, ln.calls) for ln in mar.lines] == [(SourceKind.SINGLE, 1)]
    # Billed in February (still open when it arrived), pay-as-you-go at January's first
    # position and price: nothing was left for it when it arrived.
    got = [(ln.adjustment, ln.kind, ln.origin, ln.amount) for ln in feb.lines]
    assert got == [
        (False, SourceKind.SINGLE, FEB, Decimal(0)),
        (True, SourceKind.PAYG, JAN, Decimal("0.15")),
    ]
    assert (adjustment.origin, adjustment.billed, adjustment.effective_at) == (
        JAN,
        FEB,
        arrivals[2][0],
    )
    assert lines == await one_pass(ledger("one.db"), arrivals, utc(2026, 3, 1, 3), plans=30)


async def test_adjustments_and_settled_records_contending_for_points_in_any_passes(
    ledger: LedgerAt,
) -> None:
    # A plan of five plate calls. February's one call, then March calls every ten minutes
    # from 2026-03-01T00:00Z, and January records arriving in February's grace at 00:15Z
    # (one) and 00:35Z (two). In arrival order the plan covers: feb, mar-0, mar-1, the
    # first adjustment, mar-2; then mar-3 and the last two adjustments are pay-as-you-go.
    march = calls_between(CATALOG, 4, utc(2026, 3, 1), timedelta(minutes=10), prefix="mar-")
    late = [call(CATALOG, f"jan-{i}", utc(2026, 1, 20 + i)) for i in range(3)]
    arrivals = [(utc(2026, 2, 20), [call(CATALOG, "feb", utc(2026, 2, 19))])]
    arrivals += [(r.occurred_at + SECOND, [r]) for r in march]
    arrivals += [(utc(2026, 3, 1, 0, 15), late[:1]), (utc(2026, 3, 1, 0, 35), late[1:])]
    arrivals.sort(key=lambda a: a[0])
    end = utc(2026, 3, 1, 2)
    async with Harness(ledger("many.db"), CATALOG, arrivals[0][0]) as h:
        await buy_plan(h, 75)
        for when, records in arrivals:
            await h.arrive(records, at=when)
            await h.settle(when + 2 * 60 * SECOND)  # each arrival settled before the next
        await h.settle(end)
        feb, mar = await h.bill("acct", FEB), await h.bill("acct", MAR)
        settled = await h.snapshot()
        for month in (JAN, FEB, MAR):
            await h.rerate(month)
            assert await h.snapshot() == settled, f"re-rating {month} changed the bills"
    assert [(ln.adjustment, ln.kind, ln.calls, ln.amount) for ln in feb.lines] == [
        (False, SourceKind.SINGLE, 1, Decimal(0)),
        (True, SourceKind.SINGLE, 1, Decimal(0)),
        (True, SourceKind.PAYG, 2, Decimal("0.30")),  # January positions 1 and 2
    ]
    assert [(ln.kind, ln.calls, ln.amount) for ln in mar.lines] == [
        (SourceKind.SINGLE, 3, Decimal(0)),
        (SourceKind.PAYG, 1, Decimal("0.15")),
    ]
    assert summary(settled["lines"]) == await one_pass(ledger("one.db"), arrivals, end, plans=75)


async def test_an_adjustment_that_just_arrived_waits_for_the_horizon(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 2, 10)) as h:
        arrived = utc(2026, 2, 10, 12)
        await h.arrive([call(CATALOG, "late", utc(2026, 1, 15))], at=arrived)
        first = await h.settle(arrived + 30 * SECOND)  # within the lag of its arrival
        second = await h.settle(arrived + 2 * 60 * SECOND)
        feb = await h.bill("acct", FEB)
    assert (first.records, first.deferred, second.records) == (0, 1, 1)
    assert [ln.adjustment for ln in feb.lines] == [True]


async def test_settle_and_rerate_reproduce_the_first_pass(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 1, 5)) as h:
        await buy_plan(h, 60, ordered_at=utc(2026, 1, 1))
        await h.arrive(calls_between(CATALOG, 30, utc(2026, 1, 5), timedelta(hours=20)))
        await h.settle(utc(2026, 2, 10))
        await h.arrive([call(CATALOG, "late-1", utc(2026, 1, 7))], at=utc(2026, 2, 10, 1))
        await h.arrive([call(CATALOG, "late-2", utc(2026, 1, 30))], at=utc(2026, 2, 12))
        await h.arrive(calls_between(CATALOG, 5, utc(2026, 2, 12), SECOND, prefix="f"))
        await h.settle(utc(2026, 2, 20))
        settled = await h.snapshot()
        again = await h.settle(utc(2026, 2, 20, 1))
        assert (again.records, await h.snapshot()) == (0, settled)  # idempotent
        for month in (JAN, FEB):
            report = await h.rerate(month)
            assert report.rerated == ("acct",)
            assert await h.snapshot() == settled
    assert len(settled["adjustments"]) == 2


async def test_a_plan_bought_into_a_settled_period_re_rates_it(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 3, 2)) as h:
        await h.arrive(calls_between(CATALOG, 3, utc(2026, 3, 2), SECOND))
        await h.settle(utc(2026, 3, 3))
        await buy_plan(h, 30, ordered_at=utc(2026, 3, 1))  # backdated
        report = await h.settle(utc(2026, 3, 3, 1))
        bill = await h.bill("acct", MAR)
    assert report.rerated == ("acct",)
    assert [(ln.kind, ln.calls) for ln in bill.lines] == [
        (SourceKind.SINGLE, 2),
        (SourceKind.PAYG, 1),
    ]


async def test_a_refund_ends_coverage_even_for_records_arriving_later(ledger: LedgerAt) -> None:
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 3, 2)) as h:
        await buy_plan(h, 1500, ordered_at=utc(2026, 3, 1))
        await h.arrive(calls_between(CATALOG, 2, utc(2026, 3, 2), SECOND))
        await h.settle(utc(2026, 3, 3))
        refunded = await refund_plan(h.rating, "p", at=utc(2026, 3, 2, 0, 0, 1), clock=h.clock)
        late = calls_between(CATALOG, 2, utc(2026, 3, 2, 0, 0, 2), SECOND, prefix="l")
        await h.arrive(late, at=utc(2026, 3, 3, 1))
        report = await h.settle(utc(2026, 3, 3, 2))
        bill = await h.bill("acct", MAR)
    assert refunded.refunded_at == utc(2026, 3, 2, 0, 0, 1) and report.rerated == ("acct",)
    assert [(ln.kind, ln.calls) for ln in bill.lines] == [
        (SourceKind.SINGLE, 1),
        (SourceKind.PAYG, 3),  # the second call was covered until the refund was recorded
    ]


async def test_records_of_many_accounts_and_one_account_passes(ledger: LedgerAt) -> None:
    calls = [
        call(CATALOG, f"{name}-{i}", utc(2026, 3, 2) + i * SECOND, PLATE, name)
        for name in ("a", "b")
        for i in range(3)
    ]
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 3, 2)) as h:
        await h.arrive(calls)
        only_a = await h.settle(utc(2026, 3, 3), account="a")
        assert [ln.account for ln in await h.lines()] == ["a"]
        more = [call(CATALOG, f"{n}-late", utc(2026, 3, 2, 12), PLATE, n) for n in ("a", "b")]
        await h.arrive(more, at=utc(2026, 3, 3, 0, 30))
        everyone = await h.settle(utc(2026, 3, 3, 1))
        got = {(ln.account, ln.calls) for ln in await h.lines()}
    assert (only_a.records, everyone.records) == (3, 5)
    assert got == {("a", 4), ("b", 4)}


async def test_settle_month_stops_at_the_end_of_that_month(ledger: LedgerAt) -> None:
    calls = [call(CATALOG, "feb", utc(2026, 2, 20)), call(CATALOG, "mar", utc(2026, 3, 10))]
    async with Harness(ledger("l.db"), CATALOG, utc(2026, 2, 20)) as h:
        await h.arrive(calls)
        capped = await h.settle(utc(2026, 3, 11), month=FEB)
        assert [str(ln.billed) for ln in await h.lines()] == ["2026-02"]
        rest = await h.settle(utc(2026, 3, 11))
    assert capped.horizon == FEB.end and (capped.records, rest.records) == (1, 1)


async def test_an_adjustment_deferred_by_an_account_pass_is_settled_by_the_next_pass(
    ledger: LedgerAt,
) -> None:
    # A January record arrives on 02-10 12:00 (January closed), exactly one lag before an
    # account pass: deferred (not older than the lag), its classification stored. The next
    # pass over every account reads it behind the global marks among the other accounts'
    # records: it must still be settled, not skipped as the account's own business.
    async with Harness(ledger("d.db"), CATALOG, utc(2026, 1, 20)) as h:
        await h.arrive([call(CATALOG, "other", utc(2026, 1, 20), account="other")])
        await h.settle(utc(2026, 2, 10, 11))
        await h.arrive([call(CATALOG, "late", utc(2026, 1, 25))], at=utc(2026, 2, 10, 12))
        deferred = await h.settle(utc(2026, 2, 10, 12, 1), account="acct")
        await h.settle(utc(2026, 2, 11))
        lines = await h.lines()
    assert deferred.deferred == 1
    assert [(ln.account, ln.calls, ln.adjustment) for ln in lines if ln.account == "acct"] == [
        ("acct", 1, True)
    ]
