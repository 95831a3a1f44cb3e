"""Entitlements: the rules (billing rules section 4) and the cached view."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering_middleware.catalog import default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.entitlements import (
    Entitlement,
    EntitlementInputs,
    EntitlementView,
    QpsSource,
    entitlement,
)
from metering_middleware.rating.plans import PlanKind, QpsSubscription, ResourcePlan

CATALOG = default_catalog()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _sub(
    qps: int, *, api: tuple[str, str] = ("facebody", "DetectFace"), **kw: object
) -> QpsSubscription:
    values: dict[str, object] = {
        "id": f"sub-{qps}",
        "account": "acct",
        "category": api[0],
        "action": api[1],
        "qps": qps,
        "start": T0,
        "end": T0 + 30 * DAY,
        "ordered_at": T0,
        "price_paid": Decimal("100"),
    }
    values.update(kw)
    return QpsSubscription(**values)  # type: ignore[arg-type]


def _plan(categories: set[str], *, id: str = "plan-1", **kw: object) -> ResourcePlan:
    values: dict[str, object] = {
        "id": id,
        "account": "acct",
        "kind": PlanKind.SINGLE if len(categories) == 1 else PlanKind.GENERAL,
        "categories": frozenset(categories),
        "points": Decimal("5000"),
        "start": T0,
        "end": T0 + 365 * DAY,
        "ordered_at": T0,
        "price_paid": Decimal("50"),
    }
    values.update(kw)
    return ResourcePlan(**values)  # type: ignore[arg-type]


def _at(inputs: EntitlementInputs, category: str, action: str, when: datetime) -> Entitlement:
    return entitlement(CATALOG, inputs, "acct", category, action, when)


def test_defaults_come_from_the_catalog() -> None:
    none = EntitlementInputs()
    assert _at(none, "facebody", "DetectFace", T0) == Entitlement(2, QpsSource.DEFAULT)
    assert _at(none, "ocr", "RecognizeCharacter", T0) == Entitlement(1, QpsSource.DEFAULT)


def test_a_subscription_gives_its_level_capped_at_the_largest_purchasable() -> None:
    inputs = EntitlementInputs(subscriptions=(_sub(20),), plans=(_plan({"facebody"}),))
    assert _at(inputs, "facebody", "DetectFace", T0) == Entitlement(20, QpsSource.SUBSCRIPTION)
    # Only for its API: the plan decides for another action of the category.
    assert _at(inputs, "facebody", "CompareFace", T0).qps == 5
    capped = EntitlementInputs(subscriptions=(_sub(80),))
    assert _at(capped, "facebody", "DetectFace", T0).qps == 50
    # [start, end): over at its end; a refund ends it earlier.
    assert _at(inputs, "facebody", "DetectFace", T0 + 30 * DAY).source is QpsSource.RESOURCE_PLAN
    refunded = EntitlementInputs(subscriptions=(_sub(20, refunded_at=T0 + DAY),))
    assert _at(refunded, "facebody", "DetectFace", T0 + DAY).qps == 2
    # Another account's subscription is not ours.
    theirs = EntitlementInputs(subscriptions=(_sub(20, account="other"),))
    assert _at(theirs, "facebody", "DetectFace", T0).qps == 2


def test_several_active_subscriptions_give_the_highest() -> None:
    inputs = EntitlementInputs(subscriptions=(_sub(10), _sub(30, id="sub-b")))
    assert _at(inputs, "facebody", "DetectFace", T0).qps == 30


def test_a_plan_gives_five_while_valid_unrefunded_and_not_exhausted() -> None:
    plan = _plan({"ocr"})
    assert _at(EntitlementInputs(plans=(plan,)), "ocr", "RecognizeCharacter", T0).qps == 5
    assert _at(EntitlementInputs(plans=(plan,)), "facebody", "DetectFace", T0).qps == 2
    before = T0 - timedelta(seconds=1)
    assert _at(EntitlementInputs(plans=(plan,)), "ocr", "RecognizeCharacter", before).qps == 1
    refunded = EntitlementInputs(plans=(plan.refunded(T0 + DAY),))
    assert _at(refunded, "ocr", "RecognizeCharacter", T0 + DAY).qps == 1
    # OCR's smallest coefficient is 5 points: 5 left still pays a call, 4.99 does not.
    left = EntitlementInputs(plans=(plan,), remaining_points={"plan-1": Decimal("5")})
    assert _at(left, "ocr", "RecognizeCharacter", T0).qps == 5
    empty = EntitlementInputs(plans=(plan,), remaining_points={"plan-1": Decimal("4.99")})
    assert _at(empty, "ocr", "RecognizeCharacter", T0).qps == 1


def test_general_plan_exhaustion_is_per_category() -> None:
    plan = _plan({"ocr", "facebody"}, id="gen")
    inputs = EntitlementInputs(plans=(plan,), remaining_points={"gen": Decimal("1")})
    assert _at(inputs, "facebody", "DetectFace", T0).qps == 5  # 0.16 a call still fits
    assert _at(inputs, "ocr", "RecognizeCharacter", T0).qps == 1  # 5 a call does not


class FakeSource:
    def __init__(self, inputs: EntitlementInputs) -> None:
        self.inputs = inputs
        self.calls = 0
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def load_entitlement_inputs(self) -> EntitlementInputs:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.inputs


async def test_view_refreshes_once_per_interval_and_answers_stale_meanwhile() -> None:
    clock = ManualClock(T0)
    source = FakeSource(EntitlementInputs())
    view = EntitlementView(source, CATALOG, clock, refresh_interval=1.0)
    assert await view.qps("acct", "facebody", "DetectFace") == 2
    source.inputs = EntitlementInputs(subscriptions=(_sub(20),))
    clock.advance(0.5)
    for _ in range(10):  # within the interval: the snapshot, no query
        assert await view.qps("acct", "facebody", "DetectFace") == 2
    assert source.calls == 1
    clock.advance(0.5)
    # Stale: answered from the old snapshot at once, one reload started behind it.
    assert await view.qps("acct", "facebody", "DetectFace") == 2
    assert await view.qps("acct", "facebody", "DetectFace") == 2
    await view.join()
    assert source.calls == 2
    assert await view.entitlement("acct", "facebody", "DetectFace") == Entitlement(
        20, QpsSource.SUBSCRIPTION
    )


async def test_view_runs_one_reload_at_a_time() -> None:
    clock = ManualClock(T0)
    source = FakeSource(EntitlementInputs())
    source.gate = asyncio.Event()
    view = EntitlementView(source, CATALOG, clock)
    first = asyncio.gather(*(view.qps("acct", "ocr", "RecognizeCharacter") for _ in range(20)))
    await asyncio.sleep(0)
    source.gate.set()
    assert await first == [1] * 20
    assert source.calls == 1
    source.gate = asyncio.Event()
    clock.advance(5)
    answers = [await view.qps("acct", "ocr", "RecognizeCharacter") for _ in range(20)]
    await asyncio.sleep(0)
    clock.advance(5)  # due again, but a reload is still in flight
    answers += [await view.qps("acct", "ocr", "RecognizeCharacter") for _ in range(20)]
    await asyncio.sleep(0)
    assert answers == [1] * 40 and source.calls == 2
    source.gate.set()
    await view.join()


async def test_a_failed_reload_keeps_the_snapshot(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(T0)
    source = FakeSource(EntitlementInputs(subscriptions=(_sub(20),)))
    view = EntitlementView(source, CATALOG, clock)
    assert await view.qps("acct", "facebody", "DetectFace") == 20
    source.fail = RuntimeError("store down")
    clock.advance(1)
    assert await view.qps("acct", "facebody", "DetectFace") == 20
    await view.join()
    assert "entitlement reload failed" in caplog.text
    assert await view.qps("acct", "facebody", "DetectFace") == 20
    assert source.calls == 2  # the next attempt waits an interval
    source.fail = None
    clock.advance(1)
    await view.qps("acct", "facebody", "DetectFace")
    await view.join()
    assert source.calls == 3 and view.loads == 2


async def test_a_failed_first_load_raises() -> None:
    source = FakeSource(EntitlementInputs())
    source.fail = RuntimeError("store down")
    view = EntitlementView(source, CATALOG, ManualClock(T0))
    with pytest.raises(RuntimeError, match="store down"):
        await view.qps("acct", "facebody", "DetectFace")


# The view indexes for speed; it must agree with the rules as written.
_apis = st.sampled_from(
    [("facebody", "DetectFace"), ("facebody", "CompareFace"), ("ocr", "RecognizeCharacter")]
)
_offsets = st.integers(-5, 40).map(lambda d: T0 + d * DAY)


@st.composite
def _inputs(draw: st.DrawFn) -> EntitlementInputs:
    subs = []
    for i in range(draw(st.integers(0, 3))):
        start = draw(_offsets)
        subs.append(
            _sub(
                draw(st.integers(1, 120)),
                id=f"s{i}",
                api=draw(_apis),
                account=draw(st.sampled_from(["acct", "other"])),
                start=start,
                end=start + draw(st.integers(1, 20)) * DAY,
            )
        )
    plans = []
    for i in range(draw(st.integers(0, 3))):
        start = draw(_offsets)
        cats = draw(st.sets(st.sampled_from(["facebody", "ocr"]), min_size=1))
        plans.append(_plan(cats, id=f"p{i}", start=start, ordered_at=start, end=start + 10 * DAY))
    left = {
        p.id: Decimal(draw(st.sampled_from(["0", "0.16", "4.99", "5", "100"])))
        for p in plans
        if draw(st.booleans())
    }
    return EntitlementInputs(tuple(subs), tuple(plans), left)


@settings(max_examples=150, deadline=None)
@given(_inputs(), _apis, _offsets)
def test_view_agrees_with_the_rules(
    inputs: EntitlementInputs, api: tuple[str, str], when: datetime
) -> None:
    async def run() -> Entitlement:
        view = EntitlementView(FakeSource(inputs), CATALOG, ManualClock(when))
        return await view.entitlement("acct", *api)

    assert asyncio.run(run()) == entitlement(CATALOG, inputs, "acct", *api, when)
