"""An account's bill for one billing month, from what settlement stored.

Lines are exact; only the month's pay-as-you-go total is rounded (recorded to 3 places,
charged to 2, both down: billing rules section 5), and the difference is one rounding line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from .months import Month
from .plans import ResourcePlan
from .pricing import MonthTotal, month_total
from .results import SourceKind
from .settlement import DEFAULT_GRACE
from .store import BillLine, Plan, RatingStore

__all__ = ["Bill", "PlanBalance", "build_bill"]


@dataclass(frozen=True, slots=True)
class PlanBalance:
    """A plan valid during the month, with its points left at the month's end (or after
    the last settlement, for a month still in progress). ``None`` for QPS subscriptions."""

    plan: Plan
    remaining: Decimal | None


@dataclass(frozen=True, slots=True)
class Bill:
    account: str
    month: Month
    lines: tuple[BillLine, ...]  # regular lines first, then adjustments
    total: MonthTotal  # pay-as-you-go: exact, recorded (3 places), charged (2 places)
    plans: tuple[PlanBalance, ...]
    settled_until: datetime | None  # records effective before it are in the bill
    final: bool  # the month has closed and settlement has passed its close

    @property
    def amount_due(self) -> Decimal:
        """What the month charges: the pay-as-you-go total rounded down to fen."""
        return self.total.charged

    @property
    def rounding(self) -> Decimal:
        """The (non-positive) line that makes the exact lines add up to ``amount_due``."""
        return self.total.rounding


async def build_bill(
    store: RatingStore, account: str, month: Month, *, grace: timedelta = DEFAULT_GRACE
) -> Bill:
    """The bill of ``account`` for ``month`` as settled so far (empty if nothing is)."""
    lines = await store.lines(account=account, month=month)
    lines.sort(key=lambda ln: (ln.adjustment, ln.origin, ln.item, ln.source.sort_key))
    total = month_total(ln.amount for ln in lines if ln.kind is SourceKind.PAYG)
    rows = await store.accounts(account=account)
    marks = await store.progress()
    row = rows.get(account)
    settled_until = marks.horizon if marks is not None else None
    if row is not None and (marks is None or row.seen > marks.seen):
        settled_until = row.horizon
    elif row is not None and marks is not None and row.seen == marks.seen:
        # Same records seen: both marks hold (an account with nothing new keeps an old row).
        settled_until = max(row.horizon, marks.horizon)
    # Points left at the month's end: the checkpoint of the next month if settlement has
    # gone past this one (one exists for every month up to the last one settled), else now.
    state = row.state if row is not None else None
    if row is not None and row.frontier is not None and row.frontier[0] > month:
        found = await store.checkpoint(account, month.next())
        if found is not None:
            state = found[1]
    book = await store.plan_book(account=account)
    every: list[Plan] = [*book.plans, *book.subscriptions]
    balances = []
    for plan in sorted(every, key=lambda p: (p.ordered_at, p.id)):
        if not (plan.start < month.end and plan.effective_end > month.start):
            continue
        remaining = None
        if isinstance(plan, ResourcePlan):
            remaining = plan.points if state is None else state.remaining.get(plan.id, plan.points)
        balances.append(PlanBalance(plan, remaining))
    final = settled_until is not None and settled_until >= month.end + grace
    return Bill(account, month, tuple(lines), total, tuple(balances), settled_until, final)
