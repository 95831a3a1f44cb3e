"""The values every billing view shows, frozen, each with ``to_json()``.

``to_json()`` returns plain dicts and lists (money as strings, instants ISO 8601 UTC with
``Z``, days ``YYYY-MM-DD``, months ``YYYY-MM``): the admin API, the tenant view and the
web page serialise these, never their own copies, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from ..rating.months import Month
from ._json import day_text, money, money_or_none, time_or_none, time_text

__all__ = [
    "AccountOverview",
    "AccountPage",
    "AccountSummary",
    "BillLineView",
    "BillPlanView",
    "BillReport",
    "DeductionLine",
    "DeductionSource",
    "ItemPreview",
    "MonthDeduction",
    "MonthPreview",
    "PlanStatus",
    "UsageReport",
    "UsageRow",
    "offset_text",
]


def offset_text(offset: timedelta) -> str:
    """``+08:00``, ``-03:30``, ``+05:45``: a UTC offset as people write it."""
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{rest:02d}"


def _counts(mapping: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(sorted(mapping.items())))


# -- usage ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Calls of one group (a day, an API, ...) by outcome, from the per-minute counters.

    A grouping key the report was not grouped by is ``None`` (the totals row has all
    three ``None``). ``free`` is by upstream error code, ``refused`` by the gateway's
    reason (both sorted by key).
    """

    day: date | None
    category: str | None
    action: str | None
    charged: int
    free: Mapping[str, int]
    refused: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "free", _counts(self.free))
        object.__setattr__(self, "refused", _counts(self.refused))

    @property
    def free_total(self) -> int:
        return sum(self.free.values())

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    @property
    def total(self) -> int:
        return self.charged + self.free_total + self.refused_total

    def to_json(self) -> dict[str, Any]:
        return {
            "day": None if self.day is None else day_text(self.day),
            "category": self.category,
            "action": self.action,
            "charged": self.charged,
            "free": dict(self.free),
            "refused": dict(self.refused),
            "total": self.total,
        }


@dataclass(frozen=True, slots=True)
class UsageReport:
    """An account's calls over ``[since, until)``, in days of UTC offset ``tz``."""

    account: str
    since: datetime
    until: datetime
    tz: timedelta  # the UTC offset the days are cut in
    group: tuple[str, ...]  # a subset of ("day", "category", "action"), in that order
    rows: tuple[UsageRow, ...]  # sorted by the grouping keys
    totals: UsageRow

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "since": time_text(self.since),
            "until": time_text(self.until),
            "tz": offset_text(self.tz),
            "group": list(self.group),
            "rows": [r.to_json() for r in self.rows],
            "totals": self.totals.to_json(),
        }


# -- plans ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanStatus:
    """One plan or QPS subscription as of ``now``.

    ``state``: ``pending`` (a renewal not started yet), ``active``, ``exhausted`` (no
    points left), ``expired`` or ``refunded``. ``points``/``points_left``/``low`` are
    ``None`` for QPS subscriptions; ``low`` is the 20% mark (the low-balance notice's
    rule, ``ResourcePlan.is_low``). Points left are as of the last settlement.
    """

    id: str
    account: str
    kind: str  # qps, single, general
    categories: tuple[str, ...]
    action: str | None  # QPS subscriptions: the API's action
    qps: int | None
    points: Decimal | None
    points_left: Decimal | None
    price_paid: Decimal
    ordered_at: datetime
    starts: datetime
    expires: datetime
    refunded_at: datetime | None
    state: str
    low: bool | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "kind": self.kind,
            "categories": list(self.categories),
            "action": self.action,
            "qps": self.qps,
            "points": money_or_none(self.points),
            "points_left": money_or_none(self.points_left),
            "price_paid": money(self.price_paid),
            "ordered_at": time_text(self.ordered_at),
            "starts": time_text(self.starts),
            "expires": time_text(self.expires),
            "refunded_at": time_or_none(self.refunded_at),
            "state": self.state,
            "low": self.low,
        }


