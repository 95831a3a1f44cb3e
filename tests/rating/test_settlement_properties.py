"""Settlement properties over random plans, call streams, arrival delays and settle times.

The core's random worlds (tests/rating/test_deduction_properties.py: small tiers, a Beijing
month edge and a price change within three hours) are replayed into a real SQLite ledger
as they would arrive, with a grace of 30 minutes, so January closes inside the window and
some records arrive after it: adjustments. Plans are bought and refunded while settlement
runs, sometimes backdated into what is settled; some passes settle one account only.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering_middleware.ledger import CallRecord
from metering_middleware.rating import Month, Plan, SourceKind, billing_month

from .helpers import reference_deduct
from .settle_support import Harness
from .test_deduction_properties import BASE, CATALOG, WINDOW, World, at, worlds

GRACE = timedelta(minutes=30)
LAG = timedelta(seconds=60)
FINAL = at(WINDOW + 400)  # after every arrival, and after February closed too

Event = tuple[datetime, int, Any]  # (time, order at equal times, payload)


@st.composite
def streams(draw: st.DrawFn) -> tuple[World, list[Event]]:
    """A world, and the events that make it happen: purchases, refunds, arrivals, settles."""
    world = draw(worlds())
    events: list[Event] = []
    every: list[Plan] = [*world.plans, *world.subs]
    for p in every:
        bought = p.start + timedelta(minutes=draw(st.sampled_from([0, 0, 5, 60])))
        events.append((bought, 0, ("buy", replace(p, refunded_at=None))))
        if p.refunded_at is not None:
            events.append((max(bought, p.refunded_at), 1, ("refund", p.id, p.refunded_at)))
    delays = st.one_of(st.integers(1, 90), st.integers(91, 200 * 60))  # seconds
    by_arrival: dict[datetime, list[CallRecord]] = {}
    for record in world.calls:
        arrival = record.occurred_at + timedelta(seconds=draw(delays))
        by_arrival.setdefault(arrival, []).append(record)
    events += [(when, 2, ("arrive", records)) for when, records in by_arrival.items()]
    settles = st.tuples(st.integers(-10, WINDOW + 250), st.sampled_from([None, None, "a", "b"]))
    for m, account in draw(st.lists(settles, min_size=1, max_size=6)):
        events.append((at(m), 3, ("settle", account)))  # some passes settle one account
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
                await h.rating.add_refund(args[0], args[1], when, None)
            elif kind == "arrive":
                await h.arrive(args[0], at=when)
            elif passes or when == FINAL:
                await h.settle(lag=LAG, grace=GRACE, account=args[0])
        settled = await h.snapshot()
        report = await h.rerate(billing_month(at(-60)))
        assert await h.snapshot() == settled, "re-rating changed the bills"
        assert report.records == sum(ln.calls for ln in settled["lines"])
        return settled


def arrived_after_close(events: list[Event]) -> bool:
    for when, _, (kind, *args) in events:
        if kind == "arrive":
            for record in args[0]:
                if when >= billing_month(record.occurred_at).end + GRACE:
                    return True
    return False


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
    if arrived_after_close(events):
        assert any(ln.adjustment for ln in lines)
        return
    # Without adjustments the bills are the plain per-call reading of the rules.
    assert not many["adjustments"]
    ref = reference_deduct(world.calls, world.plans, world.subs, CATALOG)
    payg: dict[tuple[str, str], Decimal] = {}
    for ln in lines:
        if ln.kind is SourceKind.PAYG:
            key = (ln.account, str(ln.billed))
            payg[key] = payg.get(key, Decimal(0)) + ln.amount
    assert {k: v for k, v in payg.items() if v} == {k: v for k, v in ref.payg.items() if v}
    remaining = {p.id: p.points for p in world.plans}
    for state in many["states"].values():
        remaining.update({k: Decimal(v) for k, v in state["remaining"].items()})
    assert remaining == ref.remaining


def test_the_window_crosses_a_closing_month() -> None:
    # The property needs January to close inside the window (else no adjustments happen).
    assert billing_month(BASE) == Month(2026, 1)
    assert Month(2026, 1).end + GRACE < at(WINDOW + 250) < FINAL
