"""A month's deduction (which plan or tier settled how many calls) and its bill.

Both are what settlement stored (``rating_lines``), read through rating's bill builder:
nothing is recomputed here, so the report is the bill.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from ..rating.bills import Bill, build_bill
from ..rating.errors import MonthError
from ..rating.money import exact_sum
from ..rating.months import Month, billing_month, parse_month
from ..rating.plans import QpsSubscription
from ..rating.results import SourceKind
from ..rating.store import BillLine
from ._db import LedgerSource, open_ledger
from .errors import UnknownMonth
from .results import (
    BillLineView,
    BillPlanView,
    BillReport,
    DeductionLine,
    DeductionSource,
    MonthDeduction,
)

__all__ = ["bill", "month_deduction", "month_of"]


def month_of(month: Month | str, now: datetime | None = None) -> Month:
    """``month`` as a ``Month``; ``UnknownMonth`` when malformed or (given ``now``) not
    started yet at ``now``."""
    if isinstance(month, str):
        try:
            month = parse_month(month)
        except MonthError as exc:
            raise UnknownMonth(str(exc)) from None
    if now is not None and month > billing_month(now):
        raise UnknownMonth(f"billing month {month} has not started yet")
    return month


def _line(ln: BillLine) -> DeductionLine:
    return DeductionLine(
        item=ln.item,
        category=ln.category,
        source=ln.kind.value,
        plan_id=ln.plan_id,
        tier=ln.source.tier,
        unit_price=ln.source.unit_price,
        origin=ln.origin,
        calls=ln.calls,
        points=ln.points,
        amount=ln.amount,
    )


async def _bill(ledger: LedgerSource, account: str, month: Month) -> Bill:
    async with open_ledger(ledger) as db:
        await db.reads.require_account(account)
        found = await build_bill(db.ratings, account, month)
    if any(ln.account != account for ln in found.lines):  # cannot happen: filtered in SQL
        raise RuntimeError("a bill carried another account's line")
    return found


async def month_deduction(
    ledger: LedgerSource, account: str, month: Month | str, *, now: datetime | None = None
) -> MonthDeduction:
    """The settled lines of ``account``'s billing ``month``, and per source (plan, tier
    price, free, QPS) the calls, points and exact amount, all items together."""
    wanted = month_of(month, now)
    found = await _bill(ledger, account, wanted)
    lines = tuple(_line(ln) for ln in found.lines)
    per: dict[tuple[int, str, int, Decimal], list[BillLine]] = {}
    for ln in found.lines:
        per.setdefault(ln.source.sort_key, []).append(ln)
    sources = tuple(
        DeductionSource(
            source=group[0].kind.value,
            plan_id=group[0].plan_id,
            tier=group[0].source.tier,
            unit_price=group[0].source.unit_price,
            calls=sum(ln.calls for ln in group),
            points=exact_sum(ln.points for ln in group),
            amount=exact_sum(ln.amount for ln in group),
        )
        for _, group in sorted(per.items())
    )
    return MonthDeduction(
        account=account,
        month=wanted,
        lines=lines,
        sources=sources,
        calls=sum(ln.calls for ln in lines),
        points=exact_sum(ln.points for ln in lines),
        amount=exact_sum(ln.amount for ln in found.lines if ln.kind is SourceKind.PAYG),
        settled_until=found.settled_until,
    )


async def bill(
    ledger: LedgerSource, account: str, month: Month | str, *, now: datetime | None = None
) -> BillReport:
    """``account``'s bill for ``month`` as settled so far (rating's ``build_bill``)."""
    wanted = month_of(month, now)
    found = await _bill(ledger, account, wanted)
    plans = []
    for pb in found.plans:
        plan = pb.plan
        categories: tuple[str, ...]
        if isinstance(plan, QpsSubscription):
            kind, categories, points = "qps", (plan.category,), None
        else:
            kind, categories, points = plan.kind.value, tuple(sorted(plan.categories)), plan.points
        plans.append(
            BillPlanView(plan.id, kind, categories, points, pb.remaining, plan.start, plan.end)
        )
    return BillReport(
        account=account,
        month=wanted,
        lines=tuple(BillLineView(_line(ln), ln.adjustment) for ln in found.lines),
        plans=tuple(plans),
        exact=found.total.exact,
        recorded=found.total.recorded,
        amount_due=found.amount_due,
        rounding=found.rounding,
        settled_until=found.settled_until,
        final=found.final,
    )
