"""Builders for rating tests, and a deliberately simple per-call reference deduction."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from metering_middleware.catalog import Catalog
from metering_middleware.ledger.records import CallRecord
from metering_middleware.rating import (
    PlanKind,
    QpsSubscription,
    ResourcePlan,
    Source,
    SourceKind,
)

PLATE = "ocr.RecognizeLicensePlate"
DETECT = "facebody.DetectFace"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def call(
    catalog: Catalog, rid: str, when: datetime, item: str = PLATE, account: str = "acct"
) -> CallRecord:
    it = catalog.by_item()[item]
    return CallRecord(
        id=rid,
        request_id=None,
        account=account,
        access_key_id="AK",
        category=it.category,
        action=it.action,
        version=it.version,
        item=item,
        occurred_at=when,
        status=200,
        error_code=None,
        latency_ms=1.0,
    )


def calls_between(
    catalog: Catalog,
    count: int,
    start: datetime,
    step: timedelta,
    item: str = PLATE,
    account: str = "acct",
    prefix: str = "c",
) -> list[CallRecord]:
    return [
        call(catalog, f"{prefix}{i:08d}", start + i * step, item, account) for i in range(count)
    ]


def plan(
    pid: str,
    kind: str,
    categories: Iterable[str],
    points: str | int,
    start: datetime,
    end: datetime,
    *,
    account: str = "acct",
    ordered_at: datetime | None = None,
    refunded_at: datetime | None = None,
) -> ResourcePlan:
    return ResourcePlan(
        id=pid,
        account=account,
        kind=PlanKind(kind),
        categories=frozenset(categories),
        points=Decimal(points),
        start=start,
        end=end,
        ordered_at=ordered_at or start,
        price_paid=Decimal(50),
        refunded_at=refunded_at,
    )


def qps(
    sid: str,
    category: str,
    action: str,
    start: datetime,
    end: datetime,
    *,
    account: str = "acct",
    refunded_at: datetime | None = None,
) -> QpsSubscription:
    return QpsSubscription(
        id=sid,
        account=account,
        category=category,
        action=action,
        qps=5,
        start=start,
        end=end,
        ordered_at=start,
        price_paid=Decimal(100),
        refunded_at=refunded_at,
    )


_BEIJING = timezone(timedelta(hours=8))


@dataclass
class Reference:
    """Outcome of ``reference_deduct``: what a naive, call-by-call reading of the rules gives."""

    sources: dict[str, Source] = field(default_factory=dict)
    payg: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (account, YYYY-MM)
    remaining: dict[str, Decimal] = field(default_factory=dict)
    positions: dict[tuple[str, str, str], int] = field(default_factory=dict)


def _covers_at(source: ResourcePlan | QpsSubscription, when: datetime) -> bool:
    refunded = source.refunded_at is not None and when >= source.refunded_at
    return source.start <= when < source.end and not refunded


def reference_deduct(
    calls: Iterable[CallRecord],
    plans: list[ResourcePlan],
    subs: list[QpsSubscription],
    catalog: Catalog,
    *,
    order: Callable[[CallRecord], Any] | None = None,
    gone: Callable[[CallRecord, ResourcePlan | QpsSubscription], bool] | None = None,
) -> Reference:
    """One call at a time, Decimal arithmetic, linear scans: slow and obviously right.

    Calls are taken in (occurred_at, id) order unless ``order`` says otherwise (settlement
    takes an adjustment at its arrival); each is still judged at its own time, except that
    a plan ``gone`` for it (refunded before it arrived) covers it no more."""
    out = Reference(remaining={p.id: p.points for p in plans})
    items = {it.item: it for it in catalog.items}
    for c in sorted(calls, key=order or (lambda r: (r.occurred_at, r.id))):
        it = items[c.item]
        t = c.occurred_at
        covering = [
            s
            for s in subs
            if s.account == c.account
            and (s.category, s.action) == (it.category, it.action)
            and _covers_at(s, t)
            and not (gone and gone(c, s))
        ]
        if covering:
            first = min(covering, key=lambda s: (s.end, s.ordered_at, s.id))
            out.sources[c.id] = Source(SourceKind.QPS, first.id)
            continue
        if it.free:
            out.sources[c.id] = Source(SourceKind.FREE)
            continue
        chosen = None
        for kind in (PlanKind.SINGLE, PlanKind.GENERAL):
            candidates = sorted(
                (
                    p
                    for p in plans
                    if p.account == c.account
                    and p.kind == kind
                    and it.category in p.categories
                    and _covers_at(p, t)
                    and not (gone and gone(c, p))
                ),
                key=lambda p: (p.end, p.ordered_at, p.id),
            )
            for p in candidates:
                if out.remaining[p.id] >= it.coefficient:
                    chosen = p
                    break
            if chosen is not None:
                break
        if chosen is not None:
            out.remaining[chosen.id] -= it.coefficient
            kind_of = SourceKind.SINGLE if chosen.kind == PlanKind.SINGLE else SourceKind.GENERAL
            out.sources[c.id] = Source(kind_of, chosen.id)
            continue
        local = t.astimezone(_BEIJING)
        month = f"{local.year:04d}-{local.month:02d}"
        key = (c.account, c.item, month)
        n = out.positions.get(key, 0) + 1
        out.positions[key] = n
        schedule = [s for s in it.prices if s.effective_from <= t][-1]
        tier = next(i for i, tr in enumerate(schedule.tiers) if tr.up_to is None or n <= tr.up_to)
        price = schedule.tiers[tier].price
        out.sources[c.id] = Source(SourceKind.PAYG, None, tier, price)
        out.payg[(c.account, month)] = out.payg.get((c.account, month), Decimal(0)) + price
    return out
