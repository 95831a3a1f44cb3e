"""Deduction: settle each chargeable call by exactly one source, by counts, not call by call.

Rule (billing rules section 3): calls in (occurred_at, id) order; each goes to an active
QPS subscription for its API, else a single-category plan for its category, else a
general-purpose plan covering it, else pay-as-you-go; among plans of a kind the one
expiring first, then ordered first, then by id; a plan is used only inside its validity,
before its refund, and while its points cover the item's coefficient.

How it stays fast: accounts share nothing, so calls are grouped per account (stable sort)
and each account's timeline is cut at every instant where eligibility can change: plan and
subscription starts, ends and refunds, month edges (UTC+8) and price changes. Inside such a
segment each item has one *route* (its first source with room), so the segment is settled
with ``Counter`` and a few multiplications. A route only changes when a capacity runs out:
a plan's points, or the room left in an item's current tier. The exact call where the first
one runs out is found with a running sum and a binary search (both in C), the prefix before
it is committed in bulk, and the rest is routed again. Long segments are taken in windows
that double while nothing runs out, so an exhaustion never recounts a segment to its end.
Work per segment is O(items + plans) Python operations per window plus a few C passes over
its calls; points are scaled integers (one common scale), so nothing is rounded.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import accumulate, islice
from operator import attrgetter

from ..catalog import BillableItem, Catalog
from ..ledger.records import CallRecord
from .errors import DeductionError
from .money import exact_mul
from .months import Month, billing_month
from .plans import PlanKind, QpsSubscription, ResourcePlan, validate_plan, validate_subscription
from .pricing import tier_room
from .results import DeductionResult, Line, Source, SourceKind
from .state import DeductionState, PositionKey

__all__ = ["deduct"]

_TIME_KEY = attrgetter("occurred_at", "id")
_ACCOUNT_KEY = attrgetter("account")
_FIRST_WINDOW = 4096
_PLAN_KIND = {PlanKind.SINGLE: SourceKind.SINGLE, PlanKind.GENERAL: SourceKind.GENERAL}


def deduct(
    calls: Iterable[CallRecord],
    plans: Iterable[ResourcePlan],
    subscriptions: Iterable[QpsSubscription],
    catalog: Catalog,
    *,
    state: DeductionState | None = None,
) -> DeductionResult:
    """Settle ``calls`` against plans and subscriptions, continuing from ``state``.

    Pure and deterministic: the input order of ``calls`` does not matter (they are taken
    in (occurred_at, id) order). ``state`` is the previous pass's ``result.state``; one pass
    over calls equals consecutive passes over slices of them taken in order. A call older
    than ones already deducted (a late record) is settled against the state as it is now:
    plans valid at its ``occurred_at`` with points left, else the next tier position of
    its own month (billing rules section 7).

    A call's catalog item (``record.item``) decides its category and API. Raises
    ``DeductionError`` for an item the catalog lacks or without a price at the call's
    time, and ``PlanError`` for a plan or subscription the catalog cannot serve.
    """
    return _Engine(list(plans), list(subscriptions), catalog, state or DeductionState()).run(calls)


def _decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite values only reach here
    return max(0, -exponent)


def _scaled(value: Decimal, places: int) -> int:
    """``value * 10**places`` as an exact int (``places`` covers all of its decimals)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    # ``places + exponent >= 0``, so the power is an int (typeshed cannot know).
    factor: int = 10 ** (exponent + places)
    magnitude = int("".join(map(str, digits)) or "0") * factor
    return -magnitude if sign else magnitude


def _unscaled(value: int, places: int) -> Decimal:
    while places > 0 and value % 10 == 0:  # tidy: 4985.00 -> 4985, exactly
        value //= 10
        places -= 1
    return Decimal(f"{value}e-{places}") if places else Decimal(value)


@dataclass(slots=True)
class _Route:
    """Where an item's calls go now, and which capacity they use up (``limit``)."""

    code: int
    limit: Hashable | None = None  # ("plan", id) or ("tier", item); None: unlimited
    cost: int = 0  # per call, in the limit's unit (scaled points, or calls)
    capacity: int = 0  # what the limit had when routed
    plan_id: str | None = None
    payg: bool = False


@dataclass(slots=True)
class _Segment:
    """One account's calls between two instants where nothing about eligibility changes."""

    account: str
    at: datetime
    month: Month
    singles: list[ResourcePlan]
    generals: list[ResourcePlan]
    qps: dict[tuple[str, str], QpsSubscription]
    candidates: dict[str, list[ResourcePlan]] = field(default_factory=dict)

    def plans_for(self, category: str) -> list[ResourcePlan]:
        found = self.candidates.get(category)
        if found is None:
            found = [p for p in self.singles if category in p.categories]
            found += [p for p in self.generals if category in p.categories]
            self.candidates[category] = found
        return found


