"""Response bodies of the report routes: the shapes of :mod:`metering_middleware.reports`'
``to_json()`` (the one serialisation every billing view shares), declared for the OpenAPI
document. The routes return ``Model.model_validate(result.to_json())``: a report field
added without its model here fails the OpenAPI test, it does not go out undocumented.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BillOut",
    "DeductionOut",
    "OverviewOut",
    "PlanStatusOut",
    "PreviewOut",
    "UsageOut",
]

#: The reports' money text: the Decimal's own ``str`` (exact).
Amount = Annotated[str, Field(examples=["12.3400"], description="CNY, an exact decimal")]
Instant = Annotated[str, Field(examples=["2026-01-01T00:00:00Z"], description="UTC")]


class _Out(BaseModel):
    # Exactly the report's keys: one more or one less is a failure, not a silent drop.
    model_config = ConfigDict(extra="forbid")


class UsageRowOut(_Out):
    day: str | None
    category: str | None
    action: str | None
    charged: int
    free: dict[str, int] = Field(description="free calls by upstream error code")
    refused: dict[str, int] = Field(description="refused calls by the gateway's reason")
    total: int


class UsageOut(_Out):
    account: str
    since: Instant
    until: Instant
    tz: str = Field(examples=["+08:00"])
    group: list[str]
    rows: list[UsageRowOut]
    totals: UsageRowOut


class PlanStatusOut(_Out):
    id: str
    account: str
    kind: str
    categories: list[str]
    action: str | None
    qps: int | None
    points: Amount | None
    points_left: Amount | None
    price_paid: Amount
    ordered_at: Instant
    starts: Instant
    expires: Instant
    refunded_at: Instant | None
    state: str = Field(description="pending, active, exhausted, expired or refunded")
    low: bool | None = Field(description="20% of the points or fewer left")


class OverviewOut(_Out):
    account: str
    enabled: bool
    balance: Amount
    standing: str
    standing_since: Instant | None
    held_reason: str | None
    monthly_cap: Amount | None
    month: str
    month_spend: Amount
    low_balance: Amount | None
    low_balance_reached: bool
    settled_until: Instant | None


class DeductionLineOut(_Out):
    item: str
    category: str
    source: str
    plan_id: str | None
    tier: int | None
    unit_price: Amount | None
    origin: str
    calls: int
    points: Amount
    amount: Amount


class BillLineOut(DeductionLineOut):
    adjustment: bool


class DeductionSourceOut(_Out):
    source: str
    plan_id: str | None
    tier: int | None
    unit_price: Amount | None
    calls: int
    points: Amount
    amount: Amount


class DeductionOut(_Out):
    account: str
    month: str
    lines: list[DeductionLineOut]
    sources: list[DeductionSourceOut]
    calls: int
    points: Amount
    amount: Amount
    settled_until: Instant | None


class BillPlanOut(_Out):
    id: str
    kind: str
    categories: list[str]
    points: Amount | None
    points_left: Amount | None
    starts: Instant
    expires: Instant


class BillOut(_Out):
    account: str
    month: str
    lines: list[BillLineOut]
    plans: list[BillPlanOut]
    exact: Amount
    recorded: Amount
    amount_due: Amount
    rounding: Amount
    settled_until: Instant | None
    final: bool


class ItemPreviewOut(_Out):
    item: str
    category: str
    settled_calls: int
    pending_calls: int
    to_date_calls: int
    projected_calls: int
    settled_amount: Amount
    pending_amount: Amount
    to_date_amount: Amount
    projected_amount: Amount


class PreviewOut(_Out):
    account: str
    month: str
    now: Instant
    settled_until: Instant | None
    elapsed: Amount = Field(description="the share of the month gone by")
    items: list[ItemPreviewOut]
    settled: Amount
    pending: Amount
    to_date: Amount
    to_date_due: Amount
    projected: Amount | None
    projected_due: Amount | None
