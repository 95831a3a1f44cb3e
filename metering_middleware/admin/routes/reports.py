"""Usage, plan balances, overview, bills, deductions and the month preview of an account:
:mod:`metering_middleware.reports` (the query layer every billing view shares), parsed
and serialised here, nothing computed. The layer's refusals (``ReportError``) carry their
own code and status (``Account.NotFound`` 404, ``InvalidParameter.Range`` 400, ...)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from typing import Annotated

from fastapi import FastAPI, Path, Query

from ... import reports
from ...clock import BEIJING
from ...rating.months import billing_month
from ..context import AdminContext
from ..errors import AdminError
from ..report_models import (
    BillOut,
    DeductionOut,
    OverviewOut,
    PlanStatusOut,
    PreviewOut,
    UsageOut,
)
from ._common import AccountPath

__all__ = ["parse_offset", "register"]

_TAGS: list[str | Enum] = ["reports"]

MonthPath = Annotated[str, Path(min_length=7, max_length=7, description="YYYY-MM (UTC+8)")]
MonthQuery = Annotated[
    str | None,
    Query(min_length=7, max_length=7, description="YYYY-MM (UTC+8); default: this month"),
]


def parse_offset(text: str) -> timezone:
    """``+08:00``, ``-03:30``, ``Z``: a fixed UTC offset (400 for anything else)."""
    t = text.strip()
    if t in ("Z", "UTC", "+00:00"):
        return UTC
    bad = AdminError(400, "InvalidParameter", f"query.tz: {text!r} is not a UTC offset (+08:00)")
    if len(t) != 6 or t[0] not in "+-" or t[3] != ":" or not (t[1:3] + t[4:]).isdigit():
        raise bad
    hours, minutes = int(t[1:3]), int(t[4:])
    if hours > 14 or minutes > 59:
        raise bad
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(delta if t[0] == "+" else -delta)


def _minute_after(when: datetime) -> datetime:
    floor = when.replace(second=0, microsecond=0)
    return floor if floor == when else floor + timedelta(minutes=1)


def register(app: FastAPI, ctx: AdminContext) -> None:
    """Add the report routes to ``app`` (under its app-wide bearer guard)."""
    path = ctx.ledger_path

    @app.get(
        "/accounts/{account}/usage",
        tags=_TAGS,
        response_model=UsageOut,
        summary="Calls by day and API: charged, free by code, refused by reason",
        description="Default range: from the start of this UTC+8 billing month to now. "
        "Times are ISO 8601 with an offset, on whole minutes.",
    )
    async def get_usage(
        account: AccountPath,
        since: Annotated[datetime | None, Query(description="inclusive")] = None,
        until: Annotated[datetime | None, Query(description="exclusive")] = None,
        tz: Annotated[str, Query(max_length=6, description="days cut in this offset")] = "+08:00",
        group: Annotated[str, Query(max_length=40, examples=["day,action"])] = "day,action",
    ) -> UsageOut:
        zone = parse_offset(tz)
        now = ctx.clock.now()
        start = since or billing_month(now).start.astimezone(BEIJING)
        end = until or _minute_after(now.astimezone(UTC))
        found = await reports.usage(path, account, start, end, tz=zone, group=group)
        return UsageOut.model_validate(found.to_json())

    @app.get(
        "/accounts/{account}/overview",
        tags=_TAGS,
        response_model=OverviewOut,
        summary="Balance, standing, cap and this month's settled spend",
    )
    async def get_overview(account: AccountPath) -> OverviewOut:
        found = await reports.account_overview(path, account, ctx.clock.now())
        return OverviewOut.model_validate(found.to_json())

    @app.get(
        "/accounts/{account}/plans",
        tags=_TAGS,
        response_model=list[PlanStatusOut],
        summary="An account's plans: points left, expiry, state, the 20% mark",
    )
    async def get_plan_balances(account: AccountPath) -> list[PlanStatusOut]:
        found = await reports.plan_balances(path, account, ctx.clock.now())
        return [PlanStatusOut.model_validate(p.to_json()) for p in found]

    @app.get(
        "/accounts/{account}/bills/{month}",
        tags=_TAGS,
        response_model=BillOut,
        summary="An account's bill for a billing month, as settled so far",
    )
    async def get_bill(account: AccountPath, month: MonthPath) -> BillOut:
        found = await reports.bill(path, account, month, now=ctx.clock.now())
        return BillOut.model_validate(found.to_json())

    @app.get(
        "/accounts/{account}/deductions/{month}",
        tags=_TAGS,
        response_model=DeductionOut,
        summary="Which plan or tier settled how many calls in a billing month",
    )
    async def get_deduction(account: AccountPath, month: MonthPath) -> DeductionOut:
        found = await reports.month_deduction(path, account, month, now=ctx.clock.now())
        return DeductionOut.model_validate(found.to_json())

    @app.get(
        "/accounts/{account}/preview",
        tags=_TAGS,
        response_model=PreviewOut,
        summary="The month so far (settled and not yet) and projected to its end",
    )
    async def get_preview(account: AccountPath, month: MonthQuery = None) -> PreviewOut:
        now = ctx.clock.now()
        chosen = month or str(billing_month(now))
        found = await reports.month_preview(path, account, chosen, now, catalog=ctx.catalog)
        return PreviewOut.model_validate(found.to_json())
