"""Month to date and the projected bill: Stripe's and OpenMeter's "invoice preview".

**To date** = what settlement stored for the month (its bill lines) + the calls of the
month it has not settled yet, priced the way the next settlement would price them: the
pure rating core (``deduct``) run on the account's saved deduction state and plan book,
in memory. Nothing is written; the real settlement later decides the bill.

Not yet settled are the account's records of the month that occurred before ``now`` and
either at or after the settled horizon, or that landed after the settled ``seq`` mark
(late records): settlement's own marks (docs/rating.md).

**Projection** (docs/reports.md, "Projected bill"):

1. ``elapsed`` = (now - month start) / (month end - month start), exact, in
   microseconds: the share of the UTC+8 calendar month gone.
2. Per item, the calls that occurred in the month so far (settled + pending; adjustments
   from earlier months are not usage of this month and are left out of the rate) are
   projected linearly: ``projected = floor(calls * month / elapsed)`` (whole calls,
   rounded down).
3. The extra calls (``projected - calls``) are spread over the rest of the month, day by
   day of UTC+8 in proportion to each day's remaining length (cumulative floor, so they
   add up exactly), each day's share placed at that day's start (``now`` for today).
4. They are priced by ``deduct`` again, continuing from the state after the pending
   calls: plan points run out, graduated tiers step up, QPS subscriptions and plans end
   or start, exactly as real calls at those times would.

Limits: a linear rate (no weekday or growth pattern; one busy morning on day 1 projects
a month of busy mornings); calls within a day are placed at its start (a plan expiring
mid-day covers that day's share); records arriving late into a closed month
(adjustments) and plans bought after ``now`` are not foreseen; a pending record older
than the last settled one is priced against the state as it is now, as settlement's
adjustment path would. The cost is O(items x days) records for the projection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from ..catalog import Catalog, default_catalog
from ..clock import BEIJING
from ..ledger.records import CallRecord
from ..ledger.store import StoreError
from ..rating.bills import build_bill
from ..rating.deduction import deduct
from ..rating.errors import DeductionError
from ..rating.money import exact_sum
from ..rating.months import Month
from ..rating.open import MoneyRatingStore
from ..rating.pricing import month_total
from ..rating.results import DeductionResult, SourceKind
from ..rating.state import DeductionState
from ..rating.store import AccountProgress, BillLine, PlanBook, Progress
from ._db import LedgerSource, open_ledger
from .monthly import month_of
from .results import ItemPreview, MonthPreview

__all__ = ["month_preview"]

_MICRO = timedelta(microseconds=1)
_ATTEMPTS = 5


async def _marks(
    ratings: MoneyRatingStore, account: str
) -> tuple[Progress | None, AccountProgress | None]:
    return await ratings.progress(), (await ratings.accounts(account=account)).get(account)


def _payg_by_item(result: DeductionResult) -> dict[str, list[Decimal]]:
    found: dict[str, list[Decimal]] = {}
    for ln in result.lines:
        if ln.kind is SourceKind.PAYG:
            found.setdefault(ln.item, []).append(ln.amount)
    return found


def _calls_by_item(result: DeductionResult) -> dict[str, int]:
    found: dict[str, int] = {}
    for ln in result.lines:
        found[ln.item] = found.get(ln.item, 0) + ln.calls
    return found


def _day_starts(now: datetime, end: datetime) -> list[datetime]:
    """``now`` and every UTC+8 midnight after it before ``end`` (aware UTC)."""
    local = now.astimezone(BEIJING)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    starts = [now]
    while midnight < end:
        starts.append(midnight)
        midnight += timedelta(days=1)
    return starts


def _spread(
    account: str, extra: dict[str, int], now: datetime, end: datetime, catalog: Catalog
) -> list[CallRecord]:
    """The projected extra calls as records, spread over the days left (step 3).

    One record object per (item, day), repeated by reference: ``deduct`` reads only the
    fields, so a million projected calls cost a list of pointers, not a million objects.
    """
    items = catalog.by_item()
    starts = _day_starts(now, end)
    rest = (end - now) // _MICRO
    records: list[CallRecord] = []
    for item, n in sorted(extra.items()):
        if n <= 0:
            continue
        it = items.get(item)
        if it is None:
            raise DeductionError(f"item {item!r} is not in the catalog: cannot project its price")
        placed = 0
        for i, at in enumerate(starts):
            upto = end if i + 1 == len(starts) else starts[i + 1]
            due = n * ((upto - now) // _MICRO) // rest
            k, placed = due - placed, due
            if k > 0:
                rec = CallRecord(
                    id=f"~projected:{item}:{i:03d}",
                    request_id=None,
                    account=account,
                    access_key_id="",
                    category=it.category,
                    action=it.action,
                    version=it.version,
                    item=item,
                    occurred_at=at,
                    status=200,
                    error_code=None,
                    latency_ms=0.0,
                )
                records.extend([rec] * k)
    return records


def _price(
    account: str,
    month: Month,
    now: datetime,
    settled: Sequence[BillLine],
    pending: list[CallRecord],
    book: PlanBook,
    state: DeductionState,
    catalog: Catalog,
) -> tuple[Decimal, list[ItemPreview]]:
    """Steps 1 to 4 (pure: run in a worker thread, the deductions are CPU work)."""
    first = deduct(pending, book.plans, book.subscriptions, catalog, state=state)
    elapsed_us = max(0, (min(now, month.end) - month.start) // _MICRO)
    month_us = (month.end - month.start) // _MICRO
    settled_calls: dict[str, int] = {}
    usage_calls: dict[str, int] = {}  # occurred in this month: the rate's base
    settled_payg: dict[str, list[Decimal]] = {}
    categories: dict[str, str] = {}
    for ln in settled:
        settled_calls[ln.item] = settled_calls.get(ln.item, 0) + ln.calls
        categories[ln.item] = ln.category
        if not ln.adjustment:
            usage_calls[ln.item] = usage_calls.get(ln.item, 0) + ln.calls
        if ln.kind is SourceKind.PAYG:
            settled_payg.setdefault(ln.item, []).append(ln.amount)
    pending_calls = _calls_by_item(first)
    pending_payg = _payg_by_item(first)
    for pl in first.lines:
        categories[pl.item] = pl.category
    for item, n in pending_calls.items():
        usage_calls[item] = usage_calls.get(item, 0) + n
    projected_payg: dict[str, list[Decimal]] = {}
    extra: dict[str, int] = {}
    if 0 < elapsed_us < month_us:
        extra = {i: n * month_us // elapsed_us - n for i, n in usage_calls.items()}
        more = deduct(
            _spread(account, extra, now, month.end, catalog),
            book.plans,
            book.subscriptions,
            catalog,
            state=first.state,
        )
        projected_payg = _payg_by_item(more)
    items = []
    for item in sorted(set(settled_calls) | set(pending_calls)):
        settled_amount = exact_sum(settled_payg.get(item, ()))
        pending_amount = exact_sum(pending_payg.get(item, ()))
        items.append(
            ItemPreview(
                item=item,
                category=categories[item],
                settled_calls=settled_calls.get(item, 0),
                pending_calls=pending_calls.get(item, 0),
                projected_calls=settled_calls.get(item, 0)
                + pending_calls.get(item, 0)
                + extra.get(item, 0),
                settled_amount=settled_amount,
                pending_amount=pending_amount,
                projected_amount=exact_sum(
                    [settled_amount, pending_amount, *projected_payg.get(item, ())]
                ),
            )
        )
    return Decimal(elapsed_us) / Decimal(month_us), items


async def month_preview(
    ledger: LedgerSource,
    account: str,
    month: Month | str,
    now: datetime,
    *,
    catalog: Catalog | None = None,
) -> MonthPreview:
    """``account``'s billing ``month`` so far (settled + not yet settled, priced as
    settlement would) and projected to its end at the current rate (module docstring).

    ``UnknownAccount`` for an account never seen, ``UnknownMonth`` for a month that has
    not started at ``now``; ``DeductionError`` for calls the catalog cannot price.
    """
    wanted = month_of(month, now)
    catalog = catalog or default_catalog()
    async with open_ledger(ledger) as db:
        await db.reads.require_account(account)
        for _ in range(_ATTEMPTS):
            marks = await _marks(db.ratings, account)
            bill = await build_bill(db.ratings, account, wanted)
            book = await db.ratings.plan_book(account=account)
            progress, row = marks
            # The seq mark that goes with bill.settled_until (build_bill's rule).
            seen = 0 if progress is None else progress.seen
            if row is not None:
                seen = max(seen, row.seen)
            horizon = bill.settled_until
            pending = await db.reads.pending_calls(
                account, wanted.start, min(now, wanted.end), horizon, seen
            )
            # Each read is its own snapshot: a settlement committing between them could
            # count a call both as settled and as pending (or neither). Same marks after
            # the reads as before them: nothing was settled in between.
            if await _marks(db.ratings, account) == marks:
                break
        else:
            raise StoreError("settlement kept moving during the preview; try again")
    state = DeductionState() if row is None else row.state
    elapsed, items = await asyncio.to_thread(
        _price, account, wanted, now, bill.lines, pending, book, state, catalog
    )
    settled = exact_sum(i.settled_amount for i in items)
    pending_amount = exact_sum(i.pending_amount for i in items)
    to_date = [i.to_date_amount for i in items]
    projected = None
    projected_due = None
    if elapsed > 0:
        projected = exact_sum(i.projected_amount for i in items)
        projected_due = month_total([projected]).charged
    return MonthPreview(
        account=account,
        month=wanted,
        now=now,
        settled_until=bill.settled_until,
        elapsed=elapsed,
        items=tuple(items),
        settled=settled,
        pending=pending_amount,
        to_date=exact_sum(to_date),
        to_date_due=month_total(to_date).charged,
        projected=projected,
        projected_due=projected_due,
    )
