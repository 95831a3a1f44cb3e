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
its cost). Everything here is dict lookups and a few ``Decimal`` operations.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from .catalog import BillableItem, Catalog, PriceSchedule
from .clock import Clock
from .errors import ApiError, ErrorKind
from .money_view import MoneySnapshot, MoneyView
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
_IN_FLIGHT, _RECORDED, _DONE = 0, 1, 2


class Reservation:
    """One admitted call's share of its account's estimate."""

    __slots__ = ("account", "item", "month", "occurred", "plan_id", "points", "price", "state")

    def __init__(
        self,
        account: str,
        item: str,
        month: Month,
        occurred: float,
        price: Decimal | None,
        plan_id: str | None,
        points: Decimal,
    ) -> None:
        self.account = account
        self.item = item
        self.month = month
        self.occurred = occurred
        self.price = price  # pay-as-you-go: its estimated price; None: a plan pays
        self.plan_id = plan_id
        self.points = points
        self.state = _IN_FLIGHT

    def __repr__(self) -> str:
        what = f"payg {self.price}" if self.price is not None else f"{self.plan_id} {self.points}"
        return f"Reservation({self.account!r}, {self.item!r}, {what})"


class _Estimate:
    """One account's unsettled reservations in this process."""

    __slots__ = ("calls", "month_spend", "points", "recorded", "total")

    def __init__(self) -> None:
        self.total = _ZERO  # every unsettled pay-as-you-go price, all months
        self.month_spend: dict[Month, Decimal] = {}
        self.calls: dict[tuple[str, Month], int] = {}
        self.points: dict[str, Decimal] = {}
        #: Recorded reservations by occurrence: (occurred, n, reservation).
        self.recorded: list[tuple[float, int, Reservation]] = []

    @property
    def empty(self) -> bool:
        return self.total == 0 and not self.calls and not self.points and not self.recorded


@dataclass(frozen=True, slots=True)
class _Prices:
    starts: tuple[float, ...]
    schedules: tuple[PriceSchedule, ...]


