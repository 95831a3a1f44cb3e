"""The billable items a gateway meters, as frozen values."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

__all__ = ["BillableItem", "Catalog", "PriceSchedule", "Tier", "Unit"]


class Unit(StrEnum):
    CALL = "call"
    SECOND = "second"  # video items, billed by duration; not metered yet


@dataclass(frozen=True, slots=True)
class Tier:
    """Calls up to ``up_to`` (cumulative in the month, inclusive) cost ``price`` each.

    ``up_to`` is ``None`` for the open-ended last tier.
    """

    up_to: int | None
    price: Decimal


@dataclass(frozen=True, slots=True)
class PriceSchedule:
    """Graduated pay-as-you-go tiers in force from ``effective_from`` (aware UTC)."""

    effective_from: datetime
    tiers: tuple[Tier, ...]

    def tier_index(self, n: int) -> int:
        """The tier the ``n``-th call (1-based) of a month falls in."""
        for i, tier in enumerate(self.tiers):
            if tier.up_to is None or n <= tier.up_to:
                return i
        return len(self.tiers) - 1


@dataclass(frozen=True, slots=True)
class BillableItem:
    """One API as the catalog bills it. An API is (category, action)."""

    item: str  # stable billing code, e.g. "facebody.DetectFace"
    category: str
    action: str
    version: str
    unit: Unit
    prices: tuple[PriceSchedule, ...]  # sorted by effective_from
    coefficient: Decimal  # resource-plan points per call
    default_qps: int
    max_qps: int | None  # largest purchasable QPS subscription; None: not sold
    free: bool = False
    #: True when the prices are not published and were chosen plausibly.
    estimated: bool = False
    _starts: tuple[datetime, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(p.effective_from for p in self.prices))

    def schedule_at(self, when: datetime) -> PriceSchedule | None:
        """The price schedule in force at ``when``; ``None`` before the first one."""
        i = bisect_right(self._starts, when) - 1
        return self.prices[i] if i >= 0 else None

    @property
    def first_tier_price(self) -> Decimal:
        return self.prices[0].tiers[0].price if self.prices else Decimal(0)


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every billable item, with lookups the request path uses on each call."""

    items: tuple[BillableItem, ...]
    #: CNY per resource-plan point (public packs: 5,000 points for CNY 50).
    point_value: Decimal
    #: Product code -> its API version, for every known category.
    category_versions: Mapping[str, str]
    _by_api: Mapping[tuple[str, str], BillableItem] = field(default_factory=dict, repr=False)
    _by_action: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        by_api: dict[tuple[str, str], BillableItem] = {}
        by_action: dict[tuple[str, str], list[str]] = {}
        for it in self.items:
            by_api[(it.category, it.action)] = it
            by_action.setdefault((it.action, it.version), []).append(it.category)
        object.__setattr__(self, "_by_api", by_api)
        object.__setattr__(self, "_by_action", {k: tuple(v) for k, v in by_action.items()})

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(self.category_versions)

    def lookup(self, category: str, action: str) -> BillableItem | None:
        return self._by_api.get((category, action))

    def categories_for(self, action: str, version: str) -> tuple[str, ...]:
        """Every category that has ``action`` at ``version`` (more than one: ambiguous)."""
        return self._by_action.get((action, version), ())

    def by_item(self) -> dict[str, BillableItem]:
        return {it.item: it for it in self.items}
