"""Synthetic accounts and plans shared by the rating benchmarks.

Each account uses 1-4 billable items; about half hold single-category plans, a third
general-purpose plans, a few a QPS subscription; plans are sized to ~40-120% of the
demand so many run out, some expire mid-range or are refunded.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from metering_middleware.catalog import BillableItem
from metering_middleware.rating import QpsSubscription, ResourcePlan

START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=59)  # January and February (UTC+8 edges included)


def make_plans(
    names: list[str], uses: dict[str, list[BillableItem]], per_account: int, rnd: random.Random
) -> list[ResourcePlan | QpsSubscription]:
    out: list[ResourcePlan | QpsSubscription] = []
    for name in names:
        used = uses[name]
        categories = sorted({it.category for it in used})
        roll = rnd.random()
        demand = sum((it.coefficient for it in used), Decimal(0)) * per_account / len(used)
        points = (demand * Decimal(rnd.uniform(0.4, 1.2))).quantize(Decimal(1)) + 1
        ordered = START - timedelta(days=rnd.randint(0, 300))
        if roll < 0.5:
            for i, cat in enumerate(categories[:2]):
                plan = ResourcePlan.purchase(
                    id=f"{name}-s{i}",
                    account=name,
                    kind="single",
                    categories={cat},
                    points=points,
                    ordered_at=ordered,
                    price_paid=Decimal(50),
                )
                if rnd.random() < 0.2:
                    plan = replace(plan, end=START + SPAN / 2)
                out.append(plan)
        if 0.3 < roll < 0.65:
            plan = ResourcePlan.purchase(
                id=f"{name}-g",
                account=name,
                kind="general",
                categories=set(categories),
                points=points,
                ordered_at=START + timedelta(days=rnd.randint(0, 20)),
                price_paid=Decimal(500),
            )
            if rnd.random() < 0.1:
                plan = plan.refunded(plan.start + timedelta(days=3))
            out.append(plan)
        it = used[0]
        if roll > 0.9 and it.max_qps is not None:
            out.append(
                QpsSubscription(
                    id=f"{name}-q",
                    account=name,
                    category=it.category,
                    action=it.action,
                    qps=min(10, it.max_qps),
                    start=START + timedelta(days=10),
                    end=START + timedelta(days=40),
                    ordered_at=START,
                    price_paid=Decimal(1000),
                )
            )
    return out