# -- accounts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountOverview:
    """Balance, standing and this month's settled spend of one account.

    ``standing``: good, overdue, suspended or held; ``standing_since`` when it began
    (None when good). ``month_spend`` is the settled pay-as-you-go of ``month`` (exact
    line amounts), what the monthly cap is compared with.
    """

    account: str
    enabled: bool  # at least one enabled AccessKey
    balance: Decimal
    standing: str
    standing_since: datetime | None
    held_reason: str | None
    monthly_cap: Decimal | None
    month: Month
    month_spend: Decimal
    low_balance: Decimal | None
    low_balance_reached: bool
    settled_until: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "enabled": self.enabled,
            "balance": money(self.balance),
            "standing": self.standing,
            "standing_since": time_or_none(self.standing_since),
            "held_reason": self.held_reason,
            "monthly_cap": money_or_none(self.monthly_cap),
            "month": str(self.month),
            "month_spend": money(self.month_spend),
            "low_balance": money_or_none(self.low_balance),
            "low_balance_reached": self.low_balance_reached,
            "settled_until": time_or_none(self.settled_until),
        }


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """One row of the account list."""

    account: str
    enabled: bool
    keys: int  # AccessKeys ever created (enabled or not)
    enabled_keys: int
    balance: Decimal
    standing: str

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "enabled": self.enabled,
            "keys": self.keys,
            "enabled_keys": self.enabled_keys,
            "balance": money(self.balance),
            "standing": self.standing,
        }


@dataclass(frozen=True, slots=True)
class AccountPage:
    """A page of the account list: ``total`` accounts match ``search`` in all;
    ``next_after`` is the name to start the next page after, None on the last page."""

    items: tuple[AccountSummary, ...]
    total: int
    limit: int
    offset: int
    search: str | None
    next_after: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "items": [a.to_json() for a in self.items],
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
            "search": self.search,
            "next_after": self.next_after,
        }


# -- a month's deduction and bill ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeductionLine:
    """Calls of one item billed in the month that one source settled (a bill line).

    ``source``: qps, single, general (a plan: ``plan_id``), payg (a tier: ``tier`` from 0,
    ``unit_price``) or free. ``origin`` differs from the report's month for adjustments.
    """

    item: str
    category: str
    source: str
    plan_id: str | None
    tier: int | None
    unit_price: Decimal | None
    origin: Month
    calls: int
    points: Decimal
    amount: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "category": self.category,
            "source": self.source,
            "plan_id": self.plan_id,
            "tier": self.tier,
            "unit_price": money_or_none(self.unit_price),
            "origin": str(self.origin),
            "calls": self.calls,
            "points": money(self.points),
            "amount": money(self.amount),
        }


@dataclass(frozen=True, slots=True)
class DeductionSource:
    """Everything one plan or one tier price settled in the month, all items together."""

    source: str
    plan_id: str | None
    tier: int | None
    unit_price: Decimal | None
    calls: int
    points: Decimal
    amount: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "plan_id": self.plan_id,
            "tier": self.tier,
            "unit_price": money_or_none(self.unit_price),
            "calls": self.calls,
            "points": money(self.points),
            "amount": money(self.amount),
        }


@dataclass(frozen=True, slots=True)
class MonthDeduction:
    """Which plan or tier settled how many calls of ``month``, and for how much."""

    account: str
    month: Month
    lines: tuple[DeductionLine, ...]
    sources: tuple[DeductionSource, ...]
    calls: int
    points: Decimal
    amount: Decimal  # exact pay-as-you-go (not rounded: see the bill for the charge)
    settled_until: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "month": str(self.month),
            "lines": [ln.to_json() for ln in self.lines],
            "sources": [s.to_json() for s in self.sources],
            "calls": self.calls,
            "points": money(self.points),
            "amount": money(self.amount),
            "settled_until": time_or_none(self.settled_until),
        }


