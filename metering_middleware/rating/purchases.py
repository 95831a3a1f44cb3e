"""Buying, listing and refunding plans (QPS subscriptions and resource plans).

Entries are immutable once stored: a correction is a new entry, a refund its own entry.
Purchases are validated against the catalog before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ..catalog import Catalog
from ..clock import Clock, SystemClock
from ..ledger.ids import new_record_id
from .errors import PlanError
from .months import add_months
from .plans import (
    DEFAULT_VALIDITY_MONTHS,
    PlanKind,
    QpsSubscription,
    ResourcePlan,
    validate_plan,
    validate_subscription,
)
from .store import Plan, RatingStore

__all__ = [
    "PlanView",
    "buy_qps_subscription",
    "buy_resource_plan",
    "image_categories",
    "list_plans",
    "refund_plan",
    "show_plan",
]


def image_categories(catalog: Catalog) -> frozenset[str]:
    """Every category but the video ones: a general-purpose plan's default coverage.

    **Assumption**: Alibaba sells general-purpose packs for the image APIs; video APIs
    (``video*``, billed by duration) are left out unless named.
    """
    return frozenset(c for c in catalog.categories if not c.startswith("video"))


@dataclass(frozen=True, slots=True)
class PlanView:
    """A plan with what is left of it after the last settlement (None: QPS subscriptions)."""

    plan: Plan
    remaining: Decimal | None

    @property
    def kind(self) -> str:
        return "qps" if isinstance(self.plan, QpsSubscription) else self.plan.kind.value


def _money(value: Decimal | str | int, what: str) -> Decimal:
    try:
        amount = Decimal(value)
    except ArithmeticError:
        raise PlanError(f"{what} must be a decimal number, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise PlanError(f"{what} must be a finite, non-negative amount, got {value!r}")
    return amount


async def buy_resource_plan(
    store: RatingStore,
    catalog: Catalog,
    *,
    account: str,
    kind: PlanKind | str,
    points: Decimal | str | int,
    ordered_at: datetime,
    price_paid: Decimal | str | int,
    categories: frozenset[str] | set[str] | tuple[str, ...] | None = None,
    validity_months: int = DEFAULT_VALIDITY_MONTHS,
    plan_id: str | None = None,
    clock: Clock | None = None,
    require_funds: bool = False,
) -> ResourcePlan:
    """Buy a resource plan: valid from ``ordered_at`` for ``validity_months`` (a year).

    A new plan starts at purchase and stacks with the others (billing rules section 6).
    ``categories`` defaults to every image category for a general-purpose plan and is
    required (one category) for a single-category plan. The price is charged to the
    account's balance (an entry ``purchase:ID``); ``require_funds`` refuses the purchase
    (``BalanceError``, nothing written) unless the balance covers it.
    """
    try:
        kind = PlanKind(kind)
    except ValueError:
        raise PlanError(f"plan kind must be 'single' or 'general', got {kind!r}") from None
    if categories is None:
        if kind is PlanKind.SINGLE:
            raise PlanError("a single-category plan needs its category")
        categories = image_categories(catalog)
    if isinstance(validity_months, bool) or validity_months < 1:
        raise PlanError(f"validity must be at least one month, got {validity_months!r}")
    plan = ResourcePlan.purchase(
        id=plan_id or f"rp-{new_record_id()}",
        account=account,
        kind=kind,
        categories=frozenset(categories),
        points=_money(points, "points"),
        ordered_at=ordered_at,
        price_paid=_money(price_paid, "price paid"),
        validity_months=validity_months,
    )
    validate_plan(plan, catalog)
    await store.add_plan(plan, (clock or SystemClock()).now(), require_funds=require_funds)
    return plan


async def buy_qps_subscription(
    store: RatingStore,
    catalog: Catalog,
    *,
    account: str,
    category: str,
    action: str,
    qps: int,
    ordered_at: datetime,
    price_paid: Decimal | str | int,
    months: int = 1,
    subscription_id: str | None = None,
    clock: Clock | None = None,
    require_funds: bool = False,
) -> QpsSubscription:
    """Buy ``months`` of a QPS level for one API.

    Bought while a subscription to the same API is running (or already renewed), it starts
    when the last of them ends: a renewal (billing rules section 6). No auto-renewal.
    Paid from the balance like a resource plan (see ``buy_resource_plan``).
    """
    if isinstance(months, bool) or months < 1:
        raise PlanError(f"a QPS subscription lasts at least one month, got {months!r}")
    book = await store.plan_book(account=account)
    start = ordered_at
    for sub in book.subscriptions:
        if sub.api == (category, action) and sub.effective_end > start:
            start = sub.effective_end
    sub = QpsSubscription(
        id=subscription_id or f"qps-{new_record_id()}",
        account=account,
        category=category,
        action=action,
        qps=qps,
        start=start,
        end=add_months(start, months),
        ordered_at=ordered_at,
        price_paid=_money(price_paid, "price paid"),
    )
    validate_subscription(sub, catalog)
    await store.add_plan(sub, (clock or SystemClock()).now(), require_funds=require_funds)
    return sub


async def refund_plan(
    store: RatingStore,
    plan_id: str,
    *,
    at: datetime,
    amount: Decimal | None = None,
    clock: Clock | None = None,
) -> Plan:
    """End a plan's coverage at ``at`` (it covers no call from then on, whenever the call's
    record arrives). The refunded amount is the accounts issue's to compute."""
    book = await store.plan_book()
    plan = book.find(plan_id)
    if plan is None:
        raise PlanError(f"no plan {plan_id!r}")
    refunded = plan.refunded(at)  # validates: not before the order
    await store.add_refund(plan_id, at, (clock or SystemClock()).now(), amount)
    return refunded


async def list_plans(store: RatingStore, *, account: str | None = None) -> list[PlanView]:
    """Plans in purchase order, with their points left after the last settlement."""
    book = await store.plan_book(account=account)
    progress = await store.accounts(account=account)
    views: list[PlanView] = []
    every: list[Plan] = [*book.plans, *book.subscriptions]
    for plan in every:
        remaining: Decimal | None = None
        if isinstance(plan, ResourcePlan):
            state = progress.get(plan.account)
            remaining = (
                plan.points if state is None else state.state.remaining.get(plan.id, plan.points)
            )
        views.append(PlanView(plan, remaining))
    views.sort(key=lambda v: (v.plan.account, v.plan.ordered_at, v.plan.id))
    return views


async def show_plan(store: RatingStore, plan_id: str) -> PlanView:
    for view in await list_plans(store):
        if view.plan.id == plan_id:
            return view
    raise PlanError(f"no plan {plan_id!r}")
