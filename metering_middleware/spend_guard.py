"""Standing check, spend guard and monthly caps: the request path's money decisions.

Called after the caller is identified and verified, before QPS admission:

1. **Standing.** An account held by an operator, or overdue with its balance still below
   zero in the snapshot, is refused (``Account.Arrearage``), whatever would pay for the
   call: plans and QPS subscriptions included. Overdue for 24 hours counts as suspended
   from the clock, without waiting for the settlement that writes it.
2. **Coverage.** Between settlements the guard follows deduction's order on its own
   estimate: an active QPS subscription for the API covers the call; else the first plan
   (in deduction order) whose settled points left, minus the points this process has
   reserved on it, still pay the item's coefficient; else the call is pay-as-you-go at
   the tier price of its position (settled pay-as-you-go calls of the item this month plus
   this process's unsettled ones).
3. **Spend guard.** A pay-as-you-go call is refused (``Account.SpendCapExceeded``) when
   ``balance - processes * estimate <= 0``: the estimate is every unsettled
   pay-as-you-go price this process reserved. So an account goes into debt by at most the
   last call each process admitted, and a zero balance can still use its plans.
4. **Cap.** A pay-as-you-go call is refused when ``settled month spend + processes *
   (month estimate + its price) > monthly cap``.

Reservations: the price (or the plan points) is reserved at admission, so calls in
flight count; released when the call turns out not chargeable; kept once its record is
written; dropped when a snapshot shows the record settled (it occurred before the
account's settled horizon, read in the same transaction as the balance that now holds
its cost). Everything here is dict lookups and integer sums, on one object per account
that holds both its snapshot and its estimate (few objects touched: in a busy gateway the
rest of a call has pushed them out of the CPU's caches). Money and points are exact
integers of the smallest unit the catalog's prices (coefficients) need: a ``Decimal``
operation costs several times an int's there. Balances and caps are rounded down to
that unit and settled spend up, so the guard can only refuse a unit early, never late.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from .catalog import BillableItem, Catalog, PriceSchedule
from .clock import Clock, SystemClock
from .errors import ApiError, ErrorKind
from .money_view import NOBODY, AccountSnapshot, MoneySnapshot, MoneyView, month_index
from .rating.months import Month

__all__ = [
    "CAP_REASON",
    "HELD_REASON",
    "OVERDUE_REASON",
    "SPEND_GUARD_REASON",
    "SUSPENDED_REASON",
    "SUSPEND_AFTER",
    "Reservation",
    "SpendGuard",
    "reserved_month",
    "reserved_plan",
]

log = logging.getLogger("metering_middleware")

#: Overdue this long, an account is suspended (billing rules section 6; the same span as
#: settlement's, which writes the suspension the guard already applies).
SUSPEND_AFTER = timedelta(hours=24)
_SUSPEND_SECONDS = SUSPEND_AFTER.total_seconds()

OVERDUE_REASON = "overdue"
SUSPENDED_REASON = "suspended"
HELD_REASON = "held"
SPEND_GUARD_REASON = "spend_guard"
CAP_REASON = "cap"

_ZERO = Decimal(0)
_UNITS = {"floor": ROUND_FLOOR, "ceiling": ROUND_CEILING}

#: One admitted call's share of its account's estimate, as a plain tuple (made per call;
#: the garbage collector stops tracking tuples of numbers and strings):
#: (occurred, account, item, month index, price, plan id, points), price and points in
#: the guard's units: a pay-as-you-go call has plan id "" and its estimated price; a call
#: a plan pays has the plan's id and the points reserved on it. Recorded ones are kept
#: as they are (comparable field by field, so a heap of them needs no tie-breaker).
Reservation = tuple[float, str, str, int, int, str, int]


def reserved_plan(res: Reservation) -> str | None:
    return res[5] or None


def reserved_month(res: Reservation) -> Month:
    return Month(res[3] // 12, res[3] % 12 + 1)


@dataclass(frozen=True, slots=True)
class _Scale:
    """Integer units: ``money`` per CNY, ``points`` per resource-plan point; ``share``:
    the N processes that divide each plan's points left (as they divide a balance)."""

    money: int
    points: int
    share: int = 1

    @staticmethod
    def units(value: Decimal, per: int, rounding: str) -> int:
        return int((value * per).to_integral_value(_UNITS[rounding]))


def _places(values: list[Decimal]) -> int:
    exponents = [v.as_tuple().exponent for v in values if v.is_finite()]
    return max([2, *(-e for e in exponents if isinstance(e, int))])


#: A plan as the request path reads it: (id, start, end, points left in units).
_Plan = tuple[str, float, float, int]


