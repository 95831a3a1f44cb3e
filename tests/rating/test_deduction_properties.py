"""Properties of ``deduct`` over random plans and call streams.

The catalog has small tiers and mixed coefficients, and the time window straddles a
Beijing month edge and a price change, so a few dozen calls cross everything: tiers,
months, schedules, plan starts/ends/refunds and exhaustion.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metering_middleware.rating.deduction as deduction_module
from metering_middleware.catalog import parse_catalog
from metering_middleware.ledger.records import CallRecord
from metering_middleware.rating import (
    DeductionResult,
    DeductionState,
    PlanKind,
    QpsSubscription,
    ResourcePlan,
    Source,
    SourceKind,
    deduct,
)

from .helpers import call, plan, qps, reference_deduct, utc

BASE = utc(2026, 1, 31, 15)  # 23:00 in Beijing: February starts 60 minutes later
PRICE_CHANGE = BASE + timedelta(minutes=90)
WINDOW = 180  # minutes

CATALOG = parse_catalog(
    {
        "point_value": "0.01",
        "categories": {
            "ocr": {"version": "2019-12-30", "default_qps": 1, "max_qps": 20},
            "facebody": {"version": "2019-12-30", "default_qps": 2, "max_qps": 50},
        },
        "items": [
            {
                "category": "ocr",
                "action": "RecognizeLicensePlate",
                "prices": [
                    {
                        "effective_from": utc(2020, 1, 1),
                        "tiers": [
                            {"up_to": 3, "price": "0.15"},
                            {"up_to": 7, "price": "0.10"},
                            {"price": "0.06"},
                        ],
                    },
                    {
                        "effective_from": PRICE_CHANGE,
                        "tiers": [{"up_to": 5, "price": "0.12"}, {"price": "0.05"}],
                    },
                ],
            },
            {
                "category": "ocr",
                "action": "RecognizeCharacter",
                "coefficient": "5",
                "prices": [
                    {
                        "effective_from": utc(2020, 1, 1),
                        "tiers": [{"up_to": 2, "price": "0.05"}, {"price": "0.0333"}],
                    }
                ],
            },
            {"category": "ocr", "action": "GetAsyncJobResult", "free": True},
            {
                "category": "facebody",
                "action": "DetectFace",
                "prices": [
                    {
                        "effective_from": utc(2020, 1, 1),
                        "tiers": [{"up_to": 4, "price": "0.0016"}, {"price": "0.0014"}],
                    }
                ],
            },
            {
                "category": "facebody",
                "action": "CompareFace",
                "coefficient": "7.5",
                "prices": [{"effective_from": utc(2020, 1, 1), "tiers": [{"price": "0.0019"}]}],
            },
        ],
    }
)
ITEMS = [it.item for it in CATALOG.items]
APIS = [(it.category, it.action) for it in CATALOG.items if not it.free]
ACCOUNTS = ["a", "b"]
POINTS = [Decimal(x) for x in ("0.1", "0.16", "1", "5", "7.5", "15", "15.16", "30", "45", "100")]


def at(minute: int) -> datetime:
    return BASE + timedelta(minutes=minute)


@dataclass
class World:
    calls: list[CallRecord]
    plans: list[ResourcePlan]
    subs: list[QpsSubscription]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    raw_calls = draw(
        st.lists(
            st.tuples(st.integers(0, WINDOW), st.sampled_from(ACCOUNTS), st.sampled_from(ITEMS)),
            max_size=60,
        )
    )
    # Ids scrambled against list order, so (occurred_at, id) ties are broken by id for real.
    calls = [
        call(CATALOG, f"r{(i * 37) % 101:03d}", at(m), item, acct)
        for i, (m, acct, item) in enumerate(raw_calls)
    ]
    plans = []
    for i in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["single", "general"]))
        if kind == "single":
            cats = {draw(st.sampled_from(["ocr", "facebody"]))}
        else:
            cats = draw(st.sampled_from([{"ocr"}, {"facebody"}, {"ocr", "facebody"}]))
        start = draw(st.integers(-30, WINDOW))
        end = start + draw(st.integers(1, 200))
        ordered = start - draw(st.integers(0, 50))
        refund = draw(st.none() | st.integers(ordered, WINDOW + 10))
        plans.append(
            plan(
                f"p{i}",
                kind,
                cats,
                str(draw(st.sampled_from(POINTS))),
                at(start),
                at(end),
                account=draw(st.sampled_from(ACCOUNTS)),
                ordered_at=at(ordered),
                refunded_at=None if refund is None else at(refund),
            )
        )
    subs = []
    for i in range(draw(st.integers(0, 2))):
        category, action = draw(st.sampled_from(APIS))
        start = draw(st.integers(-30, WINDOW))
        refund = draw(st.none() | st.integers(start, WINDOW + 10))
        subs.append(
            qps(
                f"q{i}",
                category,
                action,
                at(start),
                at(start + draw(st.integers(1, 120))),
                account=draw(st.sampled_from(ACCOUNTS)),
                refunded_at=None if refund is None else at(refund),
            )
        )
    return World(calls, plans, subs)


def sources_by_id(*results: DeductionResult) -> dict[str, Source]:
    out: dict[str, Source] = {}
    for result in results:
        for record, source in result.settled():
            assert record.id not in out
            out[record.id] = source
    return out


def merged_lines(
    *results: DeductionResult,
) -> dict[tuple[object, ...], tuple[int, Decimal, Decimal]]:
    out: dict[tuple[object, ...], tuple[int, Decimal, Decimal]] = {}
    for result in results:
        for ln in result.lines:
            key = (ln.account, ln.month, ln.category, ln.item, ln.source)
            calls, points, amount = out.get(key, (0, Decimal(0), Decimal(0)))
            out[key] = (calls + ln.calls, points + ln.points, amount + ln.amount)
    return out


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(worlds())
def test_matches_the_per_call_reference(world: World) -> None:
    result = deduct(world.calls, world.plans, world.subs, CATALOG)
    ref = reference_deduct(world.calls, world.plans, world.subs, CATALOG)
    assert sources_by_id(result) == ref.sources
    payg: dict[tuple[str, str], Decimal] = {}
    for ln in result.lines:
        if ln.kind is SourceKind.PAYG:
            key = (ln.account, str(ln.month))
            payg[key] = payg.get(key, Decimal(0)) + ln.amount
    assert payg == {k: v for k, v in ref.payg.items()}
    assert dict(result.remaining) == ref.remaining
    assert {(a, i, str(m)): n for (a, i, m), n in result.positions.items()} == ref.positions


@PROPERTY
@given(worlds())
def test_each_call_once_plans_never_negative_never_outside_validity_order_holds(
    world: World,
) -> None:
    result = deduct(world.calls, world.plans, world.subs, CATALOG)
    # Exactly one source per record, and every record is there once.
    assert sorted(r.id for r in result.records) == sorted(c.id for c in world.calls)
    assert len(result.codes) == len(result.records)
    assert sum(ln.calls for ln in result.lines) == len(world.calls)
    runs = list(result.runs())
    assert sum(r.count for r in runs) == len(result.records)
    for run in runs:
        assert all(
            result.source_of(i) == run.source for i in range(run.start, run.start + run.count)
        )
    assert all(a.source != b.source for a, b in itertools.pairwise(runs))
    # Replay in time order with the sources deduct chose.
    items = CATALOG.by_item()
    left = {p.id: p.points for p in world.plans}
    plans = {p.id: p for p in world.plans}
    subs = {s.id: s for s in world.subs}
    for record, source in sorted(result.settled(), key=lambda rs: (rs[0].occurred_at, rs[0].id)):
        it = items[record.item]
        t = record.occurred_at
        mine = [
            p for p in world.plans if p.account == record.account and it.category in p.categories
        ]
        fitting = [p for p in mine if p.active_at(t) and left[p.id] >= it.coefficient]
        covering_qps = [
            s
            for s in world.subs
            if s.account == record.account and s.api == (it.category, it.action) and s.active_at(t)
        ]
        if source.kind is SourceKind.QPS:
            assert source.plan_id is not None
            assert subs[source.plan_id].active_at(t)
            assert subs[source.plan_id].api == (it.category, it.action)
            continue
        assert not covering_qps, "a covering subscription was passed over"
        if source.kind is SourceKind.FREE:
            assert it.free
            continue
        assert not it.free
        if source.kind is SourceKind.PAYG:
            assert not fitting, "pay-as-you-go while a plan had points"
            continue
        assert source.plan_id is not None
        chosen = plans[source.plan_id]
        assert chosen.account == record.account
        assert chosen.covers(it.category)
        assert chosen.active_at(t), "plan used outside its validity or after its refund"
        earlier = (
            [p for p in fitting if p.kind is PlanKind.SINGLE]
            if chosen.kind is PlanKind.GENERAL
            else []
        )
        assert not earlier, "general plan used while a single-category plan had points"
        same_kind = [p for p in fitting if p.kind is chosen.kind]
        assert min(same_kind, key=lambda p: p.order_key) is chosen
        left[chosen.id] -= it.coefficient
        assert left[chosen.id] >= 0
    assert dict(result.remaining) == left


@PROPERTY
@given(worlds(), st.lists(st.integers(0, 60), max_size=5))
def test_many_incremental_passes_equal_one_pass(world: World, cuts: list[int]) -> None:
    ordered = sorted(world.calls, key=lambda r: (r.occurred_at, r.id))
    bounds = [0, *sorted(min(c, len(ordered)) for c in cuts), len(ordered)]
    whole = deduct(world.calls, world.plans, world.subs, CATALOG)
    state = DeductionState()
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        part = deduct(ordered[lo:hi], world.plans, world.subs, CATALOG, state=state)
        state = part.state
        parts.append(part)
    assert sources_by_id(*parts) == sources_by_id(whole)
    assert merged_lines(*parts) == merged_lines(whole)
    assert state == whole.state
    assert DeductionState.from_plain(state.to_plain()) == whole.state


@PROPERTY
@given(worlds(), st.integers(1, 6))
def test_window_size_changes_nothing(world: World, window: int) -> None:
    # Deduction works through long segments in doubling windows; tiny windows make the
    # small worlds above cross window edges everywhere.
    whole = deduct(world.calls, world.plans, world.subs, CATALOG)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deduction_module, "_FIRST_WINDOW", window)
        windowed = deduct(world.calls, world.plans, world.subs, CATALOG)
    assert sources_by_id(windowed) == sources_by_id(whole)
    assert windowed.lines == whole.lines
    assert windowed.state == whole.state
