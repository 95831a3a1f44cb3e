"""Prepaid sources: QPS subscriptions and resource plans, as frozen values.

Validity is ``[start, end)`` in UTC (billing rules section 8). A refund ends coverage
at ``refunded_at``: a refunded plan covers no call at or after it, whenever the call's
record arrives (section 6). Values check themselves on construction; what needs the
catalog (known categories, purchasable QPS) is checked by ``validate_plan`` and
``validate_subscription``, which ``deduct`` also calls.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from ..catalog import Catalog
from .errors import PlanError
from .months import add_months

__all__ = [
    "DEFAULT_VALIDITY_MONTHS",
    "LOW_BALANCE_SHARE",
    "PlanKind",
    "QpsSubscription",
    "ResourcePlan",
    "validate_plan",
    "validate_subscription",
]

#: Resource plans are valid one year from purchase (**assumption**, billing rules section 3).
DEFAULT_VALIDITY_MONTHS = 12
#: A low-balance notice is due when this share of a plan's points remains.
LOW_BALANCE_SHARE = Decimal("0.2")


class PlanKind(StrEnum):
    SINGLE = "single"  # one category
    GENERAL = "general"  # several categories


def _utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise PlanError(f"{what} must be an aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _money(value: Decimal, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise PlanError(f"{what} must be a finite, non-negative Decimal, got {value!r}")
    return value


def _check_period(
    owner: str, start: datetime, end: datetime, ordered_at: datetime, refunded_at: datetime | None
) -> None:
    if not start < end:
        raise PlanError(f"{owner}: start {start.isoformat()} must be before end {end.isoformat()}")
    if refunded_at is not None and refunded_at < ordered_at:
        raise PlanError(f"{owner}: refunded_at is before ordered_at")


def _key(owner: str, value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PlanError(f"{owner}: {what} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class QpsSubscription:
    """A QPS level bought for one API, (category, action): its calls are free while active."""

    id: str
    account: str
    category: str
    action: str
    qps: int
    start: datetime
    end: datetime
    ordered_at: datetime
    price_paid: Decimal
    refunded_at: datetime | None = None

    def __post_init__(self) -> None:
        owner = f"QPS subscription {self.id!r}"
        for name in ("id", "account", "category", "action"):
            _key(owner, getattr(self, name), name)
        if isinstance(self.qps, bool) or not isinstance(self.qps, int) or self.qps < 1:
            raise PlanError(f"{owner}: qps must be a positive integer, got {self.qps!r}")
        _money(self.price_paid, f"{owner}: price_paid")
        for name in ("start", "end", "ordered_at"):
            object.__setattr__(self, name, _utc(getattr(self, name), f"{owner}: {name}"))
        if self.refunded_at is not None:
            object.__setattr__(self, "refunded_at", _utc(self.refunded_at, f"{owner}: refunded_at"))
        _check_period(owner, self.start, self.end, self.ordered_at, self.refunded_at)

    @property
    def api(self) -> tuple[str, str]:
        return (self.category, self.action)

    @property
    def effective_end(self) -> datetime:
        """When coverage stops: the end, or the refund if earlier."""
        if self.refunded_at is not None and self.refunded_at < self.end:
            return self.refunded_at
        return self.end

    def active_at(self, when: datetime) -> bool:
        return self.start <= when < self.effective_end

    @property
    def order_key(self) -> tuple[datetime, datetime, str]:
        """Expiring first, then ordered first, then id: which of two overlapping ones is used."""
        return (self.end, self.ordered_at, self.id)

    def refunded(self, at: datetime) -> QpsSubscription:
        return replace(self, refunded_at=at)


@dataclass(frozen=True, slots=True)
class ResourcePlan:
    """A pack of points for one category (single) or several (general)."""

    id: str
    account: str
    kind: PlanKind
    categories: frozenset[str]
    points: Decimal
    start: datetime
    end: datetime
    ordered_at: datetime
    price_paid: Decimal
    refunded_at: datetime | None = None

    def __post_init__(self) -> None:
        owner = f"resource plan {self.id!r}"
        _key(owner, self.id, "id")
        _key(owner, self.account, "account")
        try:
            object.__setattr__(self, "kind", PlanKind(self.kind))
        except ValueError:
            raise PlanError(f"{owner}: kind must be 'single' or 'general'") from None
        if isinstance(self.categories, str) or not all(
            isinstance(c, str) and c for c in self.categories
        ):
            raise PlanError(f"{owner}: categories must be a set of category names")
        object.__setattr__(self, "categories", frozenset(self.categories))
        if self.kind is PlanKind.SINGLE and len(self.categories) != 1:
            raise PlanError(f"{owner}: a single-category plan covers exactly one category")
        if not self.categories:
            raise PlanError(f"{owner}: a general-purpose plan covers at least one category")
        _money(self.points, f"{owner}: points")
        if self.points == 0:
            raise PlanError(f"{owner}: points must be above zero")
        _money(self.price_paid, f"{owner}: price_paid")
        for name in ("start", "end", "ordered_at"):
            object.__setattr__(self, name, _utc(getattr(self, name), f"{owner}: {name}"))
        if self.refunded_at is not None:
            object.__setattr__(self, "refunded_at", _utc(self.refunded_at, f"{owner}: refunded_at"))
        _check_period(owner, self.start, self.end, self.ordered_at, self.refunded_at)

    @classmethod
    def purchase(
        cls,
        *,
        id: str,
        account: str,
        kind: PlanKind | str,
        categories: frozenset[str] | set[str] | tuple[str, ...],
        points: Decimal,
        ordered_at: datetime,
        price_paid: Decimal,
        validity_months: int = DEFAULT_VALIDITY_MONTHS,
    ) -> ResourcePlan:
        """A plan bought at ``ordered_at``: valid from then for ``validity_months`` (UTC+8
        calendar months; a year by default, an **assumption**)."""
        start = _utc(ordered_at, f"resource plan {id!r}: ordered_at")
        return cls(
            id=id,
            account=account,
            kind=PlanKind(kind),
            categories=frozenset(categories),
            points=points,
            start=start,
            end=add_months(start, validity_months),
            ordered_at=start,
            price_paid=price_paid,
        )

    @property
    def effective_end(self) -> datetime:
        if self.refunded_at is not None and self.refunded_at < self.end:
            return self.refunded_at
        return self.end

    def active_at(self, when: datetime) -> bool:
        """Inside ``[start, end)`` and not refunded at ``when`` (points not considered)."""
        return self.start <= when < self.effective_end

    def covers(self, category: str) -> bool:
        return category in self.categories

    @property
    def order_key(self) -> tuple[datetime, datetime, str]:
        """Among plans of one kind: expiring first, then ordered first, then id."""
        return (self.end, self.ordered_at, self.id)

    def is_low(self, remaining: Decimal) -> bool:
        """Whether ``remaining`` points call for the low-balance notice (20% left)."""
        return remaining <= self.points * LOW_BALANCE_SHARE

    def refunded(self, at: datetime) -> ResourcePlan:
        return replace(self, refunded_at=at)


def validate_plan(plan: ResourcePlan, catalog: Catalog) -> None:
    """Raise ``PlanError`` unless every category the plan covers is in the catalog."""
    unknown = sorted(plan.categories - catalog.categories)
    if unknown:
        raise PlanError(f"resource plan {plan.id!r}: unknown categories {unknown}")


def validate_subscription(sub: QpsSubscription, catalog: Catalog) -> None:
    """Raise ``PlanError`` unless the API exists and sells at least ``sub.qps``."""
    item = catalog.lookup(sub.category, sub.action)
    owner = f"QPS subscription {sub.id!r}"
    if item is None:
        raise PlanError(f"{owner}: no API {sub.category}/{sub.action} in the catalog")
    if item.max_qps is None:
        raise PlanError(f"{owner}: {item.item} sells no QPS subscription")
    if sub.qps > item.max_qps:
        raise PlanError(f"{owner}: {sub.qps} QPS is above {item.item}'s largest, {item.max_qps}")