class _Account:
    """One account on the request path: its snapshot (copied at each reload) and this
    process's estimate of its unsettled calls (kept across reloads)."""

    __slots__ = (
        "balance",
        "calls",
        "cap",
        "held",
        "horizon",
        "late",
        "overdue_since",
        "payg_calls",
        "plans",
        "points",
        "recorded",
        "settled_spend",
        "spend",
        "stop",
        "subscriptions",
        "suspended",
        "total",
    )

    def __init__(self, snap: AccountSnapshot, scale: _Scale) -> None:
        self.total = 0  # every unsettled pay-as-you-go price reserved, all months (units)
        self.spend: dict[int, int] = {}  # the same by month_index
        self.calls: dict[tuple[str, int], int] = {}  # (item, month_index) -> calls
        self.points: dict[str, int] = {}  # plan id -> points reserved (units)
        #: Recorded reservations in recording order, which is occurrence order but for
        #: a call answered after a later one was recorded: that one goes to ``late``, a
        #: heap by occurrence. Both are emptied from the oldest as settlement passes them.
        self.recorded: deque[Reservation] = deque()
        self.late: list[Reservation] = []
        self.load(snap, scale)

    def load(self, snap: AccountSnapshot, scale: _Scale) -> None:
        money, units = scale.money, scale.units
        self.balance = units(snap.balance, money, "floor")
        self.held = snap.held
        self.overdue_since = snap.overdue_since
        self.suspended = snap.suspended
        #: One test on the request path for "not in good standing".
        self.stop = snap.held or snap.overdue_since is not None
        cap = snap.monthly_cap
        self.cap = None if cap is None else units(cap, money, "floor")
        self.horizon = snap.horizon
        self.settled_spend = units(snap.month_spend, money, "ceiling")
        self.payg_calls = snap.payg_calls
        self.subscriptions = snap.subscriptions
        self.plans: dict[str, tuple[_Plan, ...]] = {
            category: tuple(
                (p.id, p.start, p.end, units(p.left, scale.points, "floor") // scale.share)
                for p in plans
            )
            for category, plans in snap.plans.items()
        }

    def carry(self, old: _Account) -> None:
        """Take over ``old``'s estimate (a reload replaced its snapshot)."""
        self.total, self.spend, self.calls = old.total, old.spend, old.calls
        self.points, self.recorded, self.late = old.points, old.recorded, old.late

    @property
    def idle(self) -> bool:
        return not (self.total or self.calls or self.points or self.recorded or self.late)


@dataclass(frozen=True, slots=True)
class _Prices:
    """An item's schedules: when each starts, and its (tier bounds, tier prices)."""

    starts: tuple[float, ...]
    tiers: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # prices in money units


def _tiers(schedule: PriceSchedule, per: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    bounds = tuple(t.up_to for t in schedule.tiers if t.up_to is not None)
    return bounds, tuple(_Scale.units(t.price, per, "ceiling") for t in schedule.tiers)


class SpendGuard:
    """``guard.admit(account, item)`` -> a ``Reservation`` (or None), or raises ``ApiError``."""

    __slots__ = (
        "_accounts",
        "_arrearage",
        "_capped",
        "_clock",
        "_flat",
        "_m_end",
        "_m_index",
        "_m_start",
        "_month",
        "_notify",
        "_prices",
        "_processes",
        "_scale",
        "_spend_cap",
        "_time",
        "coefficients",
        "view",
    )

    def __init__(
        self,
        ledger_file: str,
        catalog: Catalog,
        clock: Clock,
        *,
        refresh_interval: float = 1.0,
        processes: int = 1,
        arrearage: ErrorKind,
        spend_cap: ErrorKind,
        on_cap_reached: Callable[[str, Month, Decimal, Decimal], None] | None = None,
    ) -> None:
        self._clock = clock
        # The system clock's own reading, not a method around it (a frame per call).
        self._time = time.time if type(clock) is SystemClock else clock.time
        self._processes = processes
        self._arrearage = arrearage
        self._spend_cap = spend_cap
        self._notify = on_cap_reached
        self._accounts: dict[str, _Account] = {}
        self._capped: set[tuple[str, Month]] = set()
        prices = [t.price for it in catalog.items for sch in it.prices for t in sch.tiers]
        coefficients = [it.coefficient for it in catalog.items]
        self._scale = scale = _Scale(10 ** _places(prices), 10 ** _places(coefficients), processes)
        self._prices = {
            it.item: _Prices(
                tuple(s.effective_from.timestamp() for s in it.prices),
                tuple(_tiers(s, scale.money) for s in it.prices),
            )
            for it in catalog.items
        }
        #: item -> (from, until, lowest position, past the highest position, price).
        self._flat: dict[str, tuple[float, float, float, float, int]] = {}
        #: Points per call (units; rounded up: a plan is never thought to pay more calls).
        self.coefficients = {
            it.item: _Scale.units(it.coefficient, scale.points, "ceiling") for it in catalog.items
        }
        self.view: MoneyView[dict[str, _Account]] = MoneyView(
            ledger_file,
            clock,
            refresh_interval=refresh_interval,
            prepare=self._prepare,
            on_snapshot=self._settled,
        )
        self._month_of(self.view.snapshot)

    # -- the request path -------------------------------------------------------------

    def admit(self, account: str, item: BillableItem) -> Reservation | None:
        """Refuse (``ApiError``) or reserve this call's estimated cost."""
        now = self._time()
        view = self.view
        if not view.fresh_from <= now < view.next_reload_at:
            view.start_if_due()  # stale: answer from the snapshot, reload behind
        acct = self._accounts.get(account)
        if acct is None:
            acct = self._accounts[account] = _Account(NOBODY, self._scale)
        if acct.stop:
            raise self._standing(acct, now)
        if item.free:
            return None
        code = item.item
        if acct.subscriptions:
            for start, end in acct.subscriptions.get((item.category, item.action), ()):
                if start <= now < end:
                    return None  # a QPS subscription pays: nothing to estimate
        if self._m_start <= now < self._m_end:
            mi = self._m_index
            settled_calls = acct.payg_calls.get(code, 0) if acct.payg_calls else 0
            settled_spend = acct.settled_spend
        else:  # the month turned since the snapshot (a reload is due): nothing settled yet
            mi = month_index(Month.of(datetime.fromtimestamp(now, UTC)))
            settled_calls, settled_spend = 0, 0
        if acct.plans:
            plans = acct.plans.get(item.category)
            if plans:
                cost = self.coefficients[code]
                points = acct.points
                for plan_id, start, end, left in plans:
                    if start <= now < end:
                        used = points.get(plan_id, 0)
                        if left - used >= cost:
                            points[plan_id] = used + cost
                            return (now, account, code, mi, 0, plan_id, cost)
        # Months are keyed by an int (hashing a Month dataclass costs more than the rest).
        key = (code, mi)
        calls = acct.calls
        unsettled = calls.get(key, 0)
        position = settled_calls + unsettled
        # The price of the tier the call lands in, remembered per item with the span of
        # time and of positions it holds for: almost every call hits it.
        flat = self._flat.get(code)
        if flat is not None and flat[0] <= now < flat[1] and flat[2] <= position < flat[3]:
            price = flat[4]
        else:
            price = self._price(code, now, position)
        n = self._processes
        # balance - n * estimate <= 0
        if acct.total * n >= acct.balance:
            raise self._refusal(
                self._spend_cap, SPEND_GUARD_REASON, "balance used up by unsettled calls"
            )
        spent = acct.spend.get(mi, 0) + price
        cap = acct.cap
        if cap is not None and settled_spend + spent * n > cap:
            self._cap_reached(account, mi, cap, settled_spend + spent * n)
            raise self._refusal(self._spend_cap, CAP_REASON, "monthly spend cap reached")
        acct.spend[mi] = spent
        acct.total += price
        calls[key] = unsettled + 1
        return (now, account, code, mi, price, "", 0)

    def release(self, res: Reservation) -> None:
        """The call was not chargeable (or was refused after admission): give it back.

        Call it, or ``recorded``, once per reservation (the middleware does, when it
        counts the call's outcome)."""
        acct = self._accounts.get(res[1])
        if acct is not None:
            _take_back(acct, res)

    def recorded(self, res: Reservation) -> None:
        """Its record was written: kept until a snapshot shows it settled."""
        acct = self._accounts.get(res[1])
        if acct is not None:
            kept = acct.recorded
            if not kept or kept[-1][0] <= res[0]:
                kept.append(res)
            else:
                heapq.heappush(acct.late, res)

    # -- reading the estimate (tests, metrics) ---------------------------------------------

    def estimate(self, account: str) -> Decimal:
        """Unsettled pay-as-you-go this process reserved for ``account`` (all months), CNY."""
        acct = self._accounts.get(account)
        return _ZERO if acct is None else self._cny(acct.total)

    def reserved_points(self, account: str, plan_id: str) -> Decimal:
        acct = self._accounts.get(account)
        units = 0 if acct is None else acct.points.get(plan_id, 0)
        return Decimal(units) / self._scale.points

    def reserved_price(self, res: Reservation) -> Decimal | None:
        """A reservation's pay-as-you-go price in CNY (None: a plan pays)."""
        return None if res[5] else self._cny(res[4])

    def _cny(self, units: int) -> Decimal:
        return Decimal(units) / self._scale.money

    @property
    def accounts_estimated(self) -> int:
        return sum(1 for a in self._accounts.values() if not a.idle)

    # -- internals ------------------------------------------------------------------------

    def _standing(self, acct: _Account, now: float) -> ApiError:
        if acct.held:
            return self._refusal(self._arrearage, HELD_REASON, "suspended by the operator")
        assert acct.overdue_since is not None
        if acct.suspended or now - acct.overdue_since >= _SUSPEND_SECONDS:
            return self._refusal(self._arrearage, SUSPENDED_REASON, "suspended for arrears")
        return self._refusal(self._arrearage, OVERDUE_REASON, "overdue")

    def _price(self, item: str, now: float, position: int) -> int:
        """The tier price of the call after ``position`` calls this month, at ``now``
        (and remembered, with where it holds, for the next calls)."""
        prices = self._prices.get(item)
        if prices is None or not prices.starts:
            return 0
        i = max(bisect_right(prices.starts, now) - 1, 0)
        t_from = prices.starts[i] if i else -math.inf
        t_to = prices.starts[i + 1] if i + 1 < len(prices.starts) else math.inf
        bounds, unit = prices.tiers[i]
        # The n-th call (n = position + 1) is in the first tier whose bound (inclusive)
        # is at least n; that tier holds positions [previous bound, its bound).
        tier = min(bisect_left(bounds, position + 1), len(unit) - 1)
        low = bounds[tier - 1] if tier else 0
        high = bounds[tier] if tier < len(bounds) else math.inf
        self._flat[item] = (t_from, t_to, low, high, unit[tier])
        return unit[tier]

    def _refusal(self, kind: ErrorKind, reason: str, why: str) -> ApiError:
        return ApiError(kind, f"The account cannot make this call: {why}.", reason=reason)

    def _cap_reached(self, account: str, index: int, cap: int, spend: int) -> None:
        """Tell the hook once per account and month: the cap, and the spend this call
        would have reached (settled plus estimated, with this call), in CNY."""
        month = Month(index // 12, index % 12 + 1)
        key = (account, month)
        if key in self._capped or self._notify is None:
            return
        self._capped.add(key)
        try:
            self._notify(account, month, self._cny(cap), self._cny(spend))
        except Exception:  # a notice hook never fails a call
            log.exception("on_cap_reached hook failed for %s %s", account, month)

    def _month_of(self, snapshot: MoneySnapshot) -> None:
        self._month = snapshot.month
        self._m_start, self._m_end = snapshot.month_start, snapshot.month_end
        self._m_index = snapshot.month_index

    def _prepare(self, snapshot: MoneySnapshot) -> dict[str, _Account]:
        """In the reload's worker thread: every account of the snapshot, estimate empty."""
        scale = self._scale
        return {name: _Account(snap, scale) for name, snap in snapshot.accounts.items()}

    def _settled(self, snapshot: MoneySnapshot, prepared: dict[str, _Account] | None) -> None:
        """On the event loop, a new snapshot: carry the estimates over to the new state of
        their accounts, and drop the recorded reservations it shows settled. Work here is
        per account with an estimate; the rest was prepared off the loop."""
        self._month_of(snapshot)
        fresh = self._prepare(snapshot) if prepared is None else prepared
        for name, old in self._accounts.items():
            if old.idle:
                continue
            acct = fresh.get(name)
            if acct is None:
                acct = fresh[name] = _Account(NOBODY, self._scale)
            acct.carry(old)
            horizon = acct.horizon
            kept, late = acct.recorded, acct.late
            while kept and kept[0][0] < horizon:
                _take_back(acct, kept.popleft())
            while late and late[0][0] < horizon:
                _take_back(acct, heapq.heappop(late))
        self._accounts = fresh


def _take_back(acct: _Account, res: Reservation) -> None:
    _, _, item, index, price, plan_id, points = res
    if plan_id:
        left = acct.points.get(plan_id, 0) - points
        if left > 0:
            acct.points[plan_id] = left
        else:
            acct.points.pop(plan_id, None)
        return
    acct.total -= price
    spent = acct.spend.get(index, 0) - price
    if spent > 0:
        acct.spend[index] = spent
    else:
        acct.spend.pop(index, None)
    key = (item, index)
    n = acct.calls.get(key, 0) - 1
    if n > 0:
        acct.calls[key] = n
    else:
        acct.calls.pop(key, None)
