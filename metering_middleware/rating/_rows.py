"""Rating values to and from SQLite rows (decimal text, fixed-width UTC text, JSON state)."""

from __future__ import annotations

import gc
import json
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from itertools import repeat
from types import MappingProxyType
from typing import Any

from ..ledger.codec import format_time, parse_time
from ..ledger.records import CallRecord
from .months import Month, parse_month
from .plans import PlanKind, QpsSubscription, ResourcePlan
from .results import Source, SourceKind
from .state import DeductionState, PositionKey
from .store import AccountProgress, Adjustment, BillLine, Plan

__all__: list[str] = []  # private helpers of the SQLite rating store

PLAN_COLUMNS = (
    "p.seq, p.id, p.account, p.kind, p.categories, p.action, p.qps, p.points, p.start_at,"
    " p.end_at, p.ordered_at, p.price_paid, r.refunded_at, r.recorded_at"
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
    """``DeductionState.to_plain`` as compact JSON (built directly: one per account per pass)."""
    positions: dict[str, dict[str, dict[str, int]]] = {}
    for (account, item, month), n in state.positions.items():
        positions.setdefault(account, {}).setdefault(item, {})[text_of(month)] = n
    remaining = {plan: str(points) for plan, points in state.remaining.items()}
    doc = {"positions": positions, "remaining": remaining}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def state_from_text(text: str) -> DeductionState:
    """Inverse of :func:`state_text` (``DeductionState.from_plain``'s format, read faster:
    settlement loads one per account per pass)."""
    doc = json.loads(text)
    remaining = {plan: Decimal(points) for plan, points in doc["remaining"].items()}
    positions = {
        (account, item, month_of(month)): n
        for account, by_item in doc["positions"].items()
        for item, by_month in by_item.items()
        for month, n in by_month.items()
    }
    return trusted_state(remaining, positions)


def trusted_state(
    remaining: dict[str, Decimal], positions: dict[PositionKey, int]
) -> DeductionState:
    """A ``DeductionState`` of values that were checked when first made (read back from
    this store, or parts of a state): settlement builds thousands per pass, and the
    check is most of a small state's cost."""
    state = object.__new__(DeductionState)
    object.__setattr__(state, "remaining", MappingProxyType(remaining))
    object.__setattr__(state, "positions", MappingProxyType(positions))
    return state


@lru_cache(maxsize=4096)
def text_of(month: Month) -> str:
    return str(month)


@lru_cache(maxsize=4096)
def month_of(text: str) -> Month:
    """``parse_month``, remembered: a few distinct months are parsed thousands of times."""
    return parse_month(text)


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
    _, pid, account, kind, categories, action, qps, points, start, end, ordered, price, refund = (
        row[:13]
    )
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
        text_of(line.billed),
        text_of(line.origin),
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
        billed=month_of(billed),
        origin=month_of(origin),
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
        frontier = (month_of(f_month), parse_time(f_at), parse_time(f_occurred), f_id)
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
        origin=month_of(origin),
        billed=month_of(billed),
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


_FIELDS = tuple(CallRecord.__dataclass_fields__)
_READ = ("id", "account", "item", "occurred_at")
_PLACEHOLDERS = {
    "request_id": None,
    "access_key_id": "",
    "category": "",
    "action": "",
    "version": "",
    "status": 200,
    "error_code": None,
    "latency_ms": 0.0,
}
assert set(_FIELDS) == {*_READ, *_PLACEHOLDERS}, "CallRecord changed: update the bulk reader"


def records_from_rows(
    rows: Sequence[Any],
    parse: Callable[[Any], datetime] | None = datetime.fromisoformat,
) -> tuple[list[CallRecord], list[int], list[Any]]:
    """``(seq, id, account, item, occurred_at, recorded_at|None)`` rows as rating records.

    This is the hot loop of a full settlement (a million records), so it works column by
    column in C: records are allocated, then each field is set through its slot, which is
    what the frozen dataclass's ``__init__`` does one call per record, at twice the cost.
    The values are the constructor's own (times are aware UTC: ``...Z``). Account and item
    names are interned (a million copies of a few hundred strings otherwise). ``parse``
    reads ``occurred_at`` (SQLite's text); None when the driver already gives aware UTC
    datetimes (asyncpg). The arrivals (``recorded_at``) are returned as read.
    """
    if not rows:
        return [], [], []
    seqs, ids, accounts, items, occurred, arrived = zip(*rows, strict=True)
    n = len(ids)
    records: list[CallRecord] = list(map(object.__new__, repeat(CallRecord, n)))
    columns: dict[str, Iterable[Any]] = {
        "id": ids,
        "account": map(sys.intern, accounts),
        "item": map(sys.intern, items),
        "occurred_at": occurred if parse is None else map(parse, occurred),
    }
    for name in _FIELDS:
        values = columns.get(name)
        if values is None:
            values = repeat(_PLACEHOLDERS[name], n)
        deque(map(getattr(CallRecord, name).__set__, records, values), maxlen=0)
    return records, list(seqs), list(arrived)
