"""The report commands of ``metering``: usage and ``report ...`` (private).

Thin: parsing and presentation; the numbers come from this package's query layer, the
same functions the admin API, the tenant view and the web page call. ``--format json``
prints the result's ``to_json()`` document (what the HTTP faces return); table and CSV
show times in ``--tz``. Every handler returns text already rendered.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from .._cli_args import add_command, add_commands, positive_int
from .._output import render
from ..catalog import Catalog, default_catalog, load_catalog
from ..clock import SystemClock
from ..ledger import LedgerStore
from ..rating.errors import MonthError
from ..rating.months import Month, billing_month, parse_month
from ..stores.sqlite.ledger import SqliteStore
from ._db import LedgerSource
from .accounts import MAX_PAGE, account_overview, accounts, plan_balances
from .monthly import month_deduction
from .preview import month_preview
from .results import MonthPreview, PlanStatus, UsageReport, UsageRow
from .usage import GROUPS, parse_group, usage

__all__ = ["add_report_commands"]

_CATALOG_ENV = "METERING_CATALOG_PATH"  # the rating commands' variable (one catalog)
USAGE_COLUMNS = ["day", "category", "action", "charged", "free", "refused", "total"]
PLAN_COLUMNS = ["id", "kind", "covers", "points", "left", "low", "state", "starts", "expires"]
DEDUCTION_COLUMNS = ["source", "plan_id", "tier", "unit_price", "calls", "points", "amount"]
PREVIEW_COLUMNS = [
    "item",
    "settled_calls",
    "pending_calls",
    "projected_calls",
    "to_date_amount",
    "projected_amount",
]
ACCOUNT_COLUMNS = ["account", "enabled", "keys", "balance", "standing"]


def _path(store: LedgerStore) -> LedgerSource:
    """What the report functions open: the ledger's file (SQLite) or the store itself
    (PostgreSQL, whose rating store and reads come beside it)."""
    # Any other store goes to open_ledger, whose rating_store_for refuses one that keeps
    # no plans (memory://) in one line naming both stores that do.
    return str(store.path) if isinstance(store, SqliteStore) else store


def _catalog(args: argparse.Namespace) -> Catalog:
    path = args.catalog or os.environ.get(_CATALOG_ENV)
    return load_catalog(path) if path else default_catalog()


def _month(text: str) -> Month:
    try:
        return parse_month(text)
    except MonthError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str) -> str:
    out = io.StringIO()
    render(rows, columns, fmt, out)
    return out.getvalue()


def _json(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def _local(when: datetime | None, zone: tzinfo) -> datetime | None:
    return None if when is None else when.astimezone(zone)


def _pairs(counts: Mapping[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items())


def _usage_row(row: UsageRow, *, totals: bool = False) -> dict[str, Any]:
    return {
        "day": "total" if totals else row.day,
        "category": row.category,
        "action": row.action,
        "charged": row.charged,
        "free": _pairs(row.free) or (row.free_total if totals else ""),
        "refused": _pairs(row.refused) or (row.refused_total if totals else ""),
        "total": row.total,
    }


def _usage_text(report: UsageReport, fmt: str) -> str:
    if fmt == "json":
        return _json(report.to_json())
    columns = [c for c in USAGE_COLUMNS if c not in GROUPS or c in report.group]
    rows = [_usage_row(r) for r in report.rows]
    if fmt == "table":
        rows.append(_usage_row(report.totals, totals=True))
    return _table(rows, columns, fmt)


async def _usage(store: LedgerStore, args: argparse.Namespace) -> str:
    zone: tzinfo = args.tz
    now = SystemClock().now()
    until: datetime = args.until or now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    since: datetime = args.since
    if since is None:  # the first of the month of the range's last minute, in --tz
        local = (until - timedelta(minutes=1)).astimezone(zone)
        since = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    report = await usage(_path(store), args.account, since, until, tz=zone, group=args.by)
    return _usage_text(report, args.format)


def _plan_row(p: PlanStatus, zone: tzinfo) -> dict[str, Any]:
    covers = f"{p.categories[0]}/{p.action}" if p.action else ",".join(p.categories)
    return {
        "id": p.id,
        "kind": p.kind,
        "covers": covers,
        "points": p.points,
        "left": p.points_left,
        "low": p.low,
        "state": p.state,
        "starts": _local(p.starts, zone),
        "expires": _local(p.expires, zone),
    }


async def _plans(store: LedgerStore, args: argparse.Namespace) -> str:
    plans = await plan_balances(_path(store), args.account, SystemClock().now())
    if args.format == "json":
        return _json([p.to_json() for p in plans])
    return _table([_plan_row(p, args.tz) for p in plans], PLAN_COLUMNS, args.format)


async def _deduction(store: LedgerStore, args: argparse.Namespace) -> str:
    now = SystemClock().now()
    month = args.month or billing_month(now)
    found = await month_deduction(_path(store), args.account, month, now=now)
    if args.format == "json":
        return _json(found.to_json())
    rows: list[dict[str, Any]] = [
        {
            "source": s.source,
            "plan_id": s.plan_id,
            "tier": s.tier,
            "unit_price": s.unit_price,
            "calls": s.calls,
            "points": s.points,
            "amount": s.amount,
        }
        for s in found.sources
    ]
    if args.format == "table":
        rows.append(
            {
                "source": "total",
                "calls": found.calls,
                "points": found.points,
                "amount": found.amount,
            }
        )
    return _table(rows, DEDUCTION_COLUMNS, args.format)


def _preview_rows(p: MonthPreview) -> list[dict[str, Any]]:
    return [
        {
            "item": i.item,
            "settled_calls": i.settled_calls,
            "pending_calls": i.pending_calls,
            "projected_calls": i.projected_calls,
            "to_date_amount": i.to_date_amount,
            "projected_amount": i.projected_amount,
        }
        for i in p.items
    ]


def _preview_lines(p: MonthPreview, zone: tzinfo) -> str:
    share = (p.elapsed * 100).quantize(Decimal("0.1"))
    end = p.month.end.astimezone(zone).isoformat()
    text = f"{p.month}: {share}% of the month gone\n"
    text += _table(_preview_rows(p), PREVIEW_COLUMNS, "table") if p.items else "no calls\n"
    text += f"to date    {p.to_date_due} CNY (exact {p.to_date}; settled {p.settled})\n"
    if p.projected_due is not None:
        text += f"projected  {p.projected_due} CNY by {end} (exact {p.projected})\n"
    return text


async def _preview(store: LedgerStore, args: argparse.Namespace) -> str:
    now = SystemClock().now()
    month = args.month or billing_month(now)
    found = await month_preview(_path(store), args.account, month, now, catalog=_catalog(args))
    if args.format == "json":
        return _json(found.to_json())
    if args.format == "csv":
        return _table(_preview_rows(found), PREVIEW_COLUMNS, "csv")
    return _preview_lines(found, args.tz)


async def _overview(store: LedgerStore, args: argparse.Namespace) -> str:
    path, now = _path(store), SystemClock().now()
    month = args.month or billing_month(now)
    view = await account_overview(path, args.account, now)
    plans = await plan_balances(path, args.account, now)
    preview = await month_preview(path, args.account, month, now, catalog=_catalog(args))
    if args.format == "json":
        return _json(
            {
                "overview": view.to_json(),
                "plans": [p.to_json() for p in plans],
                "preview": preview.to_json(),
            }
        )
    row = {
        "account": view.account,
        "balance": view.balance,
        "standing": view.standing,
        "standing_since": _local(view.standing_since, args.tz),
        "monthly_cap": view.monthly_cap,
        "month_spend": view.month_spend,
        "low_balance": view.low_balance,
        "month": str(preview.month),
        "to_date": preview.to_date_due,
        "projected": preview.projected_due,
    }
    if args.format == "csv":
        return _table([row], list(row), "csv")
    cap = "none" if view.monthly_cap is None else f"{view.monthly_cap} CNY"
    low = "none" if view.low_balance is None else f"{view.low_balance} CNY"
    since = _local(view.standing_since, args.tz)
    settled = _local(view.settled_until, args.tz)
    lines = [
        f"account        {view.account}" + ("" if view.enabled else " (no enabled AccessKey)"),
        f"balance        {view.balance} CNY",
        f"standing       {view.standing}" + (f" since {since.isoformat()}" if since else ""),
        f"monthly cap    {cap} (settled this month: {view.month_spend} CNY)",
        f"low balance    {low}" + (" (reached)" if view.low_balance_reached else ""),
        f"settled until  {settled.isoformat() if settled else '-'}",
        "",
        "plans",
    ]
    text = "\n".join(lines) + "\n"
    text += (
        _table([_plan_row(p, args.tz) for p in plans], PLAN_COLUMNS, "table") if plans else "none\n"
    )
    return text + "\n" + _preview_lines(preview, args.tz)


async def _accounts(store: LedgerStore, args: argparse.Namespace) -> str:
    page = await accounts(_path(store), search=args.search, limit=args.limit, offset=args.offset)
    if args.format == "json":
        return _json(page.to_json())
    return _table([a.to_json() for a in page.items], ACCOUNT_COLUMNS, args.format)


def _limit(text: str) -> int:
    value = positive_int(text)
    if value > MAX_PAGE:
        raise argparse.ArgumentTypeError(f"{text!r} is above {MAX_PAGE}")
    return value


def _offset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _by(text: str) -> tuple[str, ...]:
    try:
        return parse_group(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_report_commands(groups: Any) -> None:
    """Add ``usage`` and ``report`` (overview, plans, deduction, preview, accounts)."""
    use = add_command(groups, "usage", "an account's calls by day and API: charged, free, refused")
    use.add_argument("account", help="account name")
    use.add_argument(
        "--since",
        metavar="TIME",
        help="from this time, inclusive, on a whole minute (default: the 1st of this month)",
    )
    use.add_argument(
        "--until", metavar="TIME", help="to this time, exclusive (default: the next minute)"
    )
    use.add_argument(
        "--by",
        metavar="KEYS",
        type=_by,
        default=GROUPS,
        help="group by day, category, action or several, comma-separated "
        "(default: day,category,action; days are cut in --tz)",
    )
    use.set_defaults(handler=_usage)

    report = add_command(groups, "report", "billing details: overview, plans, deduction, preview")
    acts = add_commands(report, "command")

    def one(
        name: str, text: str, handler: Any, *, month: bool = False, catalog: bool = False
    ) -> None:
        p = add_command(acts, name, text)
        p.add_argument("account", help="account name")
        if month:
            p.add_argument(
                "--month",
                metavar="YYYY-MM",
                type=_month,
                help="billing month, UTC+8 (default: this one)",
            )
        if catalog:  # pricing the calls not settled yet needs the prices
            p.add_argument(
                "--catalog",
                metavar="FILE",
                help=f"catalog file (default: ${_CATALOG_ENV} or the packaged one)",
            )
        p.set_defaults(handler=handler)

    one(
        "overview",
        "balance, standing, plans, the month to date and its projection",
        _overview,
        month=True,
        catalog=True,
    )
    one("plans", "plans with points left, expiry, state and the low mark (a fifth left)", _plans)
    one("deduction", "which plan or tier settled how many calls of a month", _deduction, month=True)
    one(
        "preview",
        "the month's bill so far and projected to its end",
        _preview,
        month=True,
        catalog=True,
    )
    lst = add_command(acts, "accounts", "accounts with balance and standing")
    lst.add_argument("--search", metavar="TEXT", help="names containing TEXT (any case)")
    lst.add_argument(
        "--limit", metavar="N", type=_limit, default=50, help="at most N (default: 50)"
    )
    lst.add_argument("--offset", metavar="N", type=_offset, default=0, help="skip N first")
    lst.set_defaults(handler=_accounts)
