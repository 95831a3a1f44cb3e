"""Plans: buy (a resource plan or a QPS subscription), list, show, renew, refund.

Purchases, renewals and refunds are :mod:`metering_middleware.rating`'s functions
(``buy_resource_plan``, ``buy_qps_subscription``, ``renew_plan``, ``quote_refund``,
``refund``): their refusals come back with the rating error's message and a code per
operation. Plans are paid from the balance: without ``allow_debt`` a purchase the balance
does not cover is refused (409 ``Balance.Insufficient``, nothing bought).
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum
from typing import Annotated

from fastapi import Body, FastAPI, Path, Query

from ...rating.balances import BalanceError
from ...rating.errors import PlanError
from ...rating.plans import QpsSubscription, ResourcePlan
from ...rating.purchases import (
    PlanView,
    buy_qps_subscription,
    buy_resource_plan,
    list_plans,
)
from ...rating.renewals import RefundQuote, quote_refund, refund, renew_plan
from ...rating.settlement import SettleBusy
from ...rating.store import Plan
from ..context import AdminContext
from ..errors import AdminError
from ..models import (
    PlanOut,
    PlanPage,
    QpsPurchaseIn,
    RefundOut,
    RenewIn,
    ResourcePurchaseIn,
    UsedItemOut,
    money,
    timestamp,
)
from ..pagination import DEFAULT_LIMIT, CursorQuery, Cursors, LimitQuery, page_of
from ._common import AccountPath, account_state, micros, not_found

__all__ = ["plan_out", "register"]

_TAGS: list[str | Enum] = ["plans"]

PlanPath = Annotated[str, Path(min_length=1, max_length=128, description="The plan's id")]
_HUNDREDTH = Decimal("0.01")
Purchase = Annotated[ResourcePurchaseIn | QpsPurchaseIn, Body(discriminator="kind")]


def plan_out(view: PlanView) -> PlanOut:
    plan = view.plan
    if isinstance(plan, QpsSubscription):
        categories, action, qps, points = [plan.category], plan.action, plan.qps, None
    else:
        categories, action, qps, points = sorted(plan.categories), None, None, plan.points
    return PlanOut(
        id=plan.id,
        account=plan.account,
        kind=view.kind,  # type: ignore[arg-type]  # qps, single or general
        categories=categories,
        action=action,
        qps=qps,
        points=None if points is None else money(points),
        remaining=None if view.remaining is None else money(view.remaining),
        start=timestamp(plan.start),
        end=timestamp(plan.end),
        ordered_at=timestamp(plan.ordered_at),
        price_paid=money(plan.price_paid),
        refunded_at=None if plan.refunded_at is None else timestamp(plan.refunded_at),
    )


def _fresh(plan: Plan) -> PlanView:
    return PlanView(plan, plan.points if isinstance(plan, ResourcePlan) else None)


def _refund_out(q: RefundQuote, done: bool) -> RefundOut:
    return RefundOut(
        plan=q.plan.id,
        account=q.plan.account,
        paid=money(q.paid),
        held_hours=money((Decimal(int(q.held_for.total_seconds())) / 3600).quantize(_HUNDREDTH)),
        used=[
            UsedItemOut(
                item=u.item,
                month=str(u.month),
                calls=u.calls,
                unit_price=money(u.unit_price),
                value=money(u.value),
            )
            for u in q.used
        ],
        used_value=money(q.used_value),
        amount=money(q.amount),
        refundable=q.refundable,
        refunded=done,
        at=timestamp(q.at),
        rule=q.rule,
    )


def _busy() -> AdminError:
    return AdminError(
        409,
        "Settlement.Busy",
        "a settlement pass holds the lock; the refund needs its account settled first",
        recommend="try again in a few seconds",
    )


def register(app: FastAPI, ctx: AdminContext) -> None:
    """Add this resource's routes to ``app`` (under its app-wide bearer guard)."""
    cursors = Cursors(ctx.tokens.derive_key("cursor"))

    async def find(plan_id: str) -> PlanView:
        for view in await list_plans(await ctx.ratings()):
            if view.plan.id == plan_id:
                return view
        raise not_found("Plan.NotFound", f"plan {plan_id!r}")

    @app.get(
        "/plans", tags=_TAGS, response_model=PlanPage, summary="List plans (all, or one account's)"
    )
    async def get_plans(
        account: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> PlanPage:
        if account is not None:
            await account_state(ctx, account)
        views = await list_plans(await ctx.ratings(), account=account)
        page = page_of(
            views,
            lambda v: (v.plan.account, micros(v.plan.ordered_at), v.plan.id),
            cursors=cursors,
            listing=f"plans:{account}",
            cursor=cursor,
            limit=limit,
        )
        return PlanPage(items=[plan_out(v) for v in page.items], next_cursor=page.next_cursor)

    @app.get("/plans/{plan_id}", tags=_TAGS, response_model=PlanOut, summary="Show a plan")
    async def get_plan(plan_id: PlanPath) -> PlanOut:
        return plan_out(await find(plan_id))

    @app.post(
        "/accounts/{account}/plans",
        tags=_TAGS,
        response_model=PlanOut,
        status_code=201,
        summary="Buy a resource plan or a QPS subscription, paid from the balance",
    )
    async def buy(account: AccountPath, body: Purchase) -> PlanOut:
        await account_state(ctx, account)
        ratings = await ctx.ratings()
        now = ctx.clock.now()
        try:
            if isinstance(body, QpsPurchaseIn):
                plan: Plan = await buy_qps_subscription(
                    ratings,
                    ctx.catalog,
                    account=account,
                    category=body.category,
                    action=body.action,
                    qps=body.qps,
                    ordered_at=now,
                    price_paid=body.price,
                    months=body.months,
                    subscription_id=body.id,
                    clock=ctx.clock,
                    require_funds=not body.allow_debt,
                )
            else:
                categories = None
                if body.kind == "single":
                    if body.category is None or body.categories is not None:
                        raise AdminError(
                            400,
                            "InvalidParameter",
                            "body.category: a single-category plan names its one category "
                            "(and no categories list)",
                        )
                    categories = {body.category}
                elif body.category is not None:
                    raise AdminError(
                        400,
                        "InvalidParameter",
                        "body.category: a general plan takes a categories list, not category",
                    )
                elif body.categories is not None:
                    categories = set(body.categories)
                plan = await buy_resource_plan(
                    ratings,
                    ctx.catalog,
                    account=account,
                    kind=body.kind,
                    points=body.points,
                    ordered_at=now,
                    price_paid=body.price,
                    categories=categories,
                    validity_months=body.validity_months,
                    plan_id=body.id,
                    clock=ctx.clock,
                    require_funds=not body.allow_debt,
                )
        except BalanceError as exc:
            raise AdminError(409, "Balance.Insufficient", str(exc)) from None
        except PlanError as exc:
            raise AdminError(400, "Plan.Invalid", str(exc)) from None
        except ValueError as exc:  # the store's: the id is taken
            raise AdminError(409, "Plan.AlreadyExists", str(exc)) from None
        return plan_out(_fresh(plan))

    @app.post(
        "/plans/{plan_id}/renew",
        tags=_TAGS,
        response_model=PlanOut,
        status_code=201,
        summary="Buy the next period of a plan, paid from the balance",
    )
    async def renew(plan_id: PlanPath, body: RenewIn) -> PlanOut:
        await find(plan_id)
        try:
            plan = await renew_plan(
                await ctx.ratings(),
                ctx.catalog,
                plan_id,
                price=body.price,
                months=body.months,
                new_id=body.new_id,
                require_funds=not body.allow_debt,
                clock=ctx.clock,
            )
        except BalanceError as exc:
            raise AdminError(409, "Balance.Insufficient", str(exc)) from None
        except PlanError as exc:
            raise AdminError(409, "Plan.NotRenewable", str(exc)) from None
        except ValueError as exc:
            raise AdminError(409, "Plan.AlreadyExists", str(exc)) from None
        return plan_out(_fresh(plan))

    @app.get(
        "/plans/{plan_id}/refund",
        tags=_TAGS,
        response_model=RefundOut,
        summary="What refunding the plan now would credit (120 h rule); refunds nothing",
        description="Settles the plan's account up to now first, so every used call counts.",
    )
    async def refund_quote(plan_id: PlanPath) -> RefundOut:
        await find(plan_id)
        try:
            quote = await quote_refund(await ctx.ratings(), ctx.catalog, plan_id, clock=ctx.clock)
        except SettleBusy:
            raise _busy() from None
        except PlanError as exc:
            raise AdminError(409, "Plan.AlreadyRefunded", str(exc)) from None
        return _refund_out(quote, False)

    @app.post(
        "/plans/{plan_id}/refund",
        tags=_TAGS,
        response_model=RefundOut,
        summary="Refund the plan now: its coverage ends, the amount is credited",
    )
    async def refund_now(plan_id: PlanPath) -> RefundOut:
        found = await find(plan_id)
        if found.plan.refunded_at is not None:
            raise AdminError(409, "Plan.AlreadyRefunded", f"plan {plan_id!r} is already refunded")
        try:
            quote = await refund(await ctx.ratings(), ctx.catalog, plan_id, clock=ctx.clock)
        except SettleBusy:
            raise _busy() from None
        except BalanceError as exc:
            raise AdminError(409, "Refund.NotAllowed", str(exc)) from None
        except (PlanError, ValueError) as exc:  # ValueError: a refund recorded meanwhile
            raise AdminError(409, "Plan.AlreadyRefunded", str(exc)) from None
        return _refund_out(quote, True)
