"""Accounts: the list with search, one account's overview, its plans.

Balances, standing and settings are rating's own reads (the rating store); the
month's settled spend and the settled horizon come from rating's bill builder, so the
overview and the bill cannot disagree.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from ..rating.balances import Standing
from ..rating.bills import build_bill
from ..rating.months import billing_month
from ..rating.plans import QpsSubscription, ResourcePlan
from ..rating.purchases import list_plans
from ._db import LedgerSource, open_ledger
from .errors import ReportError
from .results import AccountOverview, AccountPage, AccountSummary, PlanStatus

__all__ = ["MAX_PAGE", "account_overview", "accounts", "plan_balances"]

#: The largest page of the account list (the admin API's largest page too).
MAX_PAGE = 1000


def _standing(s: Standing | None) -> tuple[str, datetime | None]:
    """rating's rule (cash.balance_view): a hold wins, then suspension, then overdue."""
    if s is None:
        return "good", None
    if s.held_at is not None:
        return "held", s.held_at
    if s.suspended_at is not None:
        return "suspended", s.suspended_at
    return "overdue", s.overdue_since


async def account_overview(ledger: LedgerSource, account: str, now: datetime) -> AccountOverview:
    """Balance, standing, monthly cap, the billing month of ``now``'s settled spend and the
    low-balance threshold of ``account``; ``UnknownAccount`` for an account never seen."""
    async with open_ledger(ledger) as db:
        _, enabled = await db.reads.key_counts(account)
        balance = (await db.ratings.balances(account=account)).get(account, Decimal(0))
        held = (await db.ratings.standings(account=account)).get(account)
        standing, since = _standing(held)
        settings = (await db.ratings.account_settings(account=account)).get(account)
        month = billing_month(now)
        bill = await build_bill(db.ratings, account, month)
    low = None if settings is None else settings.low_balance
    return AccountOverview(
        account=account,
        enabled=enabled > 0,
        balance=balance,
        standing=standing,
        standing_since=since,
        held_reason=None if held is None else held.held_reason,
        monthly_cap=None if settings is None else settings.monthly_cap,
        month=month,
        month_spend=bill.total.exact,
        low_balance=low,
        low_balance_reached=low is not None and balance < low,
        settled_until=bill.settled_until,
    )


async def accounts(
    ledger: LedgerSource,
    *,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
    after: str | None = None,
) -> AccountPage:
    """Known accounts (AccessKeys ever created, or balances, or plans) sorted by name,
    ``limit`` from ``offset`` (or, for keyset pages that stay stable while accounts are
    added, the names after ``after``), with balance and standing. ``search`` keeps the
    names that contain it, ignoring case (a plain substring: no wildcards)."""
    if isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise ReportError(f"limit must be 1..{MAX_PAGE}, got {limit!r}")
    if isinstance(offset, bool) or offset < 0:
        raise ReportError(f"offset must be 0 or more, got {offset!r}")
    if after is not None and offset:
        raise ReportError("give an offset or a name to start after, not both")
    needle = search.strip() if search else None
    async with open_ledger(ledger) as db:
        # One row more than asked tells whether a next page exists.
        total, rows = await db.reads.account_page(needle or None, limit + 1, offset, after)
        balances = await db.ratings.balances()
        standings = await db.ratings.standings()
    items = tuple(
        AccountSummary(
            account=name,
            enabled=enabled > 0,
            keys=keys,
            enabled_keys=enabled,
            balance=balances.get(name, Decimal(0)),
            standing=_standing(standings.get(name))[0],
        )
        for name, keys, enabled in rows[:limit]
    )
    next_after = items[-1].account if len(rows) > limit else None
    return AccountPage(items, total, limit, offset, needle or None, next_after)


def _state(plan: ResourcePlan | QpsSubscription, left: Decimal | None, now: datetime) -> str:
    if plan.refunded_at is not None and plan.refunded_at <= now:
        return "refunded"
    if now >= plan.end:
        return "expired"
    if now < plan.start:
        return "pending"
    if left is not None and left <= 0:
        return "exhausted"
    return "active"


async def plan_balances(
    ledger: LedgerSource, account: str, now: datetime
) -> tuple[PlanStatus, ...]:
    """Every plan and QPS subscription of ``account`` in purchase order, with points left
    after the last settlement, its state at ``now`` and whether the 20% mark is reached."""
    async with open_ledger(ledger) as db:
        await db.reads.require_account(account)
        views = await list_plans(db.ratings, account=account)
    found = []
    for view in views:
        plan = view.plan
        if plan.account != account:  # list_plans filters; a report never trusts a filter twice
            continue
        if isinstance(plan, QpsSubscription):
            categories: tuple[str, ...] = (plan.category,)
            action, qps, points, low = plan.action, plan.qps, None, None
        else:
            categories = tuple(sorted(plan.categories))
            action, qps, points = None, None, plan.points
            low = view.remaining is not None and plan.is_low(view.remaining)
        found.append(
            PlanStatus(
                id=plan.id,
                account=plan.account,
                kind=view.kind,
                categories=categories,
                action=action,
                qps=qps,
                points=points,
                points_left=view.remaining,
                price_paid=plan.price_paid,
                ordered_at=plan.ordered_at,
                starts=plan.start,
                expires=plan.end,
                refunded_at=plan.refunded_at,
                state=_state(plan, view.remaining, now),
                low=low,
            )
        )
    return tuple(found)
