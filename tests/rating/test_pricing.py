from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from metering_middleware.catalog import PriceSchedule, default_catalog
from metering_middleware.rating import PricePiece, month_total, price_run, tier_room

from .helpers import PLATE


def _plate_schedule() -> PriceSchedule:
    return default_catalog().by_item()[PLATE].prices[0]


def test_alibaba_worked_example_15000_plate_calls_cost_2000() -> None:
    pieces = price_run(_plate_schedule(), 0, 15_000)
    assert pieces == (
        PricePiece(0, 10_000, Decimal("0.15"), Decimal("1500.00")),
        PricePiece(1, 5_000, Decimal("0.10"), Decimal("500.00")),
    )
    assert month_total(p.amount for p in pieces).charged == Decimal("2000.00")


def test_a_run_starting_mid_month_continues_at_its_position() -> None:
    # Calls 9,999 .. 100,001 of the month: tiers 0, 1 and 2.
    pieces = price_run(_plate_schedule(), 9_998, 90_003)
    assert [(p.tier, p.calls) for p in pieces] == [(0, 2), (1, 90_000), (2, 1)]
    assert sum(p.amount for p in pieces) == Decimal("0.30") + Decimal("9000.00") + Decimal("0.06")


def test_open_ended_tier_takes_any_count() -> None:
    pieces = price_run(_plate_schedule(), 5_000_000, 10**12)
    assert pieces == (PricePiece(3, 10**12, Decimal("0.02"), Decimal("2E+10")),)
    assert price_run(_plate_schedule(), 7, 0) == ()


def test_tier_room() -> None:
    s = _plate_schedule()
    assert tier_room(s, 0) == (0, 10_000)
    assert tier_room(s, 9_999) == (0, 1)
    assert tier_room(s, 10_000) == (1, 90_000)
    assert tier_room(s, 1_000_000) == (3, None)


def test_month_total_rounds_only_the_total_down() -> None:
    total = month_total([Decimal("1.9744"), Decimal("0.0016"), Decimal("0.00999")])
    assert total.exact == Decimal("1.98599")
    assert total.recorded == Decimal("1.985")
    assert total.charged == Decimal("1.98")
    assert total.rounding == Decimal("-0.00599")
    assert month_total([]).charged == Decimal("0.00")


@settings(max_examples=60)
@given(st.integers(0, 1_200_000), st.integers(0, 3_000))
def test_price_run_equals_pricing_call_by_call(n0: int, k: int) -> None:
    s = _plate_schedule()
    pieces = price_run(s, n0, k)
    expected = sum((s.tiers[s.tier_index(n)].price for n in range(n0 + 1, n0 + k + 1)), Decimal(0))
    assert sum(p.calls for p in pieces) == k
    assert sum((p.amount for p in pieces), Decimal(0)) == expected
    assert all(p.calls > 0 for p in pieces)
    assert [p.tier for p in pieces] == sorted({p.tier for p in pieces})
