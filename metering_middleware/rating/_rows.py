"""Rating values to and from SQLite rows (decimal text, fixed-width UTC text, JSON state)."""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from itertools import repeat
from typing import Any

from ..ledger.codec import format_time, parse_time
from ..ledger.records import CallRecord
from .months import Month, parse_month
from .plans import PlanKind, QpsSubscription, ResourcePlan
from .results import Source, SourceKind
from .state import DeductionState
from .store import AccountProgress, Adjustment, BillLine, Plan

__all__: list[str] = []  # private helpers of the SQLite rating store

PLAN_COLUMNS = (
    "p.seq, p.id, p.account, p.kind, p.categories, p.action, p.qps, p.points, p.start_at,"
    " p.end_at, p.ordered_at, p.price_paid, r.refunded_at"
)
LINE_COLUMNS = (
    "account, billed_month, origin_month, item, kind, plan_id, tier, unit_price, category,"
    " calls, points, amount"
)
ACCOUNT_COLUMNS = (
    "account, seen, horizon, frontier_month, frontier_at, frontier_occurred, frontier_id,"
    " state, updated_at"
)
ADJUSTMENT_COLUMNS = (
    "call_seq, call_id, account, occurred_at, origin_month, billed_month, effective_at"
)


def decimal_text(value: Decimal) -> str:
    """Plain notation, never an exponent: ``Decimal('1E+1')`` is stored as ``10``."""
    return format(value, "f")


def optional_time(text: str | None) -> datetime | None:
    return None if text is None else parse_time(text)


def state_text(state: DeductionState) -> str:
    return json.dumps(state.to_plain(), separators=(",", ":"), sort_keys=True)


def state_from_text(text: str) -> DeductionState:
    return DeductionState.from_plain(json.loads(text))


def plan_row(plan: Plan, recorded_at: datetime) -> tuple[Any, ...]:
    common = (format_time(plan.start), format_time(plan.end), format_time(plan.ordered_at))
    price = decimal_text(plan.price_paid)
    if isinstance(plan, QpsSubscription):
        return (
            plan.id,
            plan.account,
            "qps",
            plan.category,
            plan.action,
            plan.qps,
            None,
            *common,
            price,
            format_time(recorded_at),
        )
    return (
        plan.id,
        plan.account,
        plan.kind.value,
        " ".join(sorted(plan.categories)),
        None,
        None,
        decimal_text(plan.points),
        *common,
        price,
        format_time(recorded_at),
    )


def plan_from_row(row: Sequence[Any]) -> Plan:
    _, pid, account, kind, categories, action, qps, points, start, end, ordered, price, refund = row
    times = {"start": parse_time(start), "end": parse_time(end), "ordered_at": parse_time(ordered)}
    if kind == "qps":
        return QpsSubscription(
            id=pid,
            account=account,
            category=categories,
            action=action,
            qps=int(qps),
            price_paid=Decimal(price),
            refunded_at=optional_time(refund),
            **times,
        )
    return ResourcePlan(
        id=pid,
        account=account,
        kind=PlanKind(kind),
        categories=frozenset(categories.split()),
        points=Decimal(points),
        price_paid=Decimal(price),
        refunded_at=optional_time(refund),
        **times,
    )


def line_row(line: BillLine) -> tuple[Any, ...]:
    source = line.source
    return (
        line.account,
        str(line.billed),
        str(line.origin),
        line.item,
        source.kind.value,
        source.plan_id or "",
        -1 if source.tier is None else source.tier,
        "" if source.unit_price is None else decimal_text(source.unit_price),
        line.category,
        line.calls,
        decimal_text(line.points),
        decimal_text(line.amount),
    )


def line_from_row(row: Sequence[Any]) -> BillLine:
    account, billed, origin, item, kind, plan_id, tier, price, category, calls, points, amount = row
    source = Source(
        SourceKind(kind),
        plan_id or None,
        None if tier < 0 else int(tier),
        None if price == "" else Decimal(price),
    )
    return BillLine(
        account=account,
        billed=parse_month(billed),
        origin=parse_month(origin),
        category=category,
        item=item,
        source=source,
        calls=int(calls),
        points=Decimal(points),
        amount=Decimal(amount),
    )


def account_row(p: AccountProgress) -> tuple[Any, ...]:
    f = p.frontier
    return (
        p.account,
        p.seen,
        format_time(p.horizon),
        None if f is None else str(f[0]),
        None if f is None else format_time(f[1]),
        None if f is None else format_time(f[2]),
        None if f is None else f[3],
        state_text(p.state),
        format_time(p.updated_at),
    )


def account_from_row(row: Sequence[Any]) -> AccountProgress:
    account, seen, horizon, f_month, f_at, f_occurred, f_id, state, updated = row
    frontier = None
    if f_month is not None:
        frontier = (parse_month(f_month), parse_time(f_at), parse_time(f_occurred), f_id)
    return AccountProgress(
        account=account,
        seen=int(seen),
        horizon=parse_time(horizon),
        frontier=frontier,
        state=state_from_text(state),
        updated_at=parse_time(updated),
    )


def adjustment_row(a: Adjustment) -> tuple[Any, ...]:
    return (
        a.seq,
        a.call_id,
        a.account,
        format_time(a.occurred_at),
        str(a.origin),
        str(a.billed),
        format_time(a.effective_at),
    )


def adjustment_from_row(row: Sequence[Any]) -> Adjustment:
    seq, call_id, account, occurred, origin, billed, effective = row
    return Adjustment(
        seq=int(seq),
        call_id=call_id,
        account=account,
        occurred_at=parse_time(occurred),
        origin=parse_month(origin),
        billed=parse_month(billed),
        effective_at=parse_time(effective),
    )


def month_text(month: Month | None) -> str | None:
    return None if month is None else str(month)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector while building a million small objects.

    None of them can form a cycle, yet each young-generation collection would traverse
    them again: pausing halves the cost of a bulk read. Reference counting still frees.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def records_from_rows(
    rows: Sequence[tuple[Any, ...]],
) -> tuple[list[CallRecord], list[int], list[str | None]]:
    """``(seq, id, account, item, occurred_at, recorded_at|None)`` rows as rating records.

    Column-wise and through ``map`` so the per-record work stays in C; account and item
    names are interned (a million copies of a few hundred strings otherwise).
    """
    if not rows:
        return [], [], []
    seqs, ids, accounts, items, occurred, arrived = zip(*rows, strict=True)
    intern = sys.intern
    records = list(
        map(
            CallRecord,
            ids,
            repeat(None),
            map(intern, accounts),
            repeat(""),
            repeat(""),
            repeat(""),
            repeat(""),
            map(intern, items),
            map(datetime.fromisoformat, occurred),
            repeat(200),
            repeat(None),
            repeat(0.0),
        )
    )
    return records, list(seqs), list(arrived)
