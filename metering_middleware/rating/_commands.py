"""The rating commands of ``metering``: plans, settle, rerate, bill (private).

Thin: argument parsing and output rows; the work is in :mod:`metering_middleware.rating`.
Failures are ``ValueError``s (the CLI prints them in one line, exit 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from .._cli_args import add_command, add_commands, duration, positive_int
from ..catalog import Catalog, default_catalog, load_catalog
from ..clock import SystemClock
from ..ledger import LedgerStore
from ..notices.detectors import detect_notices
from ..stores.sqlite.rating import SqliteRatingStore
from .bills import build_bill
from .export import render_bill
from .months import Month, parse_month
from .open import MoneyRatingStore, rating_store_for
from .plans import QpsSubscription
from .purchases import PlanView, buy_qps_subscription, buy_resource_plan, list_plans, show_plan
from .settlement import SettleProgress, SettleReport, rerate, settle

__all__ = ["CATALOG_ENV", "RATING_COLUMNS", "add_rating_commands"]

CATALOG_ENV = "METERING_CATALOG_PATH"


def _month(text: str) -> Month:
    try:
        return parse_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a non-negative amount")
    return value


def _catalog(args: argparse.Namespace) -> Catalog:
    path = args.catalog or os.environ.get(CATALOG_ENV)
    return load_catalog(path) if path else default_catalog()


@asynccontextmanager
async def _rating(store: LedgerStore) -> AsyncIterator[MoneyRatingStore]:
    async with rating_store_for(store) as ratings:
        yield ratings


def _plan_row(view: PlanView, zone: tzinfo) -> dict[str, Any]:
    plan = view.plan
    if isinstance(plan, QpsSubscription):
        covers, qps, points = f"{plan.category}/{plan.action}", plan.qps, None
    else:
        covers, qps, points = ",".join(sorted(plan.categories)), None, plan.points
    return {
        "id": plan.id,
        "account": plan.account,
        "kind": view.kind,
        "covers": covers,
        "qps": qps,
        "points": points,
        "remaining": view.remaining,
        "start": plan.start.astimezone(zone),
        "end": plan.end.astimezone(zone),
        "ordered_at": plan.ordered_at.astimezone(zone),
        "price_paid": plan.price_paid,
        "refunded_at": plan.refunded_at.astimezone(zone) if plan.refunded_at else None,
    }


async def _plans_buy(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    catalog = _catalog(args)
    ordered_at = args.ordered_at or SystemClock().now()
    async with _rating(store) as ratings:
        if args.kind == "qps":
            sub = await buy_qps_subscription(
                ratings,
                catalog,
                account=args.account,
                category=args.category,
                action=args.action,
                qps=args.qps,
                ordered_at=ordered_at,
                price_paid=args.price,
                months=args.months,
                subscription_id=args.id,
                require_funds=not args.allow_debt,
            )
            view = PlanView(sub, None)
        else:
            categories = None
            if args.kind == "single":
                categories = {args.category}
            elif args.categories:
                categories = {c.strip() for c in args.categories.split(",") if c.strip()}
            plan = await buy_resource_plan(
                ratings,
                catalog,
                account=args.account,
                kind=args.kind,
                points=args.points,
                ordered_at=ordered_at,
                price_paid=args.price,
                categories=categories,
                validity_months=args.validity_months,
                plan_id=args.id,
                require_funds=not args.allow_debt,
            )
            view = PlanView(plan, plan.points)
    print(f"bought {view.plan.id} for {view.plan.account}", file=sys.stderr)
    return [_plan_row(view, args.tz)]


async def _plans_list(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        return [_plan_row(v, args.tz) for v in await list_plans(ratings, account=args.account)]


async def _plans_show(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        return [_plan_row(await show_plan(ratings, args.id), args.tz)]


def _progress(step: SettleProgress) -> None:
    print(
        f"settled {step.month}: {step.records:,} records ({step.total:,} in this pass)",
        file=sys.stderr,
    )


def _report_row(report: SettleReport, zone: tzinfo) -> dict[str, Any]:
    return {
        "horizon": report.horizon.astimezone(zone) if report.horizon else None,
        "accounts": report.accounts,
        "records": report.records,
        "adjustments": report.adjustments,
        "deferred": report.deferred,
        "rerated": ",".join(report.rerated),
    }


async def _settle(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        report = await settle(
            ratings,
            _catalog(args),
            SystemClock(),
            lag=timedelta(seconds=args.lag),
            grace=timedelta(days=args.grace),
            account=args.account,
            month=args.month,
            progress=_progress,
        )
        # The notices the settled results call for (once each: deterministic ids). Notice
        # detection reads the SQLite file (not on PostgreSQL yet: docs/postgresql.md).
        found = []
        if isinstance(ratings, SqliteRatingStore):
            found = await detect_notices(ratings.path, SystemClock().now())
    if found:
        print(f"recorded {len(found)} notice(s): see `metering notices`", file=sys.stderr)
    return [_report_row(report, args.tz)]


async def _rerate(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        report = await rerate(
            ratings,
            _catalog(args),
            SystemClock(),
            month=args.month,
            account=args.account,
            progress=_progress,
        )
    return [_report_row(report, args.tz)]


async def _bill(store: LedgerStore, args: argparse.Namespace) -> str:
    catalog = _catalog(args)
    async with _rating(store) as ratings:
        bill = await build_bill(ratings, args.account, args.month, grace=timedelta(days=args.grace))
    return render_bill(bill, args.format, point_value=catalog.point_value, tz=args.tz)


PLAN_COLUMNS = [
    "id",
    "account",
    "kind",
    "covers",
    "qps",
    "points",
    "remaining",
    "start",
    "end",
    "ordered_at",
    "price_paid",
    "refunded_at",
]
REPORT_COLUMNS = ["horizon", "accounts", "records", "adjustments", "deferred", "rerated"]

#: Output columns of each handler that returns rows (``bill`` renders its own text).
RATING_COLUMNS: dict[Callable[..., Any], list[str]] = {
    _plans_buy: PLAN_COLUMNS,
    _plans_list: PLAN_COLUMNS,
    _plans_show: PLAN_COLUMNS,
    _settle: REPORT_COLUMNS,
    _rerate: REPORT_COLUMNS,
}


def add_rating_commands(groups: Any) -> Any:
    """Add ``plans``, ``settle``, ``rerate`` and ``bill`` to the CLI's subcommands; returns
    the ``plans`` commands (the money commands add theirs)."""

    def command(subs: Any, name: str, text: str) -> argparse.ArgumentParser:
        p = add_command(subs, name, text)
        p.add_argument(
            "--catalog",
            metavar="FILE",
            help=f"catalog file (default: ${CATALOG_ENV} or the packaged one)",
        )
        return p

    def grace(p: argparse.ArgumentParser, text: str) -> None:
        # --grace is the spelling before the unit went into the name; scripts keep working.
        p.add_argument(
            "--grace-days",
            "--grace",
            dest="grace",
            metavar="DAYS",
            type=duration("days"),
            default=2.0,
            help=f"{text} (default: 2)",
        )

    plans = add_command(groups, "plans", "QPS subscriptions and resource plans")
    pacts = add_commands(plans, "command")
    buy = add_command(pacts, "buy", "buy a plan (entries are immutable once bought)")
    kinds = add_commands(buy, "kind")
    for kind, text in (
        ("single", "buy a single-category resource plan"),
        ("general", "buy a general-purpose resource plan (default: every image category)"),
        ("qps", "buy a QPS subscription for one API (a renewal starts when the current ends)"),
    ):
        p = command(kinds, kind, text)
        p.add_argument("account", help="the account it is for")
        p.add_argument(
            "--price", metavar="CNY", type=_decimal, required=True, help="price paid, in CNY"
        )
        p.add_argument(
            "--ordered-at",
            metavar="TIME",
            help="when it was bought (ISO 8601; default: now); the plan starts then",
        )
        p.add_argument("--id", help="plan id (default: generated)")
        p.add_argument(
            "--allow-debt",
            action="store_true",
            help="buy even if the balance does not cover the price (it is charged anyway)",
        )
        if kind == "qps":
            p.add_argument("--category", required=True, help="the API's category, e.g. facebody")
            p.add_argument("--action", required=True, help="the API's action, e.g. DetectFace")
            p.add_argument(
                "--qps", type=positive_int, required=True, help="calls per second subscribed"
            )
            p.add_argument(
                "--months",
                type=positive_int,
                default=1,
                help="length of the period, in months (default: 1)",
            )
            p.set_defaults(warn_budget=True)  # warns when sold above the upstream budget
        else:
            if kind == "single":
                p.add_argument("--category", required=True, help="the category it covers, e.g. ocr")
            else:
                p.add_argument(
                    "--categories",
                    metavar="LIST",
                    help="comma-separated categories it covers (default: every image category)",
                )
            p.add_argument("--points", type=_decimal, required=True, help="resource points bought")
            p.add_argument(
                "--validity-months",
                metavar="MONTHS",
                type=positive_int,
                default=12,
                help="how long the points stay valid, in months (default: 12)",
            )
        p.set_defaults(handler=_plans_buy)
    lst = command(pacts, "list", "plans with their points left")
    lst.add_argument("--account", help="this account's plans only")
    lst.set_defaults(handler=_plans_list)
    show = command(pacts, "show", "one plan")
    show.add_argument("id", help="the plan's id")
    show.set_defaults(handler=_plans_show)

    st = command(groups, "settle", "settle new ledger records (progress on stderr)")
    st.add_argument("--account", help="settle this account only")
    st.add_argument(
        "--month", metavar="YYYY-MM", type=_month, help="settle no further than this month's end"
    )
    # --lag is the spelling before the unit went into the name; scripts keep working.
    st.add_argument(
        "--lag-seconds",
        "--lag",
        dest="lag",
        metavar="SECONDS",
        type=duration("seconds"),
        default=60.0,
        help="settle only records older than this many seconds, so calls still being "
        "written are not missed (default: 60)",
    )
    grace(st, "days after a month's end before it closes; later records become adjustments")
    st.set_defaults(handler=_settle)
    rr = command(groups, "rerate", "re-rate settled months from their records")
    rr.add_argument(
        "--month",
        metavar="YYYY-MM",
        type=_month,
        required=True,
        help="re-rate from this month on",
    )
    rr.add_argument("--account", help="re-rate this account only")
    rr.set_defaults(handler=_rerate)
    bill = command(groups, "bill", "an account's bill for a month")
    bill.add_argument("account", help="the account billed")
    bill.add_argument(
        "--month", metavar="YYYY-MM", type=_month, required=True, help="the billing month (UTC+8)"
    )
    grace(bill, "days after the month's end before the bill is final")
    bill.set_defaults(handler=_bill)
    return pacts
