from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from metering_middleware.catalog import default_catalog
from metering_middleware.rating import (
    PlanError,
    PlanKind,
    ResourcePlan,
    validate_plan,
    validate_subscription,
)

from .helpers import plan, qps, utc


def test_purchase_defaults_to_one_year_from_the_order() -> None:
    p = ResourcePlan.purchase(
        id="p1",
        account="a",
        kind="general",
        categories={"ocr", "facebody"},
        points=Decimal(5000),
        ordered_at=utc(2026, 3, 10, 4),
        price_paid=Decimal(50),
    )
    assert p.kind is PlanKind.GENERAL
    assert (p.start, p.end) == (utc(2026, 3, 10, 4), utc(2027, 3, 10, 4))
    assert p.active_at(p.start)
    assert p.active_at(p.end - timedelta(microseconds=1))
    assert not p.active_at(p.end)
    assert not p.active_at(p.start - timedelta(microseconds=1))


def test_refund_ends_coverage_at_the_refund_instant() -> None:
    p = plan("p", "single", {"ocr"}, 100, utc(2026, 1, 1), utc(2027, 1, 1)).refunded(
        utc(2026, 2, 1)
    )
    assert p.effective_end == utc(2026, 2, 1)
    assert p.active_at(utc(2026, 1, 31, 23, 59))
    assert not p.active_at(utc(2026, 2, 1))
    s = qps("q", "ocr", "RecognizeLicensePlate", utc(2026, 1, 1), utc(2026, 2, 1))
    assert s.refunded(utc(2026, 3, 1)).effective_end == utc(2026, 2, 1)


def test_times_are_normalised_to_utc() -> None:
    from metering_middleware.clock import BEIJING

    p = plan("p", "single", {"ocr"}, 1, datetime(2026, 2, 1, tzinfo=BEIJING), utc(2027, 1, 1))
    assert p.start == utc(2026, 1, 31, 16)
    assert p.start.tzinfo is UTC


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "single", "categories": frozenset({"ocr", "facebody"})}, "exactly one"),
        ({"kind": "general", "categories": frozenset()}, "at least one"),
        ({"kind": "bulk"}, "single' or 'general"),
        ({"points": Decimal(0)}, "above zero"),
        ({"points": Decimal(-1)}, "non-negative"),
        ({"points": 5}, "Decimal"),
        ({"price_paid": Decimal("NaN")}, "finite"),
        ({"end": utc(2026, 1, 1)}, "before end"),
        ({"start": datetime(2026, 1, 1)}, "aware"),
        ({"refunded_at": utc(2025, 1, 1)}, "refunded_at"),
        ({"account": ""}, "account"),
    ],
)
def test_invalid_plans_are_refused(changes: dict[str, object], message: str) -> None:
    good = plan("p", "single", {"ocr"}, 100, utc(2026, 1, 1), utc(2027, 1, 1))
    with pytest.raises(PlanError, match=message):
        replace(good, **changes)  # type: ignore[arg-type]


def test_plan_categories_must_be_in_the_catalog() -> None:
    catalog = default_catalog()
    validate_plan(
        plan("p", "general", {"ocr", "facebody"}, 1, utc(2026, 1, 1), utc(2027, 1, 1)), catalog
    )
    with pytest.raises(PlanError, match="unknown categories"):
        validate_plan(
            plan("p", "general", {"ocr", "nope"}, 1, utc(2026, 1, 1), utc(2027, 1, 1)), catalog
        )


def test_qps_above_the_catalog_maximum_is_refused() -> None:
    catalog = default_catalog()
    ok = qps("q", "facebody", "DetectFace", utc(2026, 1, 1), utc(2026, 2, 1))
    validate_subscription(replace(ok, qps=50), catalog)
    with pytest.raises(PlanError, match="above"):
        validate_subscription(replace(ok, qps=51), catalog)
    with pytest.raises(PlanError, match="no API"):
        validate_subscription(replace(ok, action="Nope"), catalog)
    with pytest.raises(PlanError, match="positive integer"):
        replace(ok, qps=0)


def test_low_balance_at_twenty_percent() -> None:
    p = plan("p", "single", {"ocr"}, 5000, utc(2026, 1, 1), utc(2027, 1, 1))
    assert not p.is_low(Decimal("1000.01"))
    assert p.is_low(Decimal(1000))


def test_order_key_expiring_first_then_ordered_first_then_id() -> None:
    a = plan(
        "b", "single", {"ocr"}, 1, utc(2026, 1, 1), utc(2026, 6, 1), ordered_at=utc(2025, 12, 1)
    )
    b = plan(
        "a", "single", {"ocr"}, 1, utc(2026, 1, 1), utc(2026, 7, 1), ordered_at=utc(2025, 1, 1)
    )
    c = plan(
        "c", "single", {"ocr"}, 1, utc(2026, 1, 1), utc(2026, 6, 1), ordered_at=utc(2025, 11, 1)
    )
    d = plan(
        "a", "single", {"ocr"}, 1, utc(2026, 1, 1), utc(2026, 6, 1), ordered_at=utc(2025, 12, 1)
    )
    assert sorted([a, b, c, d], key=lambda p: p.order_key) == [c, d, a, b]
