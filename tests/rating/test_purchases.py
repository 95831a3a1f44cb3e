"""Buying, listing and refunding plans through the Python API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from metering_middleware.catalog import default_catalog
from metering_middleware.rating import (
    PlanError,
    QpsSubscription,
    SqliteRatingStore,
    buy_qps_subscription,
    buy_resource_plan,
    image_categories,
    list_plans,
    refund_plan,
    show_plan,
)

from .helpers import calls_between, utc
from .settle_support import Harness

CATALOG = default_catalog()
T = utc(2026, 3, 1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteRatingStore]:
    async with SqliteRatingStore(tmp_path / "l.db") as opened:
        yield opened


async def qps_sub(store: SqliteRatingStore, at: datetime = T, **kw: Any) -> QpsSubscription:
    options: dict[str, Any] = {
        "account": "acct",
        "category": "facebody",
        "action": "DetectFace",
        "qps": 10,
        "ordered_at": at,
        "price_paid": "100",
    }
    options.update(kw)
    return await buy_qps_subscription(store, CATALOG, **options)


async def test_resource_plan_defaults(store: SqliteRatingStore) -> None:
    general = await buy_resource_plan(
        store,
        CATALOG,
        account="acct",
        kind="general",
        points=5000,
        ordered_at=T,
        price_paid="50",
    )
    assert general.categories == image_categories(CATALOG)
    assert {"facebody", "ocr", "imageseg"} <= general.categories
    assert not {c for c in general.categories if c.startswith("video")}
    assert (general.start, general.end) == (T, utc(2027, 3, 1))
    assert general.id.startswith("rp-") and general.price_paid == Decimal(50)
    [view] = await list_plans(store)
    assert view.plan == general and view.remaining == 5000 and view.kind == "general"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "single"}, "needs its category"),
        ({"kind": "single", "categories": {"ocr", "facebody"}}, "exactly one"),
        ({"kind": "general", "categories": {"nope"}}, "unknown categories"),
        ({"kind": "monthly"}, "single' or 'general"),
        ({"kind": "general", "points": 0}, "above zero"),
        ({"kind": "general", "price_paid": "-1"}, "non-negative"),
        ({"kind": "general", "price_paid": "abc"}, "decimal"),
        ({"kind": "general", "validity_months": 0}, "at least one month"),
    ],
)
async def test_invalid_resource_plans_are_refused(
    store: SqliteRatingStore, options: dict[str, Any], message: str
) -> None:
    base: dict[str, Any] = {"account": "acct", "points": 10, "ordered_at": T, "price_paid": 1}
    with pytest.raises(PlanError, match=message):
        await buy_resource_plan(store, CATALOG, **{**base, **options})
    assert await list_plans(store) == []


async def test_qps_above_the_catalog_maximum_is_refused(store: SqliteRatingStore) -> None:
    with pytest.raises(PlanError, match="above"):
        await qps_sub(store, qps=51)  # facebody sells up to 50
    with pytest.raises(PlanError, match="no API"):
        await qps_sub(store, action="Nope")
    assert (await qps_sub(store, qps=50)).qps == 50


async def test_renewals_start_when_the_current_period_ends(store: SqliteRatingStore) -> None:
    first = await qps_sub(store, subscription_id="q1")
    second = await qps_sub(store, at=utc(2026, 3, 20), subscription_id="q2", months=2)
    third = await qps_sub(store, at=utc(2026, 3, 25), subscription_id="q3")
    other_api = await qps_sub(store, at=utc(2026, 3, 25), action="CompareFace")
    after_expiry = await qps_sub(store, at=utc(2026, 9, 1), subscription_id="q4")
    got = [(s.start, s.end) for s in (first, second, third, other_api, after_expiry)]
    assert got == [
        (T, utc(2026, 4, 1)),
        (utc(2026, 4, 1), utc(2026, 6, 1)),
        (utc(2026, 6, 1), utc(2026, 7, 1)),
        (utc(2026, 3, 25), utc(2026, 4, 25)),  # another API: not a renewal
        (utc(2026, 9, 1), utc(2026, 10, 1)),  # after the last one ended: starts at once
    ]


async def test_refunds(store: SqliteRatingStore) -> None:
    sub = await qps_sub(store, subscription_id="q1")
    refunded = await refund_plan(store, "q1", at=T + timedelta(days=2))
    assert refunded.refunded_at == T + timedelta(days=2)
    assert (await show_plan(store, "q1")).plan == refunded != sub
    # A renewal bought after a refund starts at once: the refunded one no longer runs.
    renewal = await qps_sub(store, at=T + timedelta(days=3), subscription_id="q2")
    assert renewal.start == T + timedelta(days=3)
    with pytest.raises(PlanError, match="no plan"):
        await refund_plan(store, "nope", at=T)
    with pytest.raises(PlanError, match="before ordered_at"):
        await refund_plan(store, "q2", at=T)
    with pytest.raises(PlanError, match="no plan"):
        await show_plan(store, "nope")


async def test_listed_plans_show_points_left_after_settlement(tmp_path: Path) -> None:
    async with Harness(tmp_path / "l.db", CATALOG, T) as h:
        await buy_resource_plan(
            h.rating,
            CATALOG,
            account="acct",
            kind="single",
            categories={"ocr"},
            points=100,
            ordered_at=T,
            price_paid=1,
            plan_id="p",
        )
        await h.arrive(calls_between(CATALOG, 3, T + timedelta(hours=1), timedelta(seconds=1)))
        await h.settle(T + timedelta(days=1))
        [view] = await list_plans(h.rating, account="acct")
    assert view.remaining == Decimal(55)
