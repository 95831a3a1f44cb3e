"""The month's margin: what tenants were charged against what the operator pays (private).

Tenants: the month's settled bills (rating lines billed in it): pay-as-you-go, charged
as each account's total rounded down to fen, plus resource-plan usage valued at the
catalog's point value (what the plans' buyers prepaid for those calls). QPS
subscriptions are prepaid for periods, not calls: not counted.

Operator: the export's amount column when it has one (``PretaxAmount``: after the
operator's discounts and its own resource plans at Alibaba), else the catalog's list
prices with their graduated tiers, applied to the operator's own monthly volume per
item (one Alibaba account: the tiers count every tenant's calls together), at the
price in force at each period's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ..catalog import Catalog
from ..rating import exact_mul, exact_sum, price_run
from ._export import UpstreamExport
from ._items import ItemNames
from ._ledger_reads import TenantCharges

__all__ = ["Margin", "MarginLine", "margin"]

TOTAL = "TOTAL"


@dataclass(frozen=True, slots=True)
class MarginLine:
    item: str  # a catalog item, the export's name of an unknown one, or TOTAL
    upstream_calls: int
    upstream_cost: Decimal | None  # None: no amount column and no catalog price
    tenant_payg: Decimal
    plan_usage: Decimal
    revenue: Decimal
    margin: Decimal | None


@dataclass(frozen=True, slots=True)
class Margin:
    month: str
    lines: tuple[MarginLine, ...]  # per item, then TOTAL
    cost_source: str
    settled_until: datetime | None
    accounts: int
    #: Items with calls but no cost: not in the catalog and no amount column (not in TOTAL).
    unpriced: tuple[str, ...] = ()

    @property
    def total(self) -> MarginLine:
        return self.lines[-1]


def margin(
    export: UpstreamExport,
    names: ItemNames,
    catalog: Catalog,
    charges: TenantCharges,
    *,
    month: str,
    since: datetime,
    until: datetime,
) -> Margin:
    rows = sorted(
        (r for r in export.rows if since <= r.start < until), key=lambda r: (r.start, r.line)
    )
    by_item = catalog.by_item()
    calls: dict[str, int] = {}
    cost: dict[str, list[Decimal]] = {}
    unpriced: set[str] = set()
    for row in rows:
        item = names.lookup(row.raw_item, row.product) or row.raw_item
        n0 = calls.get(item, 0)
        calls[item] = n0 + row.calls
        if row.amount is not None:
            cost.setdefault(item, []).append(row.amount)
            continue
        known = by_item.get(item)
        schedule = known.schedule_at(row.start) if known is not None else None
        if schedule is None:
            unpriced.add(item)
            continue
        cost.setdefault(item, []).extend(p.amount for p in price_run(schedule, n0, row.calls))
    if export.amount_column is not None:
        source = f"the export's {export.amount_column} column"
    else:
        source = "the catalog's list prices (graduated tiers over the operator's monthly volume)"
    lines: list[MarginLine] = []
    # Unknown items (the export's own names) after the catalog's.
    items = sorted(
        set(calls) | set(charges.payg) | set(charges.points), key=lambda i: (i not in by_item, i)
    )
    for item in items:
        upstream_cost = None if item in unpriced else exact_sum(cost.get(item, ()))
        payg = charges.payg.get(item, Decimal(0))
        points = charges.points.get(item)
        plan = Decimal(0) if points is None else exact_mul(catalog.point_value, points)
        revenue = exact_sum((payg, plan))
        lines.append(
            MarginLine(
                item,
                calls.get(item, 0),
                upstream_cost,
                payg,
                plan,
                revenue,
                None if upstream_cost is None else exact_sum((revenue, -upstream_cost)),
            )
        )
    total_cost = exact_sum(ln.upstream_cost or Decimal(0) for ln in lines)
    plan_total = exact_sum(ln.plan_usage for ln in lines)
    # The total charges what the accounts' bills charge: each month total rounded to fen.
    revenue_total = exact_sum((charges.charged, plan_total))
    lines.append(
        MarginLine(
            TOTAL,
            sum(calls.values()),
            total_cost,
            charges.charged,
            plan_total,
            revenue_total,
            exact_sum((revenue_total, -total_cost)),
        )
    )
    return Margin(
        month,
        tuple(lines),
        source,
        charges.settled_until,
        charges.accounts,
        tuple(sorted(unpriced)),
    )
