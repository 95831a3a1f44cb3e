"""What each tenant endpoint answers: the report layer's results, for one account.

Every handler takes the account the authenticator derived from the AccessKey, and
nothing else names one: the report layer filters every query by that account, and a
plan id, a month or a range only narrows what is read of it. Results are serialised with
their own ``to_json()`` (money as strings), the same text the admin API and the web page
show. The report functions do their SQLite work in worker threads: nothing here blocks
the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from ..catalog import Catalog
from ..clock import Clock
from ..errors import ApiError
from ..identity import INVALID_PARAMETER
from ..rating.months import billing_month
from ..reports import (
    LedgerPath,
    account_overview,
    bill,
    month_deduction,
    month_preview,
    plan_balances,
    usage,
)
from ._errors import PLAN_NOT_FOUND

__all__ = ["MAX_USAGE_DAYS", "VIEWS", "Handler", "View", "ViewContext"]

#: The longest usage range one call may ask for: a tenant cannot make one call scan years.
MAX_USAGE_DAYS = 400
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})").fullmatch
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}").fullmatch
_DEFAULT_TZ = "+08:00"  # billing days are Beijing days


@dataclass(frozen=True, slots=True)
class ViewContext:
    """What the handlers read from: the ledger file, the catalog, the clock."""

    ledger: LedgerPath
    catalog: Catalog
    clock: Clock


Handler = Callable[[ViewContext, str, Mapping[str, str]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class View:
    """One endpoint: its action, its ROA paths (``{Name}`` a path value) and parameters."""

    action: str
    paths: tuple[str, ...]
    params: tuple[str, ...]
    handler: Handler


def _bad(message: str) -> ApiError:
    return ApiError(INVALID_PARAMETER, message)


def _tz(params: Mapping[str, str]) -> timezone:
    text = params.get("Tz", _DEFAULT_TZ)
    found = _OFFSET(text)
    if found is None:
        raise _bad(f'Tz must be a UTC offset such as +08:00, not "{text[:16]}".')
    sign, hours, minutes = found.groups()
    if int(hours) > 23 or int(minutes) > 59:
        raise _bad(f'Tz must be a UTC offset such as +08:00, not "{text}".')
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-offset if sign == "-" else offset)


def _instant(name: str, text: str, tz: timezone) -> datetime:
    """A day ``YYYY-MM-DD`` (its midnight in ``tz``) or an instant ``...T..Z`` (UTC)."""
    try:
        if _DAY(text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tz)
        if text.endswith("Z") and "T" in text:
            found = datetime.fromisoformat(text[:-1])
            if found.tzinfo is None:  # "...+08:00Z" names two zones: refused
                return found.replace(tzinfo=UTC)
    except ValueError:
        pass
    raise _bad(
        f"{name} must be a day (YYYY-MM-DD, in Tz) or a UTC instant on a whole minute "
        f'(YYYY-MM-DDThh:mm:00Z), not "{text[:32]}".'
    )


def _next_minute(now: datetime) -> datetime:
    floor = now.replace(second=0, microsecond=0)
    return floor if floor == now else floor + timedelta(minutes=1)


async def _usage(ctx: ViewContext, account: str, params: Mapping[str, str]) -> dict[str, Any]:
    tz = _tz(params)
    now = ctx.clock.now()
    if "Since" in params:
        since = _instant("Since", params["Since"], tz)
    else:  # the first day of this month, in Tz
        local = now.astimezone(tz)
        since = datetime(local.year, local.month, 1, tzinfo=tz)
    until = _instant("Until", params["Until"], tz) if "Until" in params else _next_minute(now)
    if until - since > timedelta(days=MAX_USAGE_DAYS):
        raise _bad(f"A usage range is at most {MAX_USAGE_DAYS} days: ask for it in parts.")
    report = await usage(
        ctx.ledger, account, since, until, tz=tz, group=params.get("GroupBy", "day,action")
    )
    return report.to_json()


async def _plans(ctx: ViewContext, account: str, params: Mapping[str, str]) -> dict[str, Any]:
    found = await plan_balances(ctx.ledger, account, ctx.clock.now())
    return {"account": account, "plans": [p.to_json() for p in found]}


async def _plan(ctx: ViewContext, account: str, params: Mapping[str, str]) -> dict[str, Any]:
    wanted = params.get("PlanId", "")
    # Only the caller's own plans are read; another account's id is simply not among them.
    for plan in await plan_balances(ctx.ledger, account, ctx.clock.now()):
        if plan.id == wanted and plan.account == account:
            return plan.to_json()
    raise ApiError(PLAN_NOT_FOUND, f'The account has no plan "{wanted[:64]}".')


async def _balance(ctx: ViewContext, account: str, params: Mapping[str, str]) -> dict[str, Any]:
    return (await account_overview(ctx.ledger, account, ctx.clock.now())).to_json()


def _month(ctx: ViewContext, params: Mapping[str, str]) -> str:
    return params.get("Month") or str(billing_month(ctx.clock.now()))


async def _bill(ctx: ViewContext, account: str, params: Mapping[str, str]) -> dict[str, Any]:
    now = ctx.clock.now()
    return (await bill(ctx.ledger, account, _month(ctx, params), now=now)).to_json()


async def _deduction(ctx: ViewContext, account: str, params: Mapping[str, str]) -> dict[str, Any]:
    now = ctx.clock.now()
    return (await month_deduction(ctx.ledger, account, _month(ctx, params), now=now)).to_json()


async def _preview(ctx: ViewContext, account: str, params: Mapping[str, str]) -> dict[str, Any]:
    found = await month_preview(
        ctx.ledger, account, _month(ctx, params), ctx.clock.now(), catalog=ctx.catalog
    )
    return found.to_json()


#: The endpoints, in the order docs/tenant.md lists them.
VIEWS: tuple[View, ...] = (
    View("DescribeUsage", ("/v1/usage",), ("Since", "Until", "Tz", "GroupBy"), _usage),
    View("DescribePlans", ("/v1/plans",), (), _plans),
    View("DescribePlan", ("/v1/plans/{PlanId}",), ("PlanId",), _plan),
    View("DescribeBalance", ("/v1/balance",), (), _balance),
    View("DescribeBill", ("/v1/bills", "/v1/bills/{Month}"), ("Month",), _bill),
    View("DescribeDeduction", ("/v1/deductions", "/v1/deductions/{Month}"), ("Month",), _deduction),
    View("DescribeMonthPreview", ("/v1/preview", "/v1/preview/{Month}"), ("Month",), _preview),
)
