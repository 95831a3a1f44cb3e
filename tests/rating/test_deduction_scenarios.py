"""Deduction on hand-built timelines (billing rules sections 3, 5, 7 and 8)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from metering_middleware.catalog import Catalog, default_catalog, parse_catalog
from metering_middleware.rating import (
    DeductionError,
    DeductionResult,
    Month,
    PlanError,
    Source,
    SourceKind,
    deduct,
    month_totals,
)

from .helpers import DETECT, PLATE, call, calls_between, plan, qps, utc

SECOND = timedelta(seconds=1)
CATALOG = default_catalog()


def by_id(result: DeductionResult) -> dict[str, Source]:
    return {record.id: source for record, source in result.settled()}


def kinds(result: DeductionResult) -> list[tuple[SourceKind, str | None]]:
    """Sources in time order, as (kind, plan id)."""
    pairs = sorted(result.settled(), key=lambda rs: (rs[0].occurred_at, rs[0].id))
    return [(s.kind, s.plan_id) for _, s in pairs]


def charged(result: DeductionResult, account: str = "acct") -> dict[str, Decimal]:
    return {str(m): t.charged for (a, m), t in month_totals(result.lines).items() if a == account}


def test_alibaba_worked_example_through_deduct() -> None:
    calls = calls_between(CATALOG, 15_000, utc(2026, 3, 2), SECOND)
    result = deduct(calls, [], [], CATALOG)
    assert charged(result) == {"2026-03": Decimal("2000.00")}
    assert [(ln.source.tier, ln.calls, ln.amount) for ln in result.lines] == [
        (0, 10_000, Decimal("1500.00")),
        (1, 5_000, Decimal("500.00")),
    ]
    assert result.positions == {("acct", PLATE, Month(2026, 3)): 15_000}


def test_single_plan_before_general_plan_and_general_for_other_categories() -> None:
    start, end = utc(2026, 1, 1), utc(2027, 1, 1)
    single = plan("s", "single", {"ocr"}, 30, start, end)  # two plate calls
    general = plan("g", "general", {"ocr", "facebody"}, "45.16", start, end)
    t = utc(2026, 3, 1)
    calls = [
        call(CATALOG, "1", t, DETECT),  # facebody: only the general plan covers it
        call(CATALOG, "2", t + SECOND),  # ocr: single first
        call(CATALOG, "3", t + 2 * SECOND),
        call(CATALOG, "4", t + 3 * SECOND),  # single empty: general (45 left)
        call(CATALOG, "5", t + 4 * SECOND),
        call(CATALOG, "6", t + 5 * SECOND),
        call(CATALOG, "7", t + 6 * SECOND),  # general has 0 points: pay-as-you-go
    ]
    result = deduct(calls, [general, single], [], CATALOG)
    assert kinds(result) == [
        (SourceKind.GENERAL, "g"),
        (SourceKind.SINGLE, "s"),
        (SourceKind.SINGLE, "s"),
        (SourceKind.GENERAL, "g"),
        (SourceKind.GENERAL, "g"),
        (SourceKind.GENERAL, "g"),
        (SourceKind.PAYG, None),
    ]
    assert result.remaining == {"s": Decimal(0), "g": Decimal(0)}


def test_plans_of_one_kind_expiring_first_then_ordered_first_then_by_id() -> None:
    t = utc(2026, 3, 1)
    late = plan("a-late", "single", {"ocr"}, 15, utc(2026, 1, 1), utc(2026, 9, 1))
    soon_b = plan(
        "b", "single", {"ocr"}, 15, utc(2026, 1, 1), utc(2026, 6, 1), ordered_at=utc(2025, 12, 1)
    )
    soon_c = plan(
        "c", "single", {"ocr"}, 15, utc(2026, 1, 1), utc(2026, 6, 1), ordered_at=utc(2025, 11, 1)
    )
    soon_a = plan(
        "a", "single", {"ocr"}, 15, utc(2026, 1, 1), utc(2026, 6, 1), ordered_at=utc(2025, 12, 1)
    )
    calls = calls_between(CATALOG, 5, t, SECOND)
    result = deduct(calls, [late, soon_b, soon_c, soon_a], [], CATALOG)
    assert [pid for _, pid in kinds(result)] == ["c", "a", "b", "a-late", None]


def test_plan_expiring_mid_month_hands_over_to_the_next_source() -> None:
    expiry = utc(2026, 3, 15)
    short = plan("short", "single", {"ocr"}, 15_000, utc(2026, 1, 1), expiry)
    general = plan("g", "general", {"ocr"}, 30, utc(2026, 1, 1), utc(2027, 1, 1))
    calls = [
        call(CATALOG, "1", expiry - SECOND),
        call(CATALOG, "2", expiry),  # end is exclusive
        call(CATALOG, "3", expiry + SECOND),
        call(CATALOG, "4", expiry + 2 * SECOND),
    ]
    result = deduct(calls, [short, general], [], CATALOG)
    assert kinds(result) == [
        (SourceKind.SINGLE, "short"),
        (SourceKind.GENERAL, "g"),
        (SourceKind.GENERAL, "g"),
        (SourceKind.PAYG, None),
    ]


def test_refunded_plan_covers_nothing_from_its_refund_on() -> None:
    refund = utc(2026, 3, 10, 12)
    p = plan("p", "single", {"ocr"}, 15_000, utc(2026, 1, 1), utc(2027, 1, 1), refunded_at=refund)
    calls = [call(CATALOG, "1", refund - SECOND), call(CATALOG, "2", refund)]
    assert kinds(deduct(calls, [p], [], CATALOG)) == [
        (SourceKind.SINGLE, "p"),
        (SourceKind.PAYG, None),
    ]


def test_qps_subscription_starting_mid_month_does_not_advance_tiers() -> None:
    sub = qps("q", "ocr", "RecognizeLicensePlate", utc(2026, 3, 10), utc(2026, 3, 20))
    # A plan for the category is not touched while the subscription is active.
    p = plan("p", "single", {"ocr"}, 15, utc(2026, 3, 19), utc(2027, 1, 1))
    before = calls_between(CATALOG, 9_999, utc(2026, 3, 1), SECOND, prefix="a")
    during = calls_between(CATALOG, 500, utc(2026, 3, 10), SECOND, prefix="b")
    during += [call(CATALOG, "b-late", utc(2026, 3, 19, 23))]
    after = calls_between(CATALOG, 3, utc(2026, 3, 20), SECOND, prefix="c")
    result = deduct(before + during + after, [p], [sub], CATALOG)
    sources = by_id(result)
    assert all(sources[c.id].kind is SourceKind.PAYG for c in before)
    assert all(sources[c.id] == Source(SourceKind.QPS, "q") for c in during)
    # After the subscription: the plan (15 points, one call), then tier 0's last call, then tier 1.
    assert [sources[c.id] for c in after] == [
        Source(SourceKind.SINGLE, "p"),
        Source(SourceKind.PAYG, None, 0, Decimal("0.15")),
        Source(SourceKind.PAYG, None, 1, Decimal("0.10")),
    ]
    assert result.positions[("acct", PLATE, Month(2026, 3))] == 10_001


def test_tier_boundary_crossed_in_the_middle_of_a_day() -> None:
    # 10,005 calls between 08:00 and about 10:47 UTC+8 on one day.
    calls = calls_between(CATALOG, 10_005, utc(2026, 4, 8), SECOND)
    result = deduct(calls, [], [], CATALOG)
    sources = by_id(result)
    assert sources[calls[9_999].id].tier == 0
    assert sources[calls[10_000].id] == Source(SourceKind.PAYG, None, 1, Decimal("0.10"))
    assert charged(result) == {"2026-04": Decimal("1500.50")}
    runs = list(result.runs())
    assert [(r.start, r.count, r.source.tier) for r in runs] == [(0, 10_000, 0), (10_000, 5, 1)]


def test_month_edges_are_beijing_months_not_utc_months() -> None:
    january = calls_between(CATALOG, 10_000, utc(2026, 1, 31, 12), timedelta(milliseconds=1))
    edge = [
        call(CATALOG, "x1", utc(2026, 1, 31, 15, 59, 59)),  # still January: 10,001st, tier 1
        call(CATALOG, "x2", utc(2026, 1, 31, 16, 30)),  # February in UTC+8: first call, tier 0
        call(CATALOG, "x3", utc(2026, 2, 28, 16)),  # March in UTC+8
    ]
    result = deduct(january + edge, [], [], CATALOG)
    sources = by_id(result)
    assert sources["x1"].tier == 1
    assert sources["x2"].tier == 0
    assert [str(ln.month) for ln in result.lines if ln.source.tier is not None] == [
        "2026-01",
        "2026-01",
        "2026-02",
        "2026-03",
    ]
    assert charged(result) == {
        "2026-01": Decimal("1500.10"),
        "2026-02": Decimal("0.15"),
        "2026-03": Decimal("0.15"),
    }


def test_plan_with_fewer_points_than_a_call_is_skipped_but_fits_a_cheaper_item() -> None:
    general = plan("g", "general", {"ocr", "facebody"}, "14.5", utc(2026, 1, 1), utc(2027, 1, 1))
    t = utc(2026, 3, 1)
    calls = [
        call(CATALOG, "1", t),  # plate costs 15 points: skipped
        call(CATALOG, "2", t + SECOND, DETECT),  # 0.16 points: fits
        call(CATALOG, "3", t + 2 * SECOND),  # still skipped
    ]
    result = deduct(calls, [general], [], CATALOG)
    assert kinds(result) == [
        (SourceKind.PAYG, None),
        (SourceKind.GENERAL, "g"),
        (SourceKind.PAYG, None),
    ]
    assert result.remaining == {"g": Decimal("14.34")}
    assert [(ln.item, ln.calls, ln.points) for ln in result.lines if ln.plan_id] == [
        (DETECT, 1, Decimal("0.16"))
    ]


def _catalog_with_price_change() -> Catalog:
    return parse_catalog(
        {
            "point_value": "0.01",
            "categories": {"ocr": {"version": "2019-12-30", "default_qps": 1, "max_qps": 20}},
            "items": [
                {
                    "category": "ocr",
                    "action": "RecognizeLicensePlate",
                    "prices": [
                        {
                            "effective_from": utc(2020, 1, 1),
                            "tiers": [{"up_to": 3, "price": "0.15"}, {"price": "0.10"}],
                        },
                        {
                            # 2026-03-16 00:00 in Beijing
                            "effective_from": utc(2026, 3, 15, 16),
                            "tiers": [{"up_to": 4, "price": "0.12"}, {"price": "0.08"}],
                        },
                    ],
                }
            ],
        }
    )


def test_price_change_mid_month_prices_each_call_by_its_time_and_keeps_positions() -> None:
    catalog = _catalog_with_price_change()
    change = utc(2026, 3, 15, 16)
    calls = [call(catalog, f"{i}", change + (i - 2) * SECOND) for i in range(6)]
    result = deduct(calls, [], [], catalog)
    assert [(s.tier, s.unit_price) for _, s in result.settled()] == [
        (0, Decimal("0.15")),  # calls 1 and 2: old schedule
        (0, Decimal("0.15")),
        (0, Decimal("0.12")),  # call 3: new schedule, still its first tier
        (0, Decimal("0.12")),  # call 4 (it would be tier 1 under the old tiers)
        (1, Decimal("0.08")),  # call 5: past the new schedule's first tier
        (1, Decimal("0.08")),
    ]
    assert charged(result) == {"2026-03": Decimal("0.70")}
    # Re-rating a slice before the change never picks up the later price.
    assert {s.unit_price for _, s in deduct(calls[:2], [], [], catalog).settled()} == {
        Decimal("0.15")
    }


def test_month_total_is_recorded_to_3_and_charged_to_2_places_down() -> None:
    calls = calls_between(CATALOG, 1_234, utc(2026, 5, 1), SECOND, DETECT)
    result = deduct(calls, [], [], CATALOG)
    (line,) = result.lines
    assert line.amount == Decimal("1.9744")  # exact line
    (total,) = month_totals(result.lines).values()
    assert (total.exact, total.recorded, total.charged) == (
        Decimal("1.9744"),
        Decimal("1.974"),
        Decimal("1.97"),
    )


def test_free_items_take_no_points_and_no_tier() -> None:
    p = plan("p", "single", {"ocr"}, 15, utc(2026, 1, 1), utc(2027, 1, 1))
    calls = [call(CATALOG, "1", utc(2026, 3, 1), "ocr.GetAsyncJobResult")]
    result = deduct(calls, [p], [], CATALOG)
    assert kinds(result) == [(SourceKind.FREE, None)]
    assert result.remaining == {"p": Decimal(15)}
    assert result.positions == {}


def test_late_record_takes_the_current_state_of_its_own_month() -> None:
    p = plan("p", "single", {"ocr"}, 15, utc(2026, 1, 1), utc(2026, 3, 1))
    first = deduct(calls_between(CATALOG, 3, utc(2026, 2, 20), SECOND), [p], [], CATALOG)
    assert first.remaining == {"p": Decimal(0)}
    late = [call(CATALOG, "late", utc(2026, 2, 10))]  # arrives after calls made later
    second = deduct(late, [p], [], CATALOG, state=first.state)
    # The plan has no points left, so the next pay-as-you-go position of February.
    assert kinds(second) == [(SourceKind.PAYG, None)]
    assert second.positions[("acct", PLATE, Month(2026, 2))] == 3


def test_accounts_never_share_plans() -> None:
    p = plan("p", "general", {"ocr"}, 15_000, utc(2026, 1, 1), utc(2027, 1, 1), account="a")
    calls = [call(CATALOG, "1", utc(2026, 3, 1), account="b")]
    assert kinds(deduct(calls, [p], [], CATALOG)) == [(SourceKind.PAYG, None)]


def test_refusals_name_the_problem() -> None:
    c = call(CATALOG, "1", utc(2026, 3, 1))
    bad = c.__class__(**{**{f: getattr(c, f) for f in c.__dataclass_fields__}, "item": "ocr.Nope"})
    with pytest.raises(DeductionError, match=r"ocr\.Nope"):
        deduct([bad], [], [], CATALOG)
    p = plan("dup", "single", {"ocr"}, 1, utc(2026, 1, 1), utc(2027, 1, 1))
    s = qps("dup", "ocr", "RecognizeLicensePlate", utc(2026, 1, 1), utc(2027, 1, 1))
    with pytest.raises(DeductionError, match="dup"):
        deduct([c], [p], [s], CATALOG)
    with pytest.raises(PlanError, match="unknown categories"):
        deduct(
            [c], [plan("x", "single", {"nope"}, 1, utc(2026, 1, 1), utc(2027, 1, 1))], [], CATALOG
        )
    early = call(_catalog_with_price_change(), "1", utc(2019, 6, 1))
    with pytest.raises(DeductionError, match="no price"):
        deduct([early], [], [], _catalog_with_price_change())
