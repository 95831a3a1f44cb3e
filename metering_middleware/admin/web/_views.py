"""What each page shows, read through the reports layer (the admin API's own reads).

Nothing here computes a bill, a balance or a projection: the values are the reports
layer's frozen results, the ones the admin API serialises, so the page and the API cannot
disagree. Only the chart's layout and the choice of months are the page's own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ...clock import BEIJING
from ...credentials import CredentialInfo
from ...ledger.ids import new_record_id
from ...notices.outbox import OutboxRow, list_notices
from ...rating.months import Month, billing_month
from ...reports import (
    AccountOverview,
    BillReport,
    MonthPreview,
    PlanStatus,
    UsageReport,
    account_overview,
    bill,
    month_preview,
    plan_balances,
    usage,
)
from ..context import AdminContext
from ._chart import Chart, layout_chart

__all__ = ["AccountView", "account_view", "month_choices"]

#: Months offered by the month selector: this one and the eleven before it.
MONTHS_SHOWN = 12
#: Notices shown on an account's page, newest first.
RECENT_NOTICES = 10


@dataclass(frozen=True, slots=True)
class AccountView:
    account: str
    month: str
    months: tuple[str, ...]
    overview: AccountOverview
    bill: BillReport
    preview: MonthPreview | None  # the current month only
    plans: tuple[PlanStatus, ...]
    chart: Chart
    free: Mapping[str, int]  # the month's free calls by upstream error code
    refused: Mapping[str, int]  # the month's refused calls by the gateway's reason
    notices: tuple[OutboxRow, ...]
    keys: tuple[CredentialInfo, ...]
    topup_key: str  # makes a resubmitted top-up form post once (cash.top_up's key)


def month_choices(now: datetime) -> tuple[str, ...]:
    current = billing_month(now)
    return tuple(str(current.shift(-n)) for n in range(MONTHS_SHOWN))


def _days(month: Month) -> list[str]:
    days = []
    day = month.start
    while day < month.end:
        days.append(day.astimezone(BEIJING).date().isoformat())
        day += timedelta(days=1)
    return days


async def _usage(ctx: AdminContext, account: str, month: Month) -> UsageReport:
    return await usage(
        ctx.ledger_path, account, month.start, month.end, group=("day", "category", "action")
    )


def _chart(report: UsageReport, month: Month) -> Chart:
    calls: dict[str, dict[str, int]] = {}
    for row in report.rows:
        if row.day is None or not row.charged:
            continue
        api = f"{row.category}.{row.action}"
        per_day = calls.setdefault(row.day.isoformat(), {})
        per_day[api] = per_day.get(api, 0) + row.charged
    return layout_chart(_days(month), calls)


async def _notices(ctx: AdminContext, account: str) -> tuple[OutboxRow, ...]:
    def recent(conn: sqlite3.Connection) -> list[OutboxRow]:
        return list_notices(conn, account=account)

    rows = await ctx.read(recent)
    return tuple(reversed(rows[-RECENT_NOTICES:]))


async def account_view(ctx: AdminContext, account: str, month: Month) -> AccountView:
    """Everything the account page shows (``UnknownAccount`` from the reports layer for
    an account that was never created)."""
    now = ctx.clock.now()
    overview = await account_overview(ctx.ledger_path, account, now)
    current = billing_month(now)
    preview = None
    if month == current:
        preview = await month_preview(ctx.ledger_path, account, month, now, catalog=ctx.catalog)
    keys = await (await ctx.credentials()).list(account)
    report = await _usage(ctx, account, month)
    return AccountView(
        account=account,
        month=str(month),
        months=month_choices(now),
        overview=overview,
        bill=await bill(ctx.ledger_path, account, month, now=now),
        preview=preview,
        plans=await plan_balances(ctx.ledger_path, account, now),
        chart=_chart(report, month),
        free=report.totals.free,
        refused=report.totals.refused,
        notices=await _notices(ctx, account),
        keys=tuple(k for k in keys if k.account == account),
        topup_key=new_record_id(),
    )
