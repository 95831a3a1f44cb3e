"""The standing check, spend guard and caps against a real SQLite ledger on a ManualClock.

The guard reads a money snapshot (balances, standing, caps, settled horizon, plans) and
keeps its own estimate of unsettled pay-as-you-go; settlement is the real ``rating.settle``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from metering_middleware.catalog import BillableItem
from metering_middleware.errors import ACCOUNT_ARREARAGE, SPEND_CAP_EXCEEDED, ApiError
from metering_middleware.ledger import CallRecord
from metering_middleware.rating import (
    AccountSettings,
    Month,
    buy_qps_subscription,
    buy_resource_plan,
)
from metering_middleware.spend_guard import (
    Reservation,
    SpendGuard,
    reserved_month,
    reserved_plan,
)
from tests.rating.helpers import call, utc
from tests.rating.settle_support import Harness
from tests.support.money import DETECT, priced_catalog, topup

CATALOG = priced_catalog()
START = utc(2026, 3, 2, 6)
DETECT_ITEM = CATALOG.lookup("facebody", "DetectFace")
COMPARE_ITEM = CATALOG.lookup("facebody", "CompareFace")
PLATE_ITEM = CATALOG.lookup("ocr", "RecognizeLicensePlate")
FREE_ITEM = CATALOG.lookup("ocr", "GetAsyncJobResult")
assert DETECT_ITEM and COMPARE_ITEM and PLATE_ITEM and FREE_ITEM and FREE_ITEM.free


class Money(Harness):
    """A ledger, its rating store and a guard, all on one ManualClock."""

    guard: SpendGuard
    capped: list[tuple[str, Month]]
    n: int = 0

    def make_guard(self, processes: int = 1) -> SpendGuard:
        self.capped = []
        self.guard = SpendGuard(
            str(self.path),
            self.catalog,
            self.clock,
            processes=processes,
            arrearage=ACCOUNT_ARREARAGE,
            spend_cap=SPEND_CAP_EXCEEDED,
            on_cap_reached=lambda a, m, *_: self.capped.append((a, m)),
        )
        return self.guard

    async def fresh(self) -> None:
        """What the next background refresh does by itself (tests wait for it): a reload
        that starts now (one already under way may have read before the test's change)."""
        await self.guard.view.join()
        await self.guard.view.refresh()

    def admit(self, item: BillableItem = DETECT_ITEM, account: str = "acct") -> Reservation | None:
        return self.guard.admit(account, item)

    def refused(self, item: BillableItem = DETECT_ITEM, account: str = "acct") -> ApiError:
        with pytest.raises(ApiError) as info:
            self.guard.admit(account, item)
        return info.value

    async def charged(self, res: Reservation | None, item: str = DETECT) -> CallRecord:
        """The call's record is written (as the middleware's writer would) and kept."""
        assert res is not None
        self.guard.recorded(res)
        self.n += 1
        record = call(self.catalog, f"r{self.n:06d}", self.clock.now(), item, res.account)
        await self.ledger.write([record], [])
        return record

    async def settle_all(self) -> None:
        """Settle everything so far (past the 60 s lag), then refresh the snapshot."""
        self.clock.advance(61)
        await self.settle()
        await self.fresh()


@pytest.fixture
async def money(tmp_path: Path) -> AsyncIterator[Money]:
    m = Money(tmp_path / "ledger.sqlite", CATALOG, START)
    async with m:
        m.make_guard()
        yield m
        await m.guard.view.close()


def available(m: Money, account: str = "acct") -> Decimal:
    snap = m.guard.view.snapshot.account(account)
    return snap.balance - m.guard.estimate(account)


# -- spend guard ---------------------------------------------------------------------------


async def test_a_zero_balance_refuses_pay_as_you_go_but_its_plans_still_pay(money: Money) -> None:
    await money.fresh()
    err = money.refused()
    assert (err.code, err.status, err.reason) == ("Account.SpendCapExceeded", 403, "spend_guard")
    await buy_resource_plan(
        money.rating, CATALOG, account="acct", kind="single", categories=("facebody",),
        points=100, ordered_at=money.clock.now(), price_paid="0",
    )  # fmt: skip
    await money.fresh()
    first, second = money.admit(), money.admit()  # 50 points each: the plan pays both
    assert first and second and money.guard.reserved_price(first) is None
    plan_id = reserved_plan(first)
    assert plan_id is not None and money.guard.reserved_points("acct", plan_id) == 100
    assert money.refused().reason == "spend_guard"  # points reserved in flight: none left
    money.guard.release(second)  # not chargeable after all: its points come back
    assert money.admit() is not None


async def test_debt_is_at_most_the_last_call_admitted(money: Money) -> None:
    await topup(money.rating, "acct", "1.20", money.clock.now())
    await money.fresh()
    admitted = [money.admit() for _ in range(3)]  # 0.50 each: 1.20 - 1.00 > 0 still admits
    assert [money.guard.reserved_price(r) for r in admitted if r] == [Decimal("0.50")] * 3
    assert money.refused().reason == "spend_guard"
    assert available(money) == Decimal("-0.30")  # into debt by less than one call
    assert money.refused(COMPARE_ITEM).reason == "spend_guard"  # another action: same balance
    money.guard.release(admitted[2])  # the third turned out free: room again
    assert money.admit() is not None


async def test_settlement_moves_the_estimate_into_the_balance_in_one_step(money: Money) -> None:
    await topup(money.rating, "acct", "10.00", money.clock.now())
    await money.fresh()
    for _ in range(4):
        await money.charged(money.admit())  # 3 at 0.50, the 4th in the next tier, 0.25
        money.clock.advance(1)
    assert money.guard.estimate("acct") == Decimal("1.75")
    before = available(money)
    await money.settle_all()
    snap = money.guard.view.snapshot.account("acct")
    assert snap.balance == Decimal("8.25") and money.guard.estimate("acct") == 0
    assert available(money) == before  # nothing counted twice, nothing lost
    assert snap.payg_calls == {DETECT: 4} and snap.month_spend == Decimal("1.75")
    nxt = money.admit()  # the tier position continues from the settled calls
    assert nxt is not None and money.guard.reserved_price(nxt) == Decimal("0.25")


async def test_only_settled_records_leave_the_estimate(money: Money) -> None:
    await topup(money.rating, "acct", "10.00", money.clock.now())
    await money.fresh()
    in_flight = money.admit()  # admitted before the horizon, still waiting for its answer
    settled = await money.charged(money.admit())
    money.clock.advance(61)
    await money.settle()
    late = await money.charged(money.admit())  # recorded after the settlement's horizon
    await money.fresh()
    assert in_flight is not None and settled.occurred_at < late.occurred_at
    # The settled one's cost is in the balance now; the two others are still estimated.
    assert money.guard.view.snapshot.account("acct").balance == Decimal("9.50")
    assert money.guard.estimate("acct") == Decimal("1.00")
    money.guard.release(in_flight)
    assert money.guard.estimate("acct") == Decimal("0.50")


async def test_every_access_key_and_action_of_an_account_shares_one_guard(money: Money) -> None:
    await topup(money.rating, "acct", "0.50", money.clock.now())
    await topup(money.rating, "other", "0.50", money.clock.now())
    await money.fresh()
    assert money.admit(COMPARE_ITEM) is not None  # 0.40 of 0.50
    assert money.admit(DETECT_ITEM) is not None  # 0.10 left: admitted, into debt by 0.40
    assert money.refused(COMPARE_ITEM).reason == "spend_guard"
    assert money.refused(DETECT_ITEM).reason == "spend_guard"
    assert money.admit(DETECT_ITEM, account="other") is not None  # another tenant untouched


async def test_plans_and_subscriptions_cover_only_what_they_cover(money: Money) -> None:
    await buy_resource_plan(
        money.rating, CATALOG, account="acct", kind="single", categories=("ocr",),
        points=1000, ordered_at=money.clock.now(), price_paid="0",
    )  # fmt: skip
    await buy_qps_subscription(
        money.rating, CATALOG, account="acct", category="facebody", action="CompareFace",
        qps=5, ordered_at=money.clock.now(), price_paid="0",
    )  # fmt: skip
    await money.fresh()
    assert money.admit(PLATE_ITEM) is not None  # the ocr plan pays
    assert money.admit(COMPARE_ITEM) is None  # the subscription pays: nothing estimated
    assert money.refused(DETECT_ITEM).reason == "spend_guard"  # neither covers DetectFace
    assert money.admit(FREE_ITEM) is None  # free actions cost nothing
    money.clock.advance(40 * 86400)  # the one-month subscription has ended
    assert money.refused(COMPARE_ITEM).reason == "spend_guard"


async def test_a_monthly_cap_is_never_overshot_and_the_hook_fires_once(money: Money) -> None:
    await topup(money.rating, "acct", "100.00", money.clock.now())
    await money.rating.set_account_settings(
        AccountSettings("acct", monthly_cap=Decimal("1.00")), money.clock.now()
    )
    await money.fresh()
    first, second = money.admit(), money.admit()  # 0.50 + 0.50 = 1.00: not above the cap
    err = money.refused()
    assert (err.code, err.reason) == ("Account.SpendCapExceeded", "cap")
    money.refused()
    assert money.capped == [("acct", Month(2026, 3))]  # once per account and month
    await money.charged(first)
    await money.charged(second)
    await money.settle_all()
    snap = money.guard.view.snapshot.account("acct")
    assert snap.month_spend == Decimal("1.00") and money.guard.estimate("acct") == 0
    assert money.refused().reason == "cap"  # settled spend counts the same way
    assert await money.rating.standings() == {}  # a cap or guard refusal is not arrears


async def test_each_of_n_processes_guards_its_share(money: Money) -> None:
    guard = money.make_guard(processes=2)
    await topup(money.rating, "acct", "1.00", money.clock.now())
    await money.fresh()
    assert guard.admit("acct", DETECT_ITEM) is not None  # 1.00 - 2 * 0 > 0
    assert money.refused().reason == "spend_guard"  # 1.00 - 2 * 0.50 = 0: its half is used
    await money.rating.set_account_settings(
        AccountSettings("capped", monthly_cap=Decimal("1.00")), money.clock.now()
    )
    await topup(money.rating, "capped", "100.00", money.clock.now())
    await money.fresh()
    assert guard.admit("capped", DETECT_ITEM) is not None  # 2 * 0.50 = 1.00: its half
    assert money.refused(account="capped").reason == "cap"
    # A plan's points are shared the same way: 100 points left, 50 per call, 2 processes.
    await buy_resource_plan(
        money.rating, CATALOG, account="planned", kind="single", categories=("facebody",),
        points=100, ordered_at=money.clock.now(), price_paid="0",
    )  # fmt: skip
    await money.fresh()
    covered = guard.admit("planned", DETECT_ITEM)
    assert covered is not None and reserved_plan(covered) is not None
    assert money.refused(account="planned").reason == "spend_guard"  # its half is used


# -- standing ------------------------------------------------------------------------------


async def _overdue(money: Money) -> None:
    """acct spends 0.50 it does not have; settlement makes it overdue."""
    await topup(money.rating, "acct", "0.10", money.clock.now())
    await money.fresh()
    await money.charged(money.admit())
    await money.settle_all()
    standing = (await money.rating.standings())["acct"]
    assert standing.overdue_since is not None and standing.suspended_at is None


async def test_an_overdue_account_is_refused_even_what_its_plans_would_pay(money: Money) -> None:
    await buy_qps_subscription(
        money.rating, CATALOG, account="acct", category="facebody", action="CompareFace",
        qps=5, ordered_at=money.clock.now(), price_paid="0",
    )  # fmt: skip
    await _overdue(money)
    for item in (DETECT_ITEM, COMPARE_ITEM, FREE_ITEM):
        err = money.refused(item)
        assert (err.code, err.status, err.reason) == ("Account.Arrearage", 403, "overdue")
    money.clock.advance(24 * 3600)  # no settlement since: the clock alone suspends
    assert money.refused().reason == "suspended"
    await money.guard.view.join()  # the reload that refusal started (it finds nothing new)
    await topup(money.rating, "acct", "5.00", money.clock.now())
    assert money.refused().reason == "suspended"  # until the next refresh
    money.clock.advance(1)
    money.refused()  # stale: answered from the snapshot, starts the refresh behind
    await money.guard.view.join()
    assert money.admit(COMPARE_ITEM) is None and money.admit() is not None


async def test_an_operator_hold_refuses_whatever_the_balance(money: Money) -> None:
    await topup(money.rating, "acct", "50.00", money.clock.now())
    await money.rating.set_hold("acct", money.clock.now(), "fraud review", hold=True)
    await money.fresh()
    assert money.refused(FREE_ITEM).reason == "held"
    await money.rating.set_hold("acct", money.clock.now(), None, hold=False)
    await money.fresh()
    assert money.admit() is not None


async def test_a_stored_suspension_refuses_at_once(money: Money) -> None:
    await _overdue(money)
    money.clock.advance(24 * 3600)
    await money.rating.settle_standing(money.clock.now())  # what a settlement writes
    await money.fresh()
    assert money.guard.view.snapshot.account("acct").suspended
    assert money.refused().reason == "suspended"


# -- the view ------------------------------------------------------------------------------


async def test_a_reload_reads_everything_only_when_a_mark_moved(money: Money) -> None:
    view = money.guard.view
    await view.refresh()
    await view.refresh()
    assert (view.loads, view.full_loads) == (2, 1)  # the second read only the marks
    await topup(money.rating, "acct", "1.00", money.clock.now())
    await view.refresh()
    assert view.full_loads == 2 and view.snapshot.account("acct").balance == 1
    await money.rating.set_account_settings(
        AccountSettings("acct", monthly_cap=Decimal("3")), money.clock.now()
    )
    await view.refresh()
    assert view.full_loads == 3 and view.snapshot.account("acct").monthly_cap == 3
    money.clock.set(Month(2026, 4).start)  # a new billing month is a new snapshot
    await view.refresh()
    assert view.full_loads == 4 and view.snapshot.month == Month(2026, 4)


async def test_the_request_path_reloads_at_most_once_per_interval(money: Money) -> None:
    view = money.guard.view
    await topup(money.rating, "acct", "500.00", money.clock.now())
    await view.refresh()
    loads = view.loads
    for _ in range(50):
        money.admit()
        money.clock.advance(0.01)
    await view.join()
    assert view.loads == loads  # half a second: no reload
    money.clock.advance(0.6)
    for _ in range(50):
        money.admit()
    await view.join()
    assert view.loads == loads + 1


async def test_a_new_month_prices_from_its_first_tier(money: Money) -> None:
    await topup(money.rating, "acct", "10.00", money.clock.now())
    await money.fresh()
    for _ in range(4):
        await money.charged(money.admit())
    money.clock.set(Month(2026, 4).start + timedelta(seconds=1))
    first_of_april = money.admit()  # the snapshot is still March's: nothing settled in April
    assert first_of_april is not None
    assert money.guard.reserved_price(first_of_april) == Decimal("0.50")
    assert reserved_month(first_of_april) == Month(2026, 4)


async def test_a_long_call_recorded_after_later_ones_leaves_the_estimate_on_time(
    money: Money,
) -> None:
    await topup(money.rating, "acct", "10.00", money.clock.now())
    await money.fresh()
    long_call = money.admit()  # arrives first, answers last
    money.clock.advance(5)
    short = await money.charged(money.admit())
    money.clock.advance(5)
    await money.charged(long_call)  # its record: occurred before the short one's
    money.clock.advance(61)
    await money.settle()  # settles both
    await money.fresh()
    assert short.occurred_at > START and money.guard.estimate("acct") == 0
    assert money.guard.view.snapshot.account("acct").balance == Decimal("9.00")


# -- the straight path's bookkeeping (lanes: one per account and item, per snapshot) -------


async def test_the_straight_path_never_outlives_the_views_window(money: Money) -> None:
    """A lane's straight path is narrowed to the view's reload window and closed when a
    reload starts: a wall clock stepped back and forward again into an old window still
    asks for the reload that is due (as every call did before there was a straight path)."""
    view = money.guard.view
    await topup(money.rating, "acct", "500.00", money.clock.now())
    await view.refresh()
    t0, loads = money.clock.time(), view.loads
    for _ in range(5):
        assert money.admit() is not None  # the straight path opens, until t0 + 1
    money.clock.advance(0.2)
    money.clock.step(-3600)  # NTP steps the wall clock back
    assert money.admit() is not None
    await view.join()
    assert view.loads == loads  # 0.2 s since the last reload: none due
    money.clock.advance(1.0)
    assert money.admit() is not None  # due: a reload starts, the old windows close
    await view.join()
    assert view.loads == loads + 1
    money.clock.advance(1.0)  # due again, and the wall clock back inside the first window
    money.clock.set(t0 + 0.5)
    assert money.admit() is not None
    await view.join()
    assert view.loads == loads + 2


def prices(m: Money, reservations: list[Reservation | None]) -> list[Decimal | None]:
    return [m.guard.reserved_price(r) for r in reservations if r is not None]


async def test_a_released_call_gives_its_tier_position_back(money: Money) -> None:
    await topup(money.rating, "acct", "10.00", money.clock.now())
    await money.fresh()
    calls = [money.admit() for _ in range(4)]  # 3 in the first tier, 1 in the second
    assert prices(money, calls) == [Decimal("0.50")] * 3 + [Decimal("0.25")]
    for res in calls[2:]:
        assert res is not None
        money.guard.release(res)
    assert money.guard.estimate("acct") == Decimal("1.00")
    again = [money.admit(), money.admit()]  # positions 2 and 3 again
    assert prices(money, again) == [Decimal("0.50"), Decimal("0.25")]
    for res in calls[:2] + again:
        assert res is not None
        money.guard.release(res)
    assert money.guard.estimate("acct") == 0 and money.guard.accounts_estimated == 0


async def test_a_months_unsettled_calls_keep_their_count_across_the_reload_that_turns_it(
    money: Money,
) -> None:
    await topup(money.rating, "acct", "10.00", money.clock.now())
    await money.fresh()
    march = [money.admit() for _ in range(2)]
    money.clock.set(Month(2026, 4).start + timedelta(seconds=1))
    april = [money.admit() for _ in range(3)]  # the snapshot is still March's
    assert prices(money, april) == [Decimal("0.50")] * 3
    await topup(money.rating, "acct", "1.00", money.clock.now())
    await money.fresh()
    assert money.guard.view.snapshot.month == Month(2026, 4)
    fourth = money.admit()  # April's 4th call, now on April's snapshot: the second tier
    assert prices(money, [fourth]) == [Decimal("0.25")]
    assert money.guard.estimate("acct") == Decimal("2.75")
    for res in [*march, *april, fourth]:
        assert res is not None
        money.guard.release(res)
    assert money.guard.estimate("acct") == 0 and money.guard.accounts_estimated == 0
    assert prices(money, [money.admit()]) == [Decimal("0.50")]  # April's first again


async def test_a_cap_set_later_counts_the_months_spend_already_estimated(money: Money) -> None:
    await topup(money.rating, "acct", "10.00", money.clock.now())
    await money.fresh()
    for _ in range(3):
        assert money.admit() is not None  # 1.50 this month, no cap yet
    await money.rating.set_account_settings(
        AccountSettings("acct", monthly_cap=Decimal("2.00")), money.clock.now()
    )
    await money.fresh()
    assert prices(money, [money.admit(), money.admit()]) == [Decimal("0.25")] * 2  # 2.00
    assert money.refused().reason == "cap"
    assert money.capped == [("acct", Month(2026, 3))]


async def test_recorded_reservations_are_filed_and_dropped_once_settled(money: Money) -> None:
    await topup(money.rating, "acct", "10.00", money.clock.now())
    await money.fresh()
    for _ in range(3):
        await money.charged(money.admit())
    money.clock.advance(1.5)
    await money.fresh()  # a reload that moved nothing still files what was recorded
    assert money.guard.estimate("acct") == Decimal("1.50")
    assert money.guard.accounts_estimated == 1
    await money.settle_all()
    assert money.guard.estimate("acct") == 0 and money.guard.accounts_estimated == 0
    assert money.guard.view.snapshot.account("acct").balance == Decimal("8.50")


async def test_calls_sharing_a_reservation_leave_the_estimate_one_by_one(money: Money) -> None:
    """The straight path's calls of one lane share one reservation (counters, no object
    per call): a snapshot still drops exactly the recorded calls before its horizon, and
    a given-back call takes out its own instant, not the earliest."""
    await topup(money.rating, "acct", "10.00", money.clock.now())
    await money.fresh()
    early = money.admit()
    await money.charged(early)  # recorded at START
    money.clock.advance(0.5)
    freed, later = money.admit(), money.admit()
    assert freed is not None
    money.guard.release(freed, money.clock.time())  # it arrived at START + 0.5
    assert early is not None and early is later is freed  # one reservation
    await money.charged(later)  # recorded at START + 0.5
    assert money.guard.estimate("acct") == Decimal("1.00")
    money.clock.advance(59.75)  # the horizon falls between the first call and the others
    await money.settle()
    await money.fresh()
    snap = money.guard.view.snapshot.account("acct")
    assert snap.balance == Decimal("9.50") and snap.payg_calls == {DETECT: 1}
    assert money.guard.estimate("acct") == Decimal("0.50")  # later's only: nothing twice
    await money.settle_all()
    assert money.guard.view.snapshot.account("acct").balance == Decimal("9.00")
    assert money.guard.estimate("acct") == 0 and money.guard.accounts_estimated == 0


async def test_a_call_in_flight_across_the_horizon_is_never_dropped(money: Money) -> None:
    """Only counts say which call of a reservation is recorded and which is in flight:
    a call in flight when the horizon passes it keeps its price all the same."""
    await topup(money.rating, "acct", "10.00", money.clock.now())
    await money.fresh()
    slow = money.admit()  # admitted at START, in flight for longer than the lag
    money.clock.advance(0.5)
    quick = money.admit()
    assert slow is not None and slow is quick
    await money.charged(quick)  # recorded at START + 0.5
    money.clock.advance(59.75)  # the horizon: START + 0.25
    await money.settle()  # nothing settled: the quick call occurred after the horizon
    await money.fresh()
    assert money.guard.view.snapshot.account("acct").balance == Decimal("10.00")
    assert money.guard.estimate("acct") == Decimal("1.00")  # the slow call is never dropped
    money.clock.advance(1)
    await money.settle()  # now the quick call is settled; the slow one has no record yet
    await money.fresh()
    assert money.guard.view.snapshot.account("acct").balance == Decimal("9.50")
    assert money.guard.estimate("acct") == Decimal("0.50")  # the slow call's price stays
    await money.charged(slow)
    await money.settle_all()
    assert money.guard.view.snapshot.account("acct").balance == Decimal("9.00")
    assert money.guard.estimate("acct") == 0


async def test_another_months_call_counts_at_once_on_the_straight_path(money: Money) -> None:
    """The straight path tests the month's estimate against a bound set with its window;
    a call in another month (a wall clock past the month's end, then stepped back) raises
    the estimate the bound did not count, so it closes the windows: the balance holds."""
    await topup(money.rating, "acct", "1.20", money.clock.now())
    await money.fresh()
    t0 = money.clock.time()
    assert money.admit() is not None  # March, 0.50: the straight path opens
    money.clock.set(Month(2026, 4).start + timedelta(seconds=1))
    april = money.admit()  # 1.00 estimated of 1.20
    assert april is not None and reserved_month(april) == Month(2026, 4)
    money.clock.set(t0 + 0.1)  # stepped back into March's open window
    assert money.admit() is not None  # 1.00 < 1.20: admitted, into debt by 0.30
    assert money.refused().reason == "spend_guard"  # 1.50: the April call counted