class _Engine:
    def __init__(
        self,
        plans: list[ResourcePlan],
        subs: list[QpsSubscription],
        catalog: Catalog,
        state: DeductionState,
    ) -> None:
        seen: set[str] = set()
        for source_id in [p.id for p in plans] + [s.id for s in subs]:
            if source_id in seen:
                raise DeductionError(f"two plans or subscriptions share the id {source_id!r}")
            seen.add(source_id)
        for plan in plans:
            validate_plan(plan, catalog)
            left = state.remaining.get(plan.id, plan.points)
            if left > plan.points:
                raise DeductionError(f"state gives plan {plan.id!r} more points than it has")
        for sub in subs:
            validate_subscription(sub, catalog)
        self.items = catalog.by_item()
        self.plans: dict[str, list[ResourcePlan]] = {}
        self.subs: dict[str, list[QpsSubscription]] = {}
        for plan in plans:
            self.plans.setdefault(plan.account, []).append(plan)
        for sub in subs:
            self.subs.setdefault(sub.account, []).append(sub)
        # Deduction order once per account, so each segment only filters.
        for mine in self.plans.values():
            mine.sort(key=attrgetter("order_key"))
        for subs_of in self.subs.values():
            subs_of.sort(key=attrgetter("order_key"))
        self.price_changes = sorted({s.effective_from for it in catalog.items for s in it.prices})
        starting = {p.id: state.remaining.get(p.id, p.points) for p in plans}
        # One integer scale for all points, so a run of calls costs one multiplication.
        self.places = max(
            [_decimals(it.coefficient) for it in catalog.items]
            + [_decimals(v) for v in starting.values()],
        )
        self.coef = {it.item: _scaled(it.coefficient, self.places) for it in catalog.items}
        self.rem = {pid: _scaled(v, self.places) for pid, v in starting.items()}
        self.carried = {k: v for k, v in state.remaining.items() if k not in starting}
        self.positions: dict[PositionKey, int] = dict(state.positions)
        self.table: list[Source] = []
        self.code_of: dict[Hashable, int] = {}
        # (account, month, item, source code) -> [calls, scaled points]
        self.lines: dict[tuple[str, Month, str, int], list[int]] = {}
        # Set by run(): the calls by (account, occurred_at, id), as columns, and their sources.
        self.records: list[CallRecord] = []
        self.item_of: list[str] = []
        self.times: list[datetime] = []
        self.codes = array("I")

    def code(
        self,
        key: Hashable,
        kind: SourceKind,
        plan_id: str | None = None,
        tier: int | None = None,
        price: Decimal | None = None,
    ) -> int:
        """The index of a source in the table; ``key`` is a cheap stand-in for hashing it."""
        found = self.code_of.get(key)
        if found is None:
            found = self.code_of[key] = len(self.table)
            self.table.append(Source(kind, plan_id, tier, price))
        return found

    def run(self, calls: Iterable[CallRecord]) -> DeductionResult:
        records = sorted(calls, key=_TIME_KEY)
        records.sort(key=_ACCOUNT_KEY)  # stable: time order kept inside each account
        self.records = records
        self.item_of = [r.item for r in records]
        self.times = [r.occurred_at for r in records]
        n = len(records)
        self.codes = array("I", [0]) * n
        start = 0
        while start < n:
            account = records[start].account
            end = bisect_right(records, account, start, n, key=_ACCOUNT_KEY)
            self.account(account, start, end)
            start = end
        return self.result()

    def account(self, account: str, a: int, b: int) -> None:
        plans = self.plans.get(account, [])
        subs = self.subs.get(account, [])
        first, last = self.times[a], self.times[b - 1]
        instants: set[datetime] = set(self.price_changes)
        for plan in plans:
            instants.update((plan.start, plan.effective_end))
        for sub in subs:
            instants.update((sub.start, sub.effective_end))
        month = billing_month(first)
        while month.end <= last:
            instants.add(month.end)
            month = month.next()
        cuts = sorted(bisect_left(self.times, t, a, b) for t in instants if first < t <= last)
        for s, e in zip([a, *cuts], [*cuts, b], strict=True):
            if s < e:
                self.segment(account, plans, subs, s, e)

    def segment(
        self,
        account: str,
        plans: Sequence[ResourcePlan],
        subs: Sequence[QpsSubscription],
        s: int,
        e: int,
    ) -> None:
        at = self.times[s]
        active = [p for p in plans if p.active_at(at)]  # in deduction order already
        qps: dict[tuple[str, str], QpsSubscription] = {}
        for sub in subs:
            if sub.active_at(at):
                qps.setdefault(sub.api, sub)
        seg = _Segment(
            account,
            at,
            billing_month(at),
            [p for p in active if p.kind is PlanKind.SINGLE],
            [p for p in active if p.kind is PlanKind.GENERAL],
            qps,
        )
        pos, window = s, _FIRST_WINDOW
        while pos < e:
            # Windows double while no capacity runs out, and start small again after one
            # does, so a long segment with many exhaustions is not recounted to its end
            # for each of them.
            chunk = self.item_of[pos : min(e, pos + window)]
            counts = Counter(chunk)
            routes = {item: self.route(seg, item) for item in counts}
            cut = self.first_exhaustion(chunk, counts, routes)
            if cut < len(chunk):
                counts = Counter(islice(chunk, cut))
                window = _FIRST_WINDOW
            else:
                window *= 2
            self.commit(seg, counts, routes)
            codes = {item: r.code for item, r in routes.items()}
            if len(set(codes.values())) == 1:
                self.codes[pos : pos + cut] = array("I", [routes[chunk[0]].code]) * cut
            else:
                self.codes[pos : pos + cut] = array("I", map(codes.__getitem__, islice(chunk, cut)))
            pos += cut

    def route(self, seg: _Segment, item: str) -> _Route:
        it = self.items.get(item)
        if it is None:
            raise DeductionError(f"item {item!r} of account {seg.account!r} is not in the catalog")
        sub = seg.qps.get((it.category, it.action))
        if sub is not None:
            return _Route(self.code(("id", sub.id), SourceKind.QPS, sub.id))
        if it.free:
            return _Route(self.code(("free",), SourceKind.FREE))
        cost = self.coef[item]
        for plan in seg.plans_for(it.category):
            left = self.rem[plan.id]
            if left >= cost:
                code = self.code(("id", plan.id), _PLAN_KIND[plan.kind], plan.id)
                return _Route(code, ("plan", plan.id), cost, left, plan.id)
        return self.payg_route(seg, it)

    def payg_route(self, seg: _Segment, it: BillableItem) -> _Route:
        schedule = it.schedule_at(seg.at)
        if schedule is None:
            raise DeductionError(f"{it.item} has no price in force at {seg.at.isoformat()}")
        tier, room = tier_room(schedule, self.positions.get((seg.account, it.item, seg.month), 0))
        price = schedule.tiers[tier].price
        code = self.code(("payg", tier, price), SourceKind.PAYG, None, tier, price)
        if room is None:
            return _Route(code, payg=True)
        return _Route(code, ("tier", it.item), 1, room, payg=True)

    def first_exhaustion(
        self, chunk: list[str], counts: Counter[str], routes: dict[str, _Route]
    ) -> int:
        """How many leading calls of ``chunk`` their current routes can take."""
        demand: dict[Hashable, int] = {}
        capacity: dict[Hashable, int] = {}
        for item, n in counts.items():
            r = routes[item]
            if r.limit is not None:
                demand[r.limit] = demand.get(r.limit, 0) + n * r.cost
                capacity[r.limit] = r.capacity
        cut = len(chunk)
        for limit, total in demand.items():
            if total <= capacity[limit]:
                continue
            # The first call whose running cost exceeds the capacity is the first that
            # cannot be covered (its predecessors left less than its own cost).
            cost = {item: (r.cost if r.limit == limit else 0) for item, r in routes.items()}
            running = list(accumulate(map(cost.__getitem__, islice(chunk, cut))))
            cut = min(cut, bisect_right(running, capacity[limit]))
        if cut == 0:  # cannot happen: a route is only chosen with room for one call
            raise RuntimeError("deduction made no progress")
        return cut

    def commit(self, seg: _Segment, counts: Counter[str], routes: dict[str, _Route]) -> None:
        for item, n in counts.items():
            r = routes[item]
            points = 0
            if r.plan_id is not None:
                points = n * r.cost
                self.rem[r.plan_id] -= points
            elif r.payg:
                key = (seg.account, item, seg.month)
                self.positions[key] = self.positions.get(key, 0) + n
            line = self.lines.get((seg.account, seg.month, item, r.code))
            if line is None:
                self.lines[(seg.account, seg.month, item, r.code)] = [n, points]
            else:
                line[0] += n
                line[1] += points

    def result(self) -> DeductionResult:
        lines = []
        for (account, month, item, code), (calls, points) in self.lines.items():
            source = self.table[code]
            price = source.unit_price
            lines.append(
                Line(
                    account=account,
                    month=month,
                    category=self.items[item].category,
                    item=item,
                    source=source,
                    calls=calls,
                    points=_unscaled(points, self.places),
                    amount=Decimal(0) if price is None else exact_mul(price, calls),
                )
            )
        lines.sort(key=lambda ln: (ln.account, ln.month, ln.item, ln.source.sort_key))
        remaining = {pid: _unscaled(v, self.places) for pid, v in self.rem.items()}
        return DeductionResult(
            records=tuple(self.records),
            sources=tuple(self.table),
            _codes=self.codes,
            lines=tuple(lines),
            state=DeductionState({**self.carried, **remaining}, self.positions),
        )