class SpendGuard:
    """``guard.admit(account, item)`` -> a ``Reservation`` (or None), or raises ``ApiError``."""

    __slots__ = (
        "_arrearage",
        "_capped",
        "_clock",
        "_estimates",
        "_notify",
        "_order",
        "_prices",
        "_processes",
        "_spend_cap",
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
        on_cap_reached: Callable[[str, Month], None] | None = None,
    ) -> None:
        self._clock = clock
        self._processes = processes
        self._arrearage = arrearage
        self._spend_cap = spend_cap
        self._notify = on_cap_reached
        self._estimates: dict[str, _Estimate] = {}
        self._capped: set[tuple[str, Month]] = set()
        self._order = itertools.count()
        self._prices = {
            it.item: _Prices(
                tuple(s.effective_from.timestamp() for s in it.prices), tuple(it.prices)
            )
            for it in catalog.items
        }
        self.coefficients = {it.item: it.coefficient for it in catalog.items}
        self.view = MoneyView(
            ledger_file, clock, refresh_interval=refresh_interval, on_snapshot=self._settled
        )

    # -- the request path -------------------------------------------------------------

    def admit(self, account: str, item: BillableItem) -> Reservation | None:
        """Refuse (``ApiError``) or reserve this call's estimated cost."""
        view = self.view
        view.start_if_due()  # stale: answer from the snapshot, reload behind
        snap = view.snapshot
        acct = snap.account(account)
        now = self._clock.time()
        if acct.held:
            raise self._refusal(self._arrearage, HELD_REASON, "suspended by the operator")
        if acct.overdue_since is not None:
            if acct.suspended or now - acct.overdue_since >= _SUSPEND_SECONDS:
                raise self._refusal(self._arrearage, SUSPENDED_REASON, "suspended for arrears")
            raise self._refusal(self._arrearage, OVERDUE_REASON, "overdue")
        if item.free:
            return None
        category = item.category
        for start, end in acct.subscriptions.get((category, item.action), ()):
            if start <= now < end:
                return None  # a QPS subscription pays: nothing to estimate
        if snap.month_start <= now < snap.month_end:
            month = snap.month
            settled_calls = acct.payg_calls.get(item.item, 0)
            settled_spend = acct.month_spend
        else:  # the month turned since the snapshot (a reload is due): nothing settled yet
            month = Month.of(datetime.fromtimestamp(now, UTC))
            settled_calls, settled_spend = 0, _ZERO
        est = self._estimates.get(account)
        if est is None:
            est = self._estimates[account] = _Estimate()
        plans = acct.plans.get(category)
        if plans:
            cost = self.coefficients[item.item]
            for plan in plans:
                if plan.start <= now < plan.end:
                    used = est.points.get(plan.id, _ZERO)
                    if plan.left - used >= cost:
                        est.points[plan.id] = used + cost
                        return Reservation(account, item.item, month, now, None, plan.id, cost)
        key = (item.item, month)
        position = settled_calls + est.calls.get(key, 0)
        price = self._price(item.item, now, position)
        n = self._processes
        if acct.balance - est.total * n <= 0:
            raise self._refusal(
                self._spend_cap, SPEND_GUARD_REASON, "balance used up by unsettled calls"
            )
        cap = acct.monthly_cap
        if cap is not None:
            spent = est.month_spend.get(month, _ZERO)
            if settled_spend + (spent + price) * n > cap:
                self._cap_reached(account, month)
                raise self._refusal(self._spend_cap, CAP_REASON, "monthly spend cap reached")
            est.month_spend[month] = spent + price
        else:
            est.month_spend[month] = est.month_spend.get(month, _ZERO) + price
        est.total += price
        est.calls[key] = est.calls.get(key, 0) + 1
        return Reservation(account, item.item, month, now, price, None, _ZERO)

    def release(self, res: Reservation) -> None:
        """The call was not chargeable (or was refused after admission): give it back."""
        if res.state != _IN_FLIGHT:
            return
        res.state = _DONE
        est = self._estimates.get(res.account)
        if est is not None:
            self._take_back(est, res)
            if est.empty:
                del self._estimates[res.account]

    def recorded(self, res: Reservation) -> None:
        """Its record was written: kept until a snapshot shows it settled."""
        if res.state != _IN_FLIGHT:
            return
        res.state = _RECORDED
        est = self._estimates.get(res.account)
        if est is not None:
            heapq.heappush(est.recorded, (res.occurred, next(self._order), res))

    # -- reading the estimate (tests, metrics) ---------------------------------------------

    def estimate(self, account: str) -> Decimal:
        """Unsettled pay-as-you-go this process reserved for ``account`` (all months)."""
        est = self._estimates.get(account)
        return _ZERO if est is None else est.total

    def reserved_points(self, account: str, plan_id: str) -> Decimal:
        est = self._estimates.get(account)
        return _ZERO if est is None else est.points.get(plan_id, _ZERO)

    @property
    def accounts_estimated(self) -> int:
        return len(self._estimates)

    # -- internals ------------------------------------------------------------------------

    def _price(self, item: str, now: float, position: int) -> Decimal:
        prices = self._prices.get(item)
        if prices is None or not prices.starts:
            return _ZERO
        i = bisect_right(prices.starts, now) - 1
        schedule = prices.schedules[max(i, 0)]
        return schedule.tiers[schedule.tier_index(position + 1)].price

    def _refusal(self, kind: ErrorKind, reason: str, why: str) -> ApiError:
        return ApiError(kind, f"The account cannot make this call: {why}.", reason=reason)

    def _cap_reached(self, account: str, month: Month) -> None:
        key = (account, month)
        if key in self._capped or self._notify is None:
            return
        self._capped.add(key)
        try:
            self._notify(account, month)
        except Exception:  # a notice hook never fails a call
            log.exception("on_cap_reached hook failed for %s %s", account, month)

    def _take_back(self, est: _Estimate, res: Reservation) -> None:
        if res.price is None:
            assert res.plan_id is not None
            left = est.points.get(res.plan_id, _ZERO) - res.points
            if left > 0:
                est.points[res.plan_id] = left
            else:
                est.points.pop(res.plan_id, None)
            return
        est.total -= res.price
        spent = est.month_spend.get(res.month, _ZERO) - res.price
        if spent > 0:
            est.month_spend[res.month] = spent
        else:
            est.month_spend.pop(res.month, None)
        key = (res.item, res.month)
        n = est.calls.get(key, 0) - 1
        if n > 0:
            est.calls[key] = n
        else:
            est.calls.pop(key, None)

    def _settled(self, snapshot: MoneySnapshot) -> None:
        """A new snapshot: drop the recorded reservations it shows settled."""
        for account, est in list(self._estimates.items()):
            horizon = snapshot.account(account).horizon
            heap = est.recorded
            while heap and heap[0][0] < horizon:
                res = heapq.heappop(heap)[2]
                res.state = _DONE
                self._take_back(est, res)
            if est.empty:
                del self._estimates[account]
