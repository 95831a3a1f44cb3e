"""The admin API's request and response bodies (pydantic): the OpenAPI document's schemas.

Money is a decimal string both ways (``"12.3400"``, exactly as the Decimal prints in
fixed point): a JSON number is refused in a request, so no amount ever passes through a
float. Times are ISO 8601 in UTC with ``Z``. Request bodies are strict (``"5"`` is not a
QPS level, ``1`` is not a string) and forbid unknown fields, so a misspelt field is a 400
naming it rather than silently ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AccountOut",
    "AccountPage",
    "AccountSummary",
    "BalanceOut",
    "CapIn",
    "CorrectionIn",
    "EntryOut",
    "EntryPage",
    "KeyCreated",
    "KeyOut",
    "KeyPage",
    "Money",
    "NoticeOut",
    "NoticePage",
    "PlanOut",
    "PlanPage",
    "PostedOut",
    "QpsPurchaseIn",
    "RefundOut",
    "RenewIn",
    "ResourcePurchaseIn",
    "SuspendIn",
    "Timestamp",
    "TopUpIn",
    "UsedItemOut",
    "money",
    "timestamp",
]

Money = Annotated[
    str,
    Field(
        pattern=r"^-?[0-9]+(\.[0-9]+)?$",
        examples=["12.3400"],
        description="CNY as an exact decimal string",
    ),
]
Timestamp = Annotated[str, Field(examples=["2026-01-01T00:00:00Z"], description="UTC, ISO 8601")]
#: A decimal amount in a request: a string, never a JSON number (no float in between).
AmountIn = Annotated[str, Field(min_length=1, max_length=40, examples=["100.00"])]
Key = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^\S+$")]
Reason = Annotated[str, Field(min_length=1, max_length=500)]


def money(value: Decimal) -> str:
    return format(value, "f")


def timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- accounts and keys ---------------------------------------------------------------------


class AccountSummary(BaseModel):
    account: str
    state: Literal["enabled", "disabled"] = Field(
        description="enabled: at least one enabled AccessKey"
    )
    keys: int
    enabled_keys: int
    balance: Money
    standing: Literal["good", "overdue", "suspended", "held"]


class AccountPage(BaseModel):
    items: list[AccountSummary]
    next_cursor: str | None


class BalanceOut(BaseModel):
    account: str
    balance: Money
    standing: Literal["good", "overdue", "suspended", "held"]
    overdue_since: Timestamp | None
    monthly_cap: Money | None
    low_balance: Money | None


class KeyOut(BaseModel):
    """An AccessKey as listed: never its secret."""

    access_key_id: str
    account: str
    enabled: bool
    created_at: Timestamp
    disabled_at: Timestamp | None


class KeyPage(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None


class KeyCreated(KeyOut):
    """The one answer that carries the secret: store it now, it is never shown again."""

    secret: str


class AccountOut(BaseModel):
    account: str
    state: Literal["enabled", "disabled"]
    keys: list[KeyOut]
    balance: BalanceOut
    plans: int


# -- balances ------------------------------------------------------------------------------


class TopUpIn(_In):
    amount: AmountIn = Field(description="CNY, positive, at most 2 decimals")
    idempotency_key: Key = Field(
        description="The same key and amount again posts nothing new (a retry is safe)"
    )
    reason: Reason | None = None


class CorrectionIn(_In):
    amount: AmountIn = Field(description="CNY, non-zero, either sign, at most 4 decimals")
    reason: Reason
    idempotency_key: Key | None = None


class CapIn(_In):
    amount: AmountIn | None = Field(description="CNY, positive, 2 decimals; null removes it")


class SuspendIn(_In):
    reason: Reason


class EntryOut(BaseModel):
    seq: int
    id: str
    account: str
    kind: str
    amount: Money
    at: Timestamp
    month: str | None
    ref: str | None
    reason: str | None


class EntryPage(BaseModel):
    items: list[EntryOut]
    next_cursor: str | None


class PostedOut(BaseModel):
    """A top-up or correction: the entry, whether this request posted it, the balance."""

    entry: EntryOut
    posted: bool = Field(description="false: the idempotency key was already posted")
    balance: BalanceOut


# -- plans ---------------------------------------------------------------------------------


class ResourcePurchaseIn(_In):
    kind: Literal["general", "single"]
    points: AmountIn
    price: AmountIn
    categories: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, description="general: the categories covered (default: every image one)"
    )
    category: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="single: the one category covered"
    )
    validity_months: int = Field(12, ge=1, le=120)
    id: Key | None = None
    allow_debt: bool = Field(False, description="buy even if the balance does not cover it")


class QpsPurchaseIn(_In):
    kind: Literal["qps"]
    category: Annotated[str, Field(min_length=1, max_length=64)]
    action: Annotated[str, Field(min_length=1, max_length=128)]
    qps: int = Field(ge=1, le=100_000)
    price: AmountIn
    months: int = Field(1, ge=1, le=120)
    id: Key | None = None
    allow_debt: bool = False


class RenewIn(_In):
    price: AmountIn | None = Field(None, description="default: what the renewed plan cost")
    months: int | None = Field(None, ge=1, le=120)
    new_id: Key | None = None
    allow_debt: bool = False


class PlanOut(BaseModel):
    id: str
    account: str
    kind: Literal["qps", "single", "general"]
    categories: list[str]
    action: str | None
    qps: int | None
    points: Money | None
    remaining: Money | None = Field(description="points left after the last settlement")
    start: Timestamp
    end: Timestamp
    ordered_at: Timestamp
    price_paid: Money
    refunded_at: Timestamp | None


class PlanPage(BaseModel):
    items: list[PlanOut]
    next_cursor: str | None


class UsedItemOut(BaseModel):
    item: str
    month: str
    calls: int
    unit_price: Money
    value: Money


class RefundOut(BaseModel):
    plan: str
    account: str
    paid: Money
    held_hours: Money
    used: list[UsedItemOut]
    used_value: Money
    amount: Money
    refundable: bool
    refunded: bool
    at: Timestamp
    rule: str


# -- notices -------------------------------------------------------------------------------


class NoticeOut(BaseModel):
    id: str
    kind: str
    account: str
    subject: str
    at: Timestamp
    data: dict[str, object]
    recorded_at: Timestamp
    delivery: Literal["pending", "delivered", "failed"] = Field(
        description="the webhook delivery's state (pending too when no webhook is configured)"
    )
    attempts: int


class NoticePage(BaseModel):
    items: list[NoticeOut]
    next_cursor: str | None
