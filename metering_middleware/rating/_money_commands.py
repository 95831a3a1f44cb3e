"""The money commands of ``metering`` (private): balances, holds, renewals, refunds.

Thin: argument parsing and output rows; the work is in :mod:`.cash` and :mod:`.renewals`.
Malformed amounts are usage errors (exit 2, from argparse); refused operations are
``ValueError``s (one line, exit 1, nothing written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from .._cli_args import add_command, add_commands, positive_int
from ..ledger import LedgerStore
from ._commands import PLAN_COLUMNS, _catalog, _plan_row
from .balances import (
    BalanceEntry,
    BalanceError,
    EntryKind,
    correction_amount,
    limit_amount,
    topup_amount,
)
from .cash import (
    BalanceView,
    balance_view,
    correct_balance,
    hold_account,
    release_account,
    set_low_balance,
    set_monthly_cap,
    top_up,
)
from .open import MoneyRatingStore, rating_store_for
from .plans import ResourcePlan
from .purchases import PlanView
from .renewals import RefundQuote, quote_refund, refund, renew_plan

__all__ = ["MONEY_COLUMNS", "add_money_commands"]


def _checked(check: Callable[[str], Decimal]) -> Callable[[str], Decimal]:
    def parse(text: str) -> Decimal:
        try:
            return check(text)
        except BalanceError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _limit(what: str) -> Callable[[str], Decimal | None]:
    def parse(text: str) -> Decimal | None:
        if text.lower() == "none":
            return None
        try:
            return limit_amount(text, what)
        except BalanceError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


@asynccontextmanager
async def _rating(store: LedgerStore) -> AsyncIterator[MoneyRatingStore]:
    async with rating_store_for(store) as ratings:
        yield ratings


def _view_row(v: BalanceView, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "account": v.account,
        "balance": v.balance,
        "standing": v.standing,
        "overdue_since": v.overdue_since.astimezone(args.tz) if v.overdue_since else None,
        "monthly_cap": v.settings.monthly_cap,
        "low_balance": v.settings.low_balance,
    }


def _entry_row(e: BalanceEntry, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "id": e.id,
        "account": e.account,
        "kind": e.kind.value,
        "amount": e.amount,
        "at": e.at.astimezone(args.tz),
        "month": None if e.month is None else str(e.month),
        "ref": e.ref,
        "reason": e.reason,
    }


async def _show(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        return [_view_row(await balance_view(ratings, args.account), args)]


async def _topup(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        entry, new = await top_up(
            ratings, args.account, args.amount, key=args.id, reason=args.reason
        )
        view = await balance_view(ratings, args.account)
    done = "topped up" if new else "already posted, nothing new: top-up"
    print(f"{done} {args.account} by {entry.amount} CNY ({entry.id})", file=sys.stderr)
    return [_view_row(view, args)]


async def _adjust(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        entry, new = await correct_balance(
            ratings, args.account, args.amount, args.reason, key=args.id
        )
        view = await balance_view(ratings, args.account)
    done = "corrected" if new else "already posted, nothing new: correction of"
    print(f"{done} {args.account} by {entry.amount} CNY ({entry.id})", file=sys.stderr)
    return [_view_row(view, args)]


async def _entries(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        await balance_view(ratings, args.account)  # unknown accounts are an error
        found = await ratings.balance_entries(
            args.account,
            since=args.since,
            until=args.until,
            kind=None if args.kind is None else EntryKind(args.kind),
        )
    return [_entry_row(e, args) for e in found]


async def _cap(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        await set_monthly_cap(ratings, args.account, args.amount)
        view = await balance_view(ratings, args.account)
    return [_view_row(view, args)]


async def _threshold(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        await set_low_balance(ratings, args.account, args.amount)
        view = await balance_view(ratings, args.account)
    return [_view_row(view, args)]


async def _suspend(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        await hold_account(ratings, args.account, args.reason)
        view = await balance_view(ratings, args.account)
    print(f"suspended {args.account}: its calls are refused until restored", file=sys.stderr)
    return [_view_row(view, args)]


async def _restore(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        await release_account(ratings, args.account)
        view = await balance_view(ratings, args.account)
    note = "" if view.standing == "good" else f" (still {view.standing}: balance {view.balance})"
    print(f"lifted the suspension of {args.account}{note}", file=sys.stderr)
    return [_view_row(view, args)]


async def _renew(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        plan = await renew_plan(
            ratings,
            _catalog(args),
            args.id,
            price=args.price,
            months=args.months,
            new_id=args.new_id,
            require_funds=not args.allow_debt,
        )
    print(f"renewed {args.id} as {plan.id}", file=sys.stderr)
    remaining = plan.points if isinstance(plan, ResourcePlan) else None
    return [_plan_row(PlanView(plan, remaining), args.tz)]


def _quote_row(q: RefundQuote, args: argparse.Namespace, done: bool) -> dict[str, Any]:
    return {
        "plan": q.plan.id,
        "account": q.plan.account,
        "paid": q.paid,
        "held_hours": round(q.held_for.total_seconds() / 3600, 2),
        "used_calls": q.used_calls,
        "used_value": q.used_value,
        "amount": q.amount,
        "refundable": q.refundable,
        "refunded": done,
        "at": q.at.astimezone(args.tz),
        "rule": q.rule,
    }


async def _refund(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _rating(store) as ratings:
        catalog = _catalog(args)
        if not args.yes:
            quote = await quote_refund(ratings, catalog, args.id)
            what = f"would refund {quote.amount} CNY" if quote.refundable else "not refundable"
            print(f"{args.id}: {what}; nothing done (add --yes to refund)", file=sys.stderr)
            return [_quote_row(quote, args, False)]
        quote = await refund(ratings, catalog, args.id)
    print(f"refunded {args.id}: {quote.amount} CNY to {quote.plan.account}", file=sys.stderr)
    return [_quote_row(quote, args, True)]


VIEW_COLUMNS = ["account", "balance", "standing", "overdue_since", "monthly_cap", "low_balance"]
ENTRY_COLUMNS = ["seq", "id", "account", "kind", "amount", "at", "month", "ref", "reason"]
QUOTE_COLUMNS = [
    "plan",
    "account",
    "paid",
    "held_hours",
    "used_calls",
    "used_value",
    "amount",
    "refundable",
    "refunded",
    "at",
    "rule",
]

MONEY_COLUMNS: dict[Callable[..., Any], list[str]] = {
    _show: VIEW_COLUMNS,
    _topup: VIEW_COLUMNS,
    _adjust: VIEW_COLUMNS,
    _entries: ENTRY_COLUMNS,
    _cap: VIEW_COLUMNS,
    _threshold: VIEW_COLUMNS,
    _suspend: VIEW_COLUMNS,
    _restore: VIEW_COLUMNS,
    _refund: QUOTE_COLUMNS,
    _renew: PLAN_COLUMNS,
}


def add_money_commands(groups: Any, accounts: Any, plans: Any) -> None:
    """Add ``balance`` to the groups, ``suspend``/``restore`` to ``accounts``' commands and
    ``renew``/``refund`` to ``plans``' commands."""
    bal = add_command(groups, "balance", "cash balances: show, top up, entries, corrections")
    acts = add_commands(bal, "command")
    show = add_command(acts, "show", "an account's balance, standing, cap and threshold")
    show.add_argument("account", help="the account")
    show.set_defaults(handler=_show)
    top = add_command(acts, "topup", "credit an account (an enabled one)")
    top.add_argument("account", help="the account")
    top.add_argument(
        "amount", type=_checked(topup_amount), help="CNY, positive, at most 2 decimals"
    )
    top.add_argument("--id", help="idempotency key: the same key again posts nothing new")
    top.add_argument("--reason", help="a note kept with the entry (e.g. the payment's reference)")
    top.set_defaults(handler=_topup)
    ent = add_command(acts, "entries", "an account's entries, oldest first")
    ent.add_argument("account", help="the account")
    ent.add_argument("--since", metavar="TIME", help="entries dated from this time (ISO 8601)")
    ent.add_argument("--until", metavar="TIME", help="entries dated before this time")
    ent.add_argument("--kind", choices=[k.value for k in EntryKind], help="this kind only")
    ent.set_defaults(handler=_entries)
    adj = add_command(acts, "adjust", "a manual correction, with its reason (either sign)")
    adj.add_argument("account", help="the account")
    adj.add_argument(
        "amount",
        type=_checked(correction_amount),
        help="CNY, non-zero, either sign, at most 4 decimals",
    )
    adj.add_argument("--reason", required=True, help="why (kept with the entry)")
    adj.add_argument("--id", help="idempotency key: the same key again posts nothing new")
    adj.set_defaults(handler=_adjust)
    cap = add_command(acts, "cap", "cap an account's pay-as-you-go spend per billing month")
    cap.add_argument("account", help="the account")
    cap.add_argument("amount", type=_limit("a monthly cap"), help="CNY, or 'none' to remove it")
    cap.set_defaults(handler=_cap)
    low = add_command(acts, "threshold", "a notice when the balance falls below an amount")
    low.add_argument("account", help="the account")
    low.add_argument(
        "amount", type=_limit("a low-balance threshold"), help="CNY, or 'none' to remove it"
    )
    low.set_defaults(handler=_threshold)

    sus = add_command(accounts, "suspend", "refuse an account's calls until restored by hand")
    sus.add_argument("account", help="the account")
    sus.add_argument("--reason", required=True, help="why (kept with the standing and notice)")
    sus.set_defaults(handler=_suspend)
    res = add_command(accounts, "restore", "lift a suspension made by hand")
    res.add_argument("account", help="the account")
    res.set_defaults(handler=_restore)

    def catalog_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--catalog", metavar="FILE", help="catalog file (default: the packaged one)")

    ren = add_command(plans, "renew", "buy the next period of a plan, paid from the balance")
    ren.add_argument("id", help="the plan or subscription renewed")
    ren.add_argument("--price", type=_checked(_price), help="CNY (default: what it cost)")
    ren.add_argument(
        "--months", type=positive_int, help="length in months (default: as the renewed one)"
    )
    ren.add_argument("--new-id", help="the renewal's id (default: generated)")
    ren.add_argument(
        "--allow-debt", action="store_true", help="buy even if the balance does not cover it"
    )
    catalog_option(ren)
    # warn_budget: a renewed QPS subscription sold above the upstream budget is warned of.
    ren.set_defaults(handler=_renew, warn_budget=True)
    ref = add_command(plans, "refund", "refund a plan (120 h rule); shows the amount first")
    ref.add_argument("id", help="the plan or subscription refunded")
    ref.add_argument("--yes", action="store_true", help="refund it (without: only show)")
    catalog_option(ref)
    ref.set_defaults(handler=_refund)


def _price(text: str) -> Decimal:
    if Decimal(text) == 0 if _is_number(text) else False:
        return Decimal(0)
    return limit_amount(text, "a price")


def _is_number(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except ArithmeticError:
        return False
