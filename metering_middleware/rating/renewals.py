"""Renewing and refunding plans (billing rules section 6).

Renewal: a QPS subscription's next period starts when the current one ends (chained after
any renewal already bought: no gap, no overlap); a resource plan's renewal is a new plan
that starts at purchase and stacks with the others. Either is paid from the balance.

Refund (**assumption**, after Alibaba's rule for comparable prepaid packs): within 120
hours of purchase, the price paid minus what the calls the plan covered would have cost at
each item's first-tier price (never below zero; unused: all of it); later, none. A refund
first settles the account up to its own time, so the used calls are all counted; from then
on the plan covers nothing, including records of earlier calls that arrive later (they are
deducted at their arrival, see ``_settle_pass``), so the amount refunded stays right.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from ..catalog import Catalog
from ..clock import Clock, SystemClock
from .balances import BalanceError
from .errors import PlanError
from .money import exact_mul, exact_sum
from .months import Month, add_months
from .open import MoneyRatingStore
from .plans import QpsSubscription
from .purchases import buy_qps_subscription, buy_resource_plan
from .results import SourceKind
from .settlement import settle
from .store import Plan

__all__ = ["REFUND_WINDOW", "RefundQuote", "UsedItem", "quote_refund", "refund", "renew_plan"]

#: A plan can be refunded this long after its purchase (billing rules section 6).
REFUND_WINDOW = timedelta(hours=120)


def _months_between(start: datetime, end: datetime) -> int:
    for months in range(1, 1201):
        if add_months(start, months) >= end:
            return months
    return 12


async def _find(store: MoneyRatingStore, plan_id: str) -> Plan:
    plan = (await store.plan_book()).find(plan_id)
    if plan is None:
        raise PlanError(f"no plan {plan_id!r}")
    return plan


async def renew_plan(
    store: MoneyRatingStore,
    catalog: Catalog,
    plan_id: str,
    *,
    price: Decimal | str | None = None,
    months: int | None = None,
    new_id: str | None = None,
    require_funds: bool = True,
    clock: Clock | None = None,
) -> Plan:
    """Buy the next period of a subscription, or another plan like a resource plan.

    The renewal costs ``price`` (default: what the renewed plan cost) and lasts ``months``
    (default: as long as the renewed one). Refunded or expired plans are not renewed
    (``PlanError``): buy a new one."""
    clock = clock or SystemClock()
    now = clock.now()
    plan = await _find(store, plan_id)
    if plan.refunded_at is not None:
        raise PlanError(f"plan {plan_id!r} was refunded: buy a new one instead")
    if plan.effective_end <= now:
        raise PlanError(
            f"plan {plan_id!r} expired on {plan.effective_end.isoformat()}: "
            "buy a new one instead (a renewal is bought before expiry)"
        )
    paid = plan.price_paid if price is None else price
    length = months or _months_between(plan.start, plan.end)
    if isinstance(plan, QpsSubscription):
        return await buy_qps_subscription(
            store,
            catalog,
            account=plan.account,
            category=plan.category,
            action=plan.action,
            qps=plan.qps,
            ordered_at=now,
            price_paid=paid,
            months=length,
            subscription_id=new_id,
            clock=clock,
            require_funds=require_funds,
        )
    return await buy_resource_plan(
        store,
        catalog,
        account=plan.account,
        kind=plan.kind,
        points=plan.points,
        ordered_at=now,
        price_paid=paid,
        categories=plan.categories,
        validity_months=length,
        plan_id=new_id,
        clock=clock,
        require_funds=require_funds,
    )


@dataclass(frozen=True, slots=True)
class UsedItem:
    """Calls of one item the plan covered, valued at the item's first-tier price."""

    item: str
    month: Month  # the month they occurred in (its price schedule)
    calls: int
    unit_price: Decimal
    value: Decimal


