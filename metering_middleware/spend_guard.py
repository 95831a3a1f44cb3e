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
that holds both its snapshot and its estimate, and for the common call (good standing,
pay-as-you-go, the tier of the item's last call, far from balance and cap) one lane
object per account and item: a straight path of a few comparisons (few objects touched:
in a busy gateway the rest of a call has pushed them out of the CPU's caches). A call
makes no object: the calls a lane admits at one price share one ``Reservation`` (the
call appends its instant, its record step adds one to a counter); a snapshot drops
settled calls per reservation, not per call.
Money and points are exact integers of the smallest unit the catalog's prices
(coefficients) need: a ``Decimal`` operation costs several times an int's there.
Balances and caps are rounded down to that unit and settled spend up, so the guard can
only refuse a unit early, never late.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from .catalog import BillableItem, Catalog, PriceSchedule
from .clock import Clock, SystemClock
from .errors import ApiError, ErrorKind
from .money_view import (
    NOBODY,
    AccountSnapshot,
    MoneySnapshot,
    MoneyStore,
    MoneyView,
    month_index,
)
from .rating.balances import SUSPEND_AFTER
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

#: Overdue this long, an account is suspended (billing rules section 6): settlement's own
#: span (``rating.balances``), which writes the suspension the guard already applies.
_SUSPEND_SECONDS = SUSPEND_AFTER.total_seconds()

OVERDUE_REASON = "overdue"
SUSPENDED_REASON = "suspended"
HELD_REASON = "held"
SPEND_GUARD_REASON = "spend_guard"
CAP_REASON = "cap"

_ZERO = Decimal(0)
_UNITS = {"floor": ROUND_FLOOR, "ceiling": ROUND_CEILING}


class Reservation:
    """Admitted calls' share of their account's estimate, all alike: one account, item,
    month and pay-as-you-go ``price`` (or one plan and ``points``), in the guard's units.

    The calls a lane admits at one price within one refresh interval share one (made by
    the full rules, at most once per interval, tier and lane), so a call makes no object:
    admission appends its instant to ``stamps`` (a list's own append) and the record step
    adds one to ``recorded`` (an attribute). A call of the full rules that is not a lane's
    (a plan's points, a month that turned) has one of its own. Amounts stay exact: each
    call is ``price`` (``points``), however many share it.

    ``stamps`` holds one instant per call not given back nor settled; which one is whose
    is not kept, only how many are recorded (the rest are in flight). So every choice
    errs on the side of keeping an estimate: a given-back call takes out the earliest
    stamp not before its arrival (its own or an earlier one; exact unless another call
    was admitted between its arrival and its admission), and a snapshot takes the calls
    in flight to be the earliest: it drops ``min(recorded, stamps before the horizon -
    calls in flight)``, never a call in flight nor one recorded after the horizon. Exact
    unless a call admitted before the horizon is still in flight (a call older than the
    settlement lag): each such call keeps at most one settled call in the estimate until
    the next snapshot (refused early, never late).
    """

    __slots__ = (
        "account",
        "item",
        "month",
        "plan",
        "points",
        "price",
        "recorded",
        "stamps",
        "until",
    )

    def __init__(
        self,
        account: str,
        item: str,
        month: int,
        price: int,
        plan: str = "",
        points: int = 0,
        until: float = -math.inf,
    ) -> None:
        self.account = account
        self.item = item
        self.month = month
        self.price = price
        self.plan = plan
        self.points = points
        self.until = until  # the full rules add calls to it until then (time.time())
        self.stamps: list[float] = []  # each admitted call's instant (time.time())
        self.recorded = 0  # of them, with their record written (not yet settled)


def reserved_plan(res: Reservation) -> str | None:
    return res.plan or None


def reserved_month(res: Reservation) -> Month:
    return Month(res.month // 12, res.month % 12 + 1)


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


#: The straight path's bounds (balance, cap, tier positions) are clamped to this: CPython
#: compares two ints below 2**30 (one digit) in a specialised instruction, larger ones in
#: the generic compare. Clamping only sends calls past it to the slow path, which decides
#: exactly (an account with no cap, or a balance of more than 2**30 units, or an item's
#: last tier).
_FAST_MAX = (1 << 30) - 1


class _Lane:
    """One item of one account in its snapshot's month: all a common call reads and writes.

    ``fast``: the account in good standing, no QPS subscription for the API and no plan
    for the category in the snapshot (the call is pay-as-you-go), the item not free.
    ``position``: the item's calls this month, settled plus this process's unsettled
    (their one home while the lane exists). ``p_from``/``p_to``, ``low``/``high``: where
    ``price`` holds, in time (clipped to the month) and in positions; outside, the slow
    path prices the call. ``start``/``end``: where the straight path may take a call
    without asking anything else: empty unless ``fast``, else the price's span of time
    narrowed to the money view's window in which no reload is due (so the straight path
    needs no test of its own for a due reload, a turned month, a stepped clock or the
    fast flag: each one is outside it). Set by the slow path after it admitted a call;
    emptied when a given-back call moves ``position`` below ``low``, and when the slow
    path sets a new price (the window opens again with the batch of that price).
    ``batch``: the reservation of the calls admitted here at ``price`` (``stamps``, its
    list of instants, at hand for the straight path's append). ``bound``: the highest
    month estimate (``spent``, with the call) at which the straight path still admits, set
    with the window: the spend guard's and the cap's tests solved for ``spent`` (with the
    other months' estimate as it was then; a call that raises it closes the windows).
    """

    __slots__ = (
        "batch",
        "bound",
        "code",
        "end",
        "fast",
        "high",
        "low",
        "month",
        "p_from",
        "p_to",
        "position",
        "price",
        "settled",
        "stamps",
        "start",
    )

    def __init__(self, code: str, month: int, settled: int, unsettled: int, fast: bool) -> None:
        self.code = code
        self.month = month
        self.settled = settled
        self.position = settled + unsettled
        self.fast = fast
        # No price yet (the first call sets it) and no straight path yet.
        self.p_from, self.p_to = math.inf, -math.inf
        self.start, self.end = math.inf, -math.inf
        # Integers (as ``position`` is): an int compared with an int is the cheap compare.
        self.low, self.high, self.price, self.bound = 0, 0, 0, 0
        self.batch: Reservation | None = None
        self.stamps: list[float] = []  # the batch's (none yet: the window is closed)


class _Account:
    """One account on the request path: its snapshot (copied at each reload) and this
    process's estimate of its unsettled calls (kept across reloads).

    The snapshot month's estimate lives in ``spent`` and the lanes (one per item, made
    at the item's first call after a reload); other months' (a month that turned before
    the reload) in the ``spend`` and ``calls`` dicts."""

    __slots__ = (
        "balance",
        "batches",
        "calls",
        "cap",
        "held",
        "horizon",
        "lanes",
        "limit",
        "month",
        "other",
        "overdue_since",
        "payg_calls",
        "plans",
        "points",
        "room",
        "settled_spend",
        "spend",
        "spent",
        "stop",
        "subscriptions",
        "suspended",
    )

    def __init__(self, snap: AccountSnapshot, scale: _Scale, month: int) -> None:
        self.month = month
        #: Every unsettled pay-as-you-go price reserved (units): the snapshot's month's
        #: in ``spent``, other months' in ``spend`` by month_index and summed in ``other``
        #: (the straight path moves ``spent`` only: see ``_Lane.bound``).
        self.spent = 0
        self.other = 0
        self.spend: dict[int, int] = {}
        self.calls: dict[tuple[str, int], int] = {}  # (item, month_index) -> calls, no lane
        self.lanes: dict[str, _Lane] = {}
        self.points: dict[str, int] = {}  # plan id -> points reserved (units)
        #: Every reservation with a call not yet given back or settled (each snapshot
        #: drops what it shows settled and the reservations left with no call).
        self.batches: list[Reservation] = []
        self.load(snap, scale)

    def load(self, snap: AccountSnapshot, scale: _Scale) -> None:
        money, units, n = scale.money, scale.units, scale.share
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
        # The spend guard and cap tests solved for the estimate once, here (exact for
        # integers, n >= 1): balance - n * total <= 0  <=>  total >= ceil(balance / n);
        # settled + n * spent > cap  <=>  spent > floor((cap - settled) / n).
        self.limit = min(-(-self.balance // n), _FAST_MAX)
        room = _FAST_MAX if self.cap is None else (self.cap - self.settled_spend) // n
        self.room = min(room, _FAST_MAX)
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
        self.spend, self.calls = old.spend, old.calls
        self.points, self.batches = old.points, old.batches
        # Old's month back into the dicts (lanes are the snapshot's), then this month out.
        spend, calls = self.spend, self.calls
        if old.spent:
            spend[old.month] = spend.get(old.month, 0) + old.spent
        for lane in old.lanes.values():
            unsettled = lane.position - lane.settled
            if unsettled:
                key = (lane.code, old.month)
                calls[key] = calls.get(key, 0) + unsettled
        self.spent = spend.pop(self.month, 0)
        self.other = sum(spend.values())

    def lane(self, item: BillableItem) -> _Lane:
        code = item.item
        fast = (
            not self.stop
            and not item.free
            and not (
                (self.subscriptions and self.subscriptions.get((item.category, item.action)))
                or (self.plans and self.plans.get(item.category))
            )
        )
        settled = self.payg_calls.get(code, 0) if self.payg_calls else 0
        lane = _Lane(code, self.month, settled, self.calls.pop((code, self.month), 0), fast)
        self.lanes[code] = lane
        return lane

    @property
    def total(self) -> int:
        return self.spent + self.other

    @property
    def idle(self) -> bool:
        return not (
            self.other
            or self.spent
            or self.spend
            or self.calls
            or self.points
            or any(b.stamps for b in self.batches)
            or (self.lanes and any(ln.position != ln.settled for ln in self.lanes.values()))
        )


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
        "_m_end",
        "_m_index",
        "_m_start",
        "_month",
        "_notify",
        "_open",
        "_prices",
        "_processes",
        "_scale",
        "_span",
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
        money_store: MoneyStore | None = None,
    ) -> None:
        self._clock = clock
        # The system clock's own reading, not a method around it (a frame per call).
        self._time = time.time if type(clock) is SystemClock else clock.time
        self._processes = processes
        self._span = refresh_interval
        self._arrearage = arrearage
        self._spend_cap = spend_cap
        self._notify = on_cap_reached
        self._accounts: dict[str, _Account] = {}
        self._capped: set[tuple[str, Month]] = set()
        #: Lanes whose straight-path window is open: all closed when the view's window
        #: moves (a reload starts), so no window outlives the one it was narrowed to.
        self._open: list[_Lane] = []
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
            on_window=self._close_windows,
            store=money_store,
        )
        self._month_of(self.view.snapshot)

    # -- the request path -------------------------------------------------------------

    def admit(
        self, account: str, item: BillableItem, now: float | None = None
    ) -> Reservation | None:
        """Refuse (``ApiError``) or reserve this call's estimated cost. ``now``: the call's
        arrival (epoch seconds, the meter's reading of this clock), else read here."""
        if now is None:
            now = self._time()
        # The common call, straight through: its lane's window (good standing,
        # pay-as-you-go, the snapshot's month, the tier price it had last call, no reload
        # due) holds ``now``, its position is still in that tier, and it is far from the
        # balance and the cap. Anything else (or a refusal) is decided by the slow path,
        # from the start. (Its ``low`` bound needs no test: see ``_take_back``.)
        try:  # subscripts, not ``.get``: no method call (a miss is once per snapshot)
            acct = self._accounts[account]
            lane = acct.lanes[item.item]
        except KeyError:
            return self._admit(account, item, now)
        if lane.start <= now < lane.end:
            position = lane.position
            if position < lane.high:
                spent = acct.spent + lane.price
                if spent <= lane.bound:
                    acct.spent = spent
                    lane.position = position + 1
                    lane.stamps.append(now)  # the call's share: its lane's batch
                    return lane.batch
        return self._admit(account, item, now)

    def _admit(self, account: str, item: BillableItem, now: float) -> Reservation | None:
        """Every rule, in order: standing, free, QPS subscription, plans, pay-as-you-go
        with the spend guard and the cap."""
        view = self.view
        if not view.fresh_from <= now < view.next_reload_at:
            view.start_if_due()  # stale: answer from the snapshot, reload behind
        acct = self._accounts.get(account)
        if acct is None:
            acct = self._accounts[account] = _Account(NOBODY, self._scale, self._m_index)
        code = item.item
        lane = acct.lanes.get(code)
        if lane is None:
            lane = acct.lane(item)
        if acct.stop:
            raise self._standing(acct, now)
        if item.free:
            return None
        if acct.subscriptions:
            for start, end in acct.subscriptions.get((item.category, item.action), ()):
                if start <= now < end:
                    return None  # a QPS subscription pays: nothing to estimate
        current = self._m_start <= now < self._m_end
        # Else the month turned since the snapshot (a reload is due): nothing settled yet.
        mi = acct.month if current else month_index(Month.of(datetime.fromtimestamp(now, UTC)))
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
                            return self._single(acct, account, code, mi, 0, plan_id, cost, now)
        # Months are keyed by an int (hashing a Month dataclass costs more than the rest).
        key = (code, mi)
        if current:
            position = lane.position
            if not (lane.p_from <= now < lane.p_to and lane.low <= position < lane.high):
                # Remembered on the lane with the span of time (within the month) and of
                # positions it holds for: the next calls take the straight path.
                t_from, t_to, lane.low, lane.high, lane.price = self._price(code, now, position)
                lane.p_from, lane.p_to = max(t_from, self._m_start), min(t_to, self._m_end)
                # Closed until a call at the new price is admitted (and its batch set).
                lane.start, lane.end = math.inf, -math.inf
            price = lane.price
            settled_spend, month_spent = acct.settled_spend, acct.spent
        else:
            position = acct.calls.get(key, 0)
            price = self._price(code, now, position)[4]
            settled_spend, month_spent = 0, acct.spend.get(mi, 0)
        n = self._processes
        # balance - n * estimate <= 0
        if acct.total * n >= acct.balance:
            raise self._refusal(
                self._spend_cap, SPEND_GUARD_REASON, "balance used up by unsettled calls"
            )
        spent = month_spent + price
        cap = acct.cap
        if cap is not None and settled_spend + spent * n > cap:
            self._cap_reached(account, mi, cap, settled_spend + spent * n)
            raise self._refusal(self._spend_cap, CAP_REASON, "monthly spend cap reached")
        if current:
            acct.spent = spent
            lane.position = position + 1
            res = lane.batch
            if res is None or res.price != price or now >= res.until:
                # One per interval: a given-back call's search in ``stamps`` stays short.
                res = lane.batch = Reservation(account, code, mi, price, until=now + self._span)
                lane.stamps = res.stamps
                acct.batches.append(res)
            res.stamps.append(now)
            if lane.fast:
                # The straight path's window: the price's, within the view's window
                # (read now: a reload that started since has moved it).
                if lane.end == -math.inf:
                    self._open.append(lane)
                lane.start = max(lane.p_from, view.fresh_from)
                lane.end = min(lane.p_to, view.next_reload_at)
                # total < limit  <=>  spent (with this call) <= limit - 1 - other + price.
                lane.bound = min(acct.room, acct.limit - 1 - acct.other + price, _FAST_MAX)
            return res
        acct.spend[mi] = spent
        acct.other += price
        for other_lane in acct.lanes.values():  # their bounds counted less: closed
            other_lane.start, other_lane.end = math.inf, -math.inf
        acct.calls[key] = position + 1
        return self._single(acct, account, code, mi, price, "", 0, now)

    @staticmethod
    def _single(
        acct: _Account,
        account: str,
        code: str,
        mi: int,
        price: int,
        plan_id: str,
        points: int,
        now: float,
    ) -> Reservation:
        """A reservation for this one call (a plan's points, or a month that turned)."""
        res = Reservation(account, code, mi, price, plan_id, points)
        res.stamps.append(now)
        acct.batches.append(res)
        return res

    @staticmethod
    def recorded(res: Reservation) -> None:
        """The call's record was written: its share is kept until a snapshot shows it
        settled. Call it, or ``release``, once per admitted call (the middleware does the
        same step inline, when it counts the call's outcome)."""
        res.recorded += 1

    def release(self, res: Reservation, arrived: float = -math.inf) -> None:
        """The call was not chargeable (or was refused after admission): give it back.
        ``arrived``: when the call arrived (epoch seconds; by default the earliest).

        Call it, or ``recorded``, once per admitted call (the middleware does, when it
        counts the call's outcome). A recorded call is never released."""
        stamps = res.stamps
        stamps.sort()  # in admission order already, but for a clock stepped back
        # The earliest stamp not before its arrival: its own, or one before it (so the
        # stamps left are never earlier than the calls they stand for: see Reservation).
        i = bisect_left(stamps, arrived)
        del stamps[i if i < len(stamps) else 0]
        acct = self._accounts.get(res.account)
        if acct is not None:
            _take_back(acct, res, 1)

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
        """A reservation's pay-as-you-go price in CNY, per call (None: a plan pays)."""
        return None if res.plan else self._cny(res.price)

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

    def _price(self, item: str, now: float, position: int) -> tuple[float, float, int, int, int]:
        """The tier price of the call after ``position`` calls this month, at ``now``, with
        where it holds: (from, until, lowest position, past the highest, price)."""
        prices = self._prices.get(item)
        if prices is None or not prices.starts:
            return (-math.inf, math.inf, 0, _FAST_MAX, 0)
        i = max(bisect_right(prices.starts, now) - 1, 0)
        t_from = prices.starts[i] if i else -math.inf
        t_to = prices.starts[i + 1] if i + 1 < len(prices.starts) else math.inf
        bounds, unit = prices.tiers[i]
        # The n-th call (n = position + 1) is in the first tier whose bound (inclusive)
        # is at least n; that tier holds positions [previous bound, its bound).
        tier = min(bisect_left(bounds, position + 1), len(unit) - 1)
        low = bounds[tier - 1] if tier else 0
        high = bounds[tier] if tier < len(bounds) else _FAST_MAX
        return (t_from, t_to, low, high, unit[tier])

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
        scale, month = self._scale, snapshot.month_index
        return {name: _Account(snap, scale, month) for name, snap in snapshot.accounts.items()}

    def _close_windows(self) -> None:
        """A reload starts (the view's window moved): every straight path closes, and
        each lane's next call opens it again in the new window, through the slow path."""
        for lane in self._open:
            lane.start, lane.end = math.inf, -math.inf
        self._open.clear()

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
                acct = fresh[name] = _Account(NOBODY, self._scale, snapshot.month_index)
            acct.carry(old)
            horizon = acct.horizon
            acct.batches = [res for res in acct.batches if _resolve(acct, res, horizon)]
        self._accounts = fresh


def _resolve(acct: _Account, res: Reservation, horizon: float) -> bool:
    """A snapshot with this settled horizon: drop the recorded calls it shows settled
    (see ``Reservation`` for why this many); True while the reservation has calls left."""
    stamps = res.stamps
    recorded = res.recorded
    if recorded:
        stamps.sort()  # in admission order already, but for a clock stepped back
        settled = bisect_left(stamps, horizon) - (len(stamps) - recorded)
        if settled > 0:
            settled = min(settled, recorded)
            del stamps[:settled]
            res.recorded = recorded - settled
            _take_back(acct, res, settled)
    return bool(stamps)


def _take_back(acct: _Account, res: Reservation, calls: int) -> None:
    """``calls`` of ``res``'s calls leave the estimate (given back or settled)."""
    item, index, plan_id = res.item, res.month, res.plan
    if plan_id:
        left = acct.points.get(plan_id, 0) - res.points * calls
        if left > 0:
            acct.points[plan_id] = left
        else:
            acct.points.pop(plan_id, None)
        return
    price = res.price * calls
    if index == acct.month:
        acct.spent -= price
        lane = acct.lanes.get(item)
        if lane is not None:
            lane.position -= calls
            if lane.position < lane.low:
                # Back below the tier the lane's price is for: the straight path (which
                # tests only the upper bound) must not take the next call.
                lane.start, lane.end = math.inf, -math.inf
            return
    else:
        acct.other -= price
        spent = acct.spend.get(index, 0) - price
        if spent > 0:
            acct.spend[index] = spent
        else:
            acct.spend.pop(index, None)
    key = (item, index)
    n = acct.calls.get(key, 0) - calls
    if n > 0:
        acct.calls[key] = n
    else:
        acct.calls.pop(key, None)
