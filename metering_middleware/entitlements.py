"""Each account's QPS entitlement per API, and the request path's cached view of it.

Billing rules section 4, for (account, API = (category, action)) at time t:

1. an active QPS subscription for that API: its level, capped at the catalog's
   ``max_qps`` (several active: the highest);
2. else, while a resource plan covering the category is valid at t, not refunded and
   not exhausted: ``plan_qps`` (5). Exhausted means fewer points left (at the last
   settlement) than the category's smallest coefficient: no call of the category
   could be paid from it;
3. else the catalog's ``default_qps`` (2; OCR 1).

``EntitlementView`` answers from a snapshot of the subscriptions, plans and points
left, reloaded in the background at most once per ``refresh_interval``: never a
database query per call. It follows ``CredentialCache``: the first lookup waits for
the first load; a stale snapshot answers at once and starts one reload; a failed
reload is logged and the old snapshot kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from .catalog import Catalog
from .clock import Clock
from .rating.plans import QpsSubscription, ResourcePlan
from .rating.store import RatingStore
from .reload import BackgroundReload

__all__ = [
    "DEFAULT_PLAN_QPS",
    "Entitlement",
    "EntitlementInputs",
    "EntitlementSource",
    "EntitlementView",
    "QpsSource",
    "RatingStoreEntitlements",
    "entitlement",
    "smallest_coefficients",
]

log = logging.getLogger(__name__)

#: QPS while a resource plan covers the category (billing rules section 4).
DEFAULT_PLAN_QPS = 5
#: An API the catalog does not know (the resolver refuses those before admission).
_UNKNOWN_API_QPS = 2


class QpsSource(StrEnum):
    SUBSCRIPTION = "subscription"
    RESOURCE_PLAN = "resource_plan"
    DEFAULT = "default"


# Module constants: an Enum member read through its class goes through the metaclass.
_SUBSCRIPTION, _RESOURCE_PLAN, _DEFAULT = (
    QpsSource.SUBSCRIPTION,
    QpsSource.RESOURCE_PLAN,
    QpsSource.DEFAULT,
)


@dataclass(frozen=True, slots=True)
class Entitlement:
    qps: int
    source: QpsSource


@dataclass(frozen=True, slots=True)
class EntitlementInputs:
    """What the view is built from: every account's subscriptions and plans, and the
    points each plan had left at the last settlement (plan id -> points; a plan not
    listed has never been drawn on)."""

    subscriptions: tuple[QpsSubscription, ...] = ()
    plans: tuple[ResourcePlan, ...] = ()
    remaining_points: Mapping[str, Decimal] = field(default_factory=dict)


class EntitlementSource(Protocol):
    """Where the inputs come from (the plan store); one call per refresh."""

    async def load_entitlement_inputs(self) -> EntitlementInputs: ...


def smallest_coefficients(catalog: Catalog) -> dict[str, Decimal]:
    """Category -> the smallest positive deduction coefficient of its billable items."""
    out: dict[str, Decimal] = {}
    for item in catalog.items:
        if item.free or item.coefficient <= 0:
            continue
        best = out.get(item.category)
        if best is None or item.coefficient < best:
            out[item.category] = item.coefficient
    return out


def _plan_usable(
    plan: ResourcePlan, category: str, remaining: Mapping[str, Decimal], smallest: Decimal
) -> bool:
    return category in plan.categories and remaining.get(plan.id, plan.points) >= smallest


def _capped(sub: QpsSubscription, catalog: Catalog) -> int:
    item = catalog.lookup(sub.category, sub.action)
    if item is None or item.max_qps is None:
        return sub.qps
    return min(sub.qps, item.max_qps)


def _default(catalog: Catalog, category: str, action: str) -> int:
    item = catalog.lookup(category, action)
    return item.default_qps if item is not None and item.default_qps > 0 else _UNKNOWN_API_QPS


def entitlement(
    catalog: Catalog,
    inputs: EntitlementInputs,
    account: str,
    category: str,
    action: str,
    when: datetime,
    *,
    plan_qps: int = DEFAULT_PLAN_QPS,
) -> Entitlement:
    """The rules, straight from the inputs (the reference ``EntitlementView`` must match)."""
    levels = [
        _capped(s, catalog)
        for s in inputs.subscriptions
        if s.account == account and s.api == (category, action) and s.active_at(when)
    ]
    if levels:
        return Entitlement(max(levels), QpsSource.SUBSCRIPTION)
    smallest = smallest_coefficients(catalog).get(category, Decimal(0))
    for plan in inputs.plans:
        if (
            plan.account == account
            and plan.active_at(when)
            and _plan_usable(plan, category, inputs.remaining_points, smallest)
        ):
            return Entitlement(plan_qps, QpsSource.RESOURCE_PLAN)
    return Entitlement(_default(catalog, category, action), QpsSource.DEFAULT)


# (start, end) as epoch seconds: the request path compares floats, not datetimes.
_Span = tuple[float, float]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    subscriptions: Mapping[tuple[str, str, str], tuple[tuple[float, float, int], ...]]
    plans: Mapping[tuple[str, str], tuple[_Span, ...]]


def _index(catalog: Catalog, inputs: EntitlementInputs) -> _Snapshot:
    subs: dict[tuple[str, str, str], list[tuple[float, float, int]]] = {}
    for s in inputs.subscriptions:
        level = (s.start.timestamp(), s.effective_end.timestamp(), _capped(s, catalog))
        subs.setdefault((s.account, s.category, s.action), []).append(level)
    smallest = smallest_coefficients(catalog)
    left = inputs.remaining_points
    plans: dict[tuple[str, str], list[_Span]] = {}
    for p in inputs.plans:
        for category in p.categories:
            # Exhaustion is per category: a general plan may still pay for a cheap one.
            if _plan_usable(p, category, left, smallest.get(category, Decimal(0))):
                span = (p.start.timestamp(), p.effective_end.timestamp())
                plans.setdefault((p.account, category), []).append(span)
    return _Snapshot(
        {k: tuple(v) for k, v in subs.items()}, {k: tuple(v) for k, v in plans.items()}
    )


class EntitlementView:
    """The request path's entitlements: ``await view.qps(account, category, action)``."""

    __slots__ = (
        "_catalog",
        "_clock",
        "_loaded",
        "_plan_qps",
        "_reload",
        "_snapshot",
        "_source",
        "loads",
    )

    def __init__(
        self,
        source: EntitlementSource,
        catalog: Catalog,
        clock: Clock,
        *,
        refresh_interval: float = 1.0,
        plan_qps: int = DEFAULT_PLAN_QPS,
    ) -> None:
        self._source = source
        self._catalog = catalog
        self._clock = clock
        self._plan_qps = plan_qps
        self._snapshot = _Snapshot({}, {})
        self._loaded = False
        self._reload = BackgroundReload(self._load, clock, refresh_interval, "entitlement")
        #: Completed loads since start (a metric; tests count reloads with it).
        self.loads = 0

    async def qps(self, account: str, category: str, action: str) -> int:
        return (await self.entitlement(account, category, action)).qps

    async def entitlement(self, account: str, category: str, action: str) -> Entitlement:
        if not self._loaded:
            await self.refresh()
        return Entitlement(*self._level(account, category, action))

    def qps_now(self, account: str, category: str, action: str) -> int | None:
        """``qps`` at once (no await: the meter's fast path); ``None`` before the first
        load, which ``qps`` waits for."""
        if not self._loaded:
            return None
        return self._level(account, category, action)[0]

    def _level(self, account: str, category: str, action: str) -> tuple[int, QpsSource]:
        """The rules on the loaded snapshot (one implementation for both readings)."""
        self._reload.start_if_due()  # stale: answer from the snapshot, reload behind
        now = self._clock.time()
        snap = self._snapshot
        best = 0
        for start, end, level in snap.subscriptions.get((account, category, action), ()):
            if start <= now < end and level > best:
                best = level
        if best:
            return best, _SUBSCRIPTION
        for start, end in snap.plans.get((account, category), ()):
            if start <= now < end:
                return self._plan_qps, _RESOURCE_PLAN
        return _default(self._catalog, category, action), _DEFAULT

    async def refresh(self) -> None:
        """Reload now (or join the reload already running); raise what it raised."""
        await self._reload.wait()

    async def join(self) -> None:
        """Wait for a background reload, if one is running (tests, shutdown); never raises."""
        await self._reload.join()

    async def _load(self) -> None:
        inputs = await self._source.load_entitlement_inputs()
        self._snapshot = _index(self._catalog, inputs)
        self._loaded = True
        self.loads += 1


class RatingStoreEntitlements:
    """Entitlement inputs from the rating store: plans, subscriptions, points left.

    Points left are those of the last settlement (each account's saved deduction
    state), so a plan counts as exhausted from the settlement that used it up.
    """

    __slots__ = ("_store",)

    def __init__(self, store: RatingStore) -> None:
        self._store = store

    async def load_entitlement_inputs(self) -> EntitlementInputs:
        book = await self._store.plan_book()
        remaining: dict[str, Decimal] = {}
        for progress in (await self._store.accounts()).values():
            remaining.update(progress.state.remaining)
        return EntitlementInputs(book.subscriptions, book.plans, remaining)