@dataclass(frozen=True, slots=True)
class RefundQuote:
    plan: Plan
    at: datetime  # the refund's time: the plan covers nothing from then on
    paid: Decimal
    held_for: timedelta  # since the purchase
    used: tuple[UsedItem, ...]
    used_value: Decimal
    amount: Decimal  # what the refund credits (0 when not refundable)
    refundable: bool
    rule: str  # how the amount was computed, in words

    @property
    def used_calls(self) -> int:
        return sum(u.calls for u in self.used)


def _first_tier(catalog: Catalog, item: str, month: Month) -> Decimal:
    found = catalog.by_item().get(item)
    if found is None:
        raise PlanError(f"the catalog has no item {item!r} to value used calls")
    schedule = found.schedule_at(month.start)
    return schedule.tiers[0].price if schedule is not None else found.first_tier_price


async def quote_refund(
    store: MoneyRatingStore,
    catalog: Catalog,
    plan_id: str,
    *,
    clock: Clock | None = None,
    settle_first: bool = True,
    owner: str | None = None,
) -> RefundQuote:
    """What refunding ``plan_id`` now would credit, after settling its account up to now
    (``SettleBusy`` if another settler holds the lock: try again). With ``owner``, the
    settlement lock stays held by it (the caller releases it)."""
    clock = clock or SystemClock()
    plan = await _find(store, plan_id)
    if plan.refunded_at is not None:
        raise PlanError(f"plan {plan_id!r} is already refunded")
    at = clock.now()
    if settle_first:
        report = await settle(
            store,
            catalog,
            clock,
            lag=timedelta(0),
            account=plan.account,
            owner=owner,
            keep_lock=owner is not None,
        )
        at = report.horizon or at
    used: list[UsedItem] = []
    for line in await store.lines(account=plan.account):
        if line.plan_id != plan.id or line.kind not in (
            SourceKind.QPS,
            SourceKind.SINGLE,
            SourceKind.GENERAL,
        ):
            continue
        price = _first_tier(catalog, line.item, line.origin)
        used.append(
            UsedItem(line.item, line.origin, line.calls, price, exact_mul(price, line.calls))
        )
    used.sort(key=lambda u: (u.month, u.item))
    used_value = exact_sum(u.value for u in used)
    held = at - plan.ordered_at
    if held > REFUND_WINDOW:
        amount, ok = Decimal(0), False
        rule = (
            f"bought {held.total_seconds() / 3600:.1f} h ago: no refund after "
            f"{REFUND_WINDOW.total_seconds() / 3600:.0f} h"
        )
    elif not used:
        amount, ok = plan.price_paid, True
        rule = "unused within 120 h: the full price paid"
    else:
        amount, ok = max(Decimal(0), exact_sum((plan.price_paid, -used_value))), True
        rule = (
            f"used within 120 h: paid {plan.price_paid} minus {sum(u.calls for u in used)} "
            f"covered calls at first-tier prices ({used_value}), never below zero"
        )
    return RefundQuote(plan, at, plan.price_paid, held, tuple(used), used_value, amount, ok, rule)


async def refund(
    store: MoneyRatingStore,
    catalog: Catalog,
    plan_id: str,
    *,
    clock: Clock | None = None,
) -> RefundQuote:
    """Refund ``plan_id`` now: settle, quote, end its coverage and credit the amount (one
    transaction for the refund and its entry). ``BalanceError`` outside the 120 h.

    The settlement lock is held from the settling to the recording, so no pass settles a
    call under the plan in between: every record that arrived before the refund's instant
    is in the quote, every later one is deducted at its arrival without the plan. The
    refund is recorded as of that instant (its cut, see ``PlanBook.refund_cut``)."""
    owner = f"refund-{uuid.uuid4().hex[:12]}"
    try:
        quote = await quote_refund(store, catalog, plan_id, clock=clock, owner=owner)
        if not quote.refundable:
            raise BalanceError(f"plan {plan_id!r} cannot be refunded: {quote.rule}")
        await store.add_refund(plan_id, quote.at, quote.at, quote.amount, reason=quote.rule)
    finally:
        await store.release_lock(owner)
    return quote