@dataclass(frozen=True, slots=True)
class BillLineView:
    """A bill line (see ``DeductionLine``) as the bill shows it."""

    line: DeductionLine
    adjustment: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.line.to_json(), "adjustment": self.adjustment}


@dataclass(frozen=True, slots=True)
class BillPlanView:
    """A plan valid during the bill's month, points left at its end (or now)."""

    id: str
    kind: str
    categories: tuple[str, ...]
    points: Decimal | None
    points_left: Decimal | None
    starts: datetime
    expires: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "categories": list(self.categories),
            "points": money_or_none(self.points),
            "points_left": money_or_none(self.points_left),
            "starts": time_text(self.starts),
            "expires": time_text(self.expires),
        }


@dataclass(frozen=True, slots=True)
class BillReport:
    """rating's ``build_bill`` for one month, as plain values.

    ``exact`` is the sum of the pay-as-you-go lines, ``recorded`` it rounded down to 3
    places, ``amount_due`` rounded down to 2 (fen, what the balance is charged);
    ``rounding`` is the non-positive line between them.
    """

    account: str
    month: Month
    lines: tuple[BillLineView, ...]
    plans: tuple[BillPlanView, ...]
    exact: Decimal
    recorded: Decimal
    amount_due: Decimal
    rounding: Decimal
    settled_until: datetime | None
    final: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "month": str(self.month),
            "lines": [ln.to_json() for ln in self.lines],
            "plans": [p.to_json() for p in self.plans],
            "exact": money(self.exact),
            "recorded": money(self.recorded),
            "amount_due": money(self.amount_due),
            "rounding": money(self.rounding),
            "settled_until": time_or_none(self.settled_until),
            "final": self.final,
        }


# -- month to date and projection ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemPreview:
    """One item's calls and pay-as-you-go amount in the month: settled, not yet settled,
    to date (both), and projected to the month's end."""

    item: str
    category: str
    settled_calls: int
    pending_calls: int
    projected_calls: int
    settled_amount: Decimal
    pending_amount: Decimal
    projected_amount: Decimal

    @property
    def to_date_calls(self) -> int:
        return self.settled_calls + self.pending_calls

    @property
    def to_date_amount(self) -> Decimal:
        return self.settled_amount + self.pending_amount

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "category": self.category,
            "settled_calls": self.settled_calls,
            "pending_calls": self.pending_calls,
            "to_date_calls": self.to_date_calls,
            "projected_calls": self.projected_calls,
            "settled_amount": money(self.settled_amount),
            "pending_amount": money(self.pending_amount),
            "to_date_amount": money(self.to_date_amount),
            "projected_amount": money(self.projected_amount),
        }


@dataclass(frozen=True, slots=True)
class MonthPreview:
    """The month's bill so far and at the current rate by its end (docs/reports.md).

    Amounts are pay-as-you-go, exact; ``*_due`` are them rounded down to fen as the
    month's bill would charge them. ``pending`` is priced exactly as settlement would
    price it now (the rating core on a copy of the state; nothing is written).
    ``elapsed`` is the share of the month gone at ``now`` (0..1); the projection is
    ``None`` before any of it has gone.
    """

    account: str
    month: Month
    now: datetime
    settled_until: datetime | None
    elapsed: Decimal
    items: tuple[ItemPreview, ...]
    settled: Decimal
    pending: Decimal
    to_date: Decimal
    to_date_due: Decimal
    projected: Decimal | None
    projected_due: Decimal | None

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "month": str(self.month),
            "now": time_text(self.now),
            "settled_until": time_or_none(self.settled_until),
            "elapsed": money(self.elapsed),
            "items": [i.to_json() for i in self.items],
            "settled": money(self.settled),
            "pending": money(self.pending),
            "to_date": money(self.to_date),
            "to_date_due": money(self.to_date_due),
            "projected": money_or_none(self.projected),
            "projected_due": money_or_none(self.projected_due),
        }
