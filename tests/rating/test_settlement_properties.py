"""Settlement properties over random plans, call streams, arrival delays and settle times.

The core's random worlds (tests/rating/test_deduction_properties.py: small tiers, a Beijing
month edge and a price change within three hours) are replayed into a real SQLite ledger
as they would arrive, with a grace of 30 minutes, so January closes inside the window and
some records arrive after it: adjustments. Plans are bought and refunded while settlement
runs, sometimes backdated into what is settled; some passes settle one account only.

A second window opens March: March calls settled as they arrive, while records of January
(and February) keep arriving in the 30 minutes February is still open. Some plans last into
March, so those adjustments (billed in February) contend for points with March records
settled before they arrived. The bills must be the per-call reading of the rules with each
record taken at its effective time: its occurrence, or an adjustment's arrival.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering_middleware.ledger import CallRecord
from metering_middleware.rating import (
    BalanceEntry,
    EntryKind,
    Month,
    Plan,
    Source,
    billing_month,
    build_bill,
)

from .helpers import Reference, call, plan, reference_deduct
from .settle_support import Harness
from .test_deduction_properties import BASE, CATALOG, ITEMS, WINDOW, World, at, worlds

GRACE = timedelta(minutes=30)
LAG = timedelta(seconds=60)
MARCH = int((Month(2026, 3).start - BASE) / timedelta(minutes=1))  # minutes from BASE
LONG = MARCH + 120  # a plan's end that lasts through the March window
CONTENDERS = ["c", "c", "c", "a"]  # "c" has calls only in March and late ones of January
CHARGED = [it for it in ITEMS if not CATALOG.by_item()[it].free]
FINAL = at(MARCH + 300)  # after every arrival, and after February closed too

Event = tuple[datetime, int, Any]  # (time, order at equal times, payload)


@st.composite
def streams(draw: st.DrawFn) -> tuple[World, list[Event]]:
    """A world, and the events that make it happen: purchases, refunds, arrivals, settles."""
    world = draw(worlds())
    # Some plans last into March, where adjustments and March records contend for them.
    world.plans = [replace(p, end=at(LONG)) if draw(st.booleans()) else p for p in world.plans]
    for i in range(draw(st.integers(1, 2))):  # and one or two small ones, from January on
        item = CATALOG.by_item()[draw(st.sampled_from(CHARGED))]
        general = draw(st.booleans())
        cats = {"ocr", "facebody"} if general else {item.category}
        points = item.coefficient * draw(st.sampled_from([1, 1, 2, 3]))  # a few calls of it
        account = draw(st.sampled_from(CONTENDERS))
        world.plans.append(
            plan(
                f"L{i}",
                "general" if general else "single",
                cats,
                str(points),
                at(-30),
                at(LONG),
                account=account,
            )
        )
    march = draw(
        st.lists(
            st.tuples(st.integers(0, 40), st.sampled_from(CONTENDERS), st.sampled_from(CHARGED)),
            min_size=1,
            max_size=12,
        )
    )
    world.calls += [
        call(CATALOG, f"m{i:02d}", at(MARCH + m), item, acct)
        for i, (m, acct, item) in enumerate(march)
    ]
    # January calls that will arrive in March (below): adjustments billed in February.
    january = draw(
        st.lists(
            st.tuples(st.integers(0, 59), st.sampled_from(CONTENDERS), st.sampled_from(CHARGED)),
            max_size=4,
        )
    )
    late = [
        call(CATALOG, f"j{i:02d}", at(m), item, acct) for i, (m, acct, item) in enumerate(january)
    ]
    world.calls += late
    events: list[Event] = []
    every: list[Plan] = [*world.plans, *world.subs]
    for p in every:
        bought = p.start + timedelta(minutes=draw(st.sampled_from([0, 0, 5, 60])))
        events.append((bought, 0, ("buy", replace(p, refunded_at=None))))
        if p.refunded_at is not None:
            cash = Decimal(draw(st.sampled_from(["0", "1.5", "7"])))
            events.append((max(bought, p.refunded_at), 1, ("refund", p.id, p.refunded_at, cash)))
    # Top-ups at random times: they move balances and standing, never what is rated.
    for i, (m, acct) in enumerate(
        draw(st.lists(st.tuples(st.integers(-10, MARCH + 200), st.sampled_from("abc")), max_size=3))
    ):
        events.append(
            (at(m), 1, ("topup", f"t{i}", acct, Decimal(draw(st.sampled_from(["1", "0.05"])))))
        )
    delays = st.one_of(st.integers(1, 90), st.integers(91, 200 * 60))  # seconds
    # A record of the first window may arrive in March, in the grace days of February.
    in_march = st.integers(1, 45 * 60).map(lambda s: at(MARCH) + timedelta(seconds=s))
    by_arrival: dict[datetime, list[CallRecord]] = {}
    for record in world.calls:
        if record in late or (record.occurred_at < at(MARCH) and draw(st.integers(0, 4)) == 0):
            arrival = draw(in_march)
        else:
            arrival = record.occurred_at + timedelta(seconds=draw(delays))
        by_arrival.setdefault(arrival, []).append(record)
    events += [(when, 2, ("arrive", records)) for when, records in by_arrival.items()]
    accounts = st.sampled_from([None, None, "a", "b"])  # some passes settle one account
    first = st.tuples(st.integers(-10, WINDOW + 250), accounts)
    second = st.tuples(st.integers(MARCH, MARCH + 120), accounts)
    for m, account in draw(st.lists(first, min_size=1, max_size=6)):
        events.append((at(m), 3, ("settle", account)))
    for m, account in draw(st.lists(second, max_size=6)):
        events.append((at(m), 3, ("settle", account)))
    events.append((FINAL, 3, ("settle", None)))
    events.sort(key=lambda e: (e[0], e[1]))
    return world, events


async def replay(path: Path, events: list[Event], *, passes: bool) -> dict[str, Any]:
    """Play the events; with ``passes`` false, only the final settlement runs."""
    async with Harness(path, CATALOG, at(-60)) as h:
        for when, _, (kind, *args) in events:
            if when > h.clock.now():
                h.clock.set(when)
            if kind == "buy":
                await h.rating.add_plan(args[0], when)
            elif kind == "refund":
                await h.rating.add_refund(args[0], args[1], when, args[2])
            elif kind == "topup":
                entry = BalanceEntry(
                    f"topup:{args[0]}", args[1], EntryKind.TOPUP, args[2], when, when
                )
                await h.rating.post_entries([entry], when)
            elif kind == "arrive":
                await h.arrive(args[0], at=when)
            elif passes or when == FINAL:
                await h.settle(lag=LAG, grace=GRACE, account=args[0])
        settled = await h.snapshot()
        settled["money"] = await money(h, events)
        report = await h.rerate(billing_month(at(-60)))
        again = await h.snapshot()
        again["money"] = await money(h, events)
        assert again == settled, "re-rating changed the bills or the balances"
        assert report.records == sum(ln.calls for ln in settled["lines"])
        return settled


async def money(h: Harness, events: list[Event]) -> dict[str, Any]:
    """Balances, and what the entries add up to per (account, month, kind): independent of
    how many entries (passes) it took. Checks each balance against the bills."""
    balances = await h.rating.balances()
    sums: dict[tuple[str, str, str], Decimal] = {}
    for account in balances:
        for e in await h.rating.balance_entries(account):
            key = (account, str(e.month), e.kind.value)
            sums[key] = sums.get(key, Decimal(0)) + e.amount
    # balance = top-ups - purchases + refunds - what the bills charge (a closed month its
    # amount due, an open one its exact pay-as-you-go so far)
    expected: dict[str, Decimal] = {}
    for _when, _, (kind, *args) in events:
        if kind == "topup":
            expected[args[1]] = expected.get(args[1], Decimal(0)) + args[2]
        elif kind == "buy":
            p = args[0]
            expected[p.account] = expected.get(p.account, Decimal(0)) - p.price_paid
    book = await h.rating.plan_book()
    for _when, _, (kind, *args) in events:
        if kind == "refund" and args[2] > 0:
            found = book.find(args[0])
            assert found is not None
            expected[found.account] = expected.get(found.account, Decimal(0)) + args[2]
    months = {(ln.account, ln.billed) for ln in await h.rating.lines()}
    for account, month in months:
        bill = await build_bill(h.rating, account, month, grace=GRACE)
        due = bill.amount_due if bill.final else bill.total.exact
        expected[account] = expected.get(account, Decimal(0)) - due
    assert {a: v for a, v in balances.items() if v} == {a: v for a, v in expected.items() if v}
    return {"balances": balances, "sums": {k: v for k, v in sums.items() if v}}


def arrivals(events: list[Event]) -> dict[str, datetime]:
    return {r.id: when for when, _, (kind, *args) in events if kind == "arrive" for r in args[0]}


def refund_cuts(events: list[Event]) -> dict[str, datetime]:
    """When each refund cuts off late records: its time, or its recording if later."""
    return {args[0]: max(when, args[1]) for when, _, (kind, *args) in events if kind == "refund"}


def after_refund(world: World, cuts: dict[str, datetime], r: CallRecord, arrived: datetime) -> bool:
    """It arrived after the refund of a plan of its account valid when it occurred."""
    every: list[Plan] = [*world.plans, *world.subs]
    return any(
        p.account == r.account
        and p.refunded_at is not None
        and p.start <= r.occurred_at < p.effective_end
        and cuts[p.id] <= arrived
        for p in every
    )


def adjusted(record: CallRecord, arrived: datetime, late_after_refund: bool = False) -> bool:
    """Whether it is deducted at its arrival (an adjustment): it arrived after its month
    closed, or after a refund that ends a plan it occurred under."""
    return late_after_refund or arrived >= billing_month(record.occurred_at).end + GRACE


LineKey = tuple[str, Month, Month, str, Source]  # account, billed, origin, item, source


def expected_lines(world: World, events: list[Event]) -> tuple[Counter[LineKey], Reference]:
    """The rules read call by call, each record at its effective time (an adjustment at its
    arrival: after everything settled before it arrived), billed where settlement bills it."""
    arrived = arrivals(events)
    cuts = refund_cuts(events)

    def adj(r: CallRecord) -> bool:
        return adjusted(r, arrived[r.id], after_refund(world, cuts, r, arrived[r.id]))

    def effective(r: CallRecord) -> datetime:
        return arrived[r.id] if adj(r) else r.occurred_at

    def gone(r: CallRecord, p: Plan) -> bool:
        return adj(r) and p.id in cuts and cuts[p.id] <= arrived[r.id]

    ref = reference_deduct(
        world.calls,
        world.plans,
        world.subs,
        CATALOG,
        order=lambda r: (effective(r), r.occurred_at, r.id),
        gone=gone,
    )
    out: Counter[LineKey] = Counter()
    for r in world.calls:
        origin = billing_month(r.occurred_at)
        billed = max(origin, billing_month(arrived[r.id] - GRACE)) if adj(r) else origin
        out[(r.account, billed, origin, r.item, ref.sources[r.id])] += 1
    return out, ref


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_many_passes_one_pass_and_rerate_give_the_same_bills(
    stream: tuple[World, list[Event]],
) -> None:
    world, events = stream
    with tempfile.TemporaryDirectory() as tmp:
        many = asyncio.run(replay(Path(tmp) / "many.db", events, passes=True))
        one = asyncio.run(replay(Path(tmp) / "one.db", events, passes=False))
    assert many == one
    lines = many["lines"]
    # Every record settled, by exactly one source: the lines count each call once.
    assert sum(ln.calls for ln in lines) == len({c.id for c in world.calls})
    arrived = arrivals(events)
    cuts = refund_cuts(events)
    late = {
        r.id
        for r in world.calls
        if adjusted(r, arrived[r.id], after_refund(world, cuts, r, arrived[r.id]))
    }
    assert {a.call_id for a in many["adjustments"]} == late
    # The bills are the plain per-call reading of the rules, adjustments at their arrival.
    want, ref = expected_lines(world, events)
    got: Counter[LineKey] = Counter()
    for ln in lines:
        got[(ln.account, ln.billed, ln.origin, ln.item, ln.source)] += ln.calls
    assert got == want
    remaining = {p.id: p.points for p in world.plans}
    for state in many["states"].values():
        remaining.update({k: Decimal(v) for k, v in state["remaining"].items()})
    assert remaining == ref.remaining


def test_the_window_crosses_a_closing_month() -> None:
    # The property needs January to close inside the window (else no adjustments happen).
    assert billing_month(BASE) == Month(2026, 1)
    assert Month(2026, 1).end + GRACE < at(WINDOW + 250) < at(MARCH) < FINAL
    # And adjustments arriving in March's first 30 minutes are billed in February.
    assert billing_month(at(MARCH) - GRACE) == Month(2026, 2) < billing_month(at(MARCH))
    assert Month(2026, 2).end + GRACE < FINAL
