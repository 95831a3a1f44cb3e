"""What a notice is: its kind, whom and what it is about, and its deterministic id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

__all__ = ["Notice", "NoticeKind", "cap_notice", "notice_id"]


class NoticeKind(StrEnum):
    PLAN_POINTS_LOW = "plan.points_low"  # a resource plan at 20% of its points or less
    PLAN_EXPIRING = "plan.expiring"  # a plan or subscription ends within 7 days
    BALANCE_LOW = "balance.low"  # below the account's low-balance threshold
    ACCOUNT_OVERDUE = "account.overdue"
    ACCOUNT_SUSPENDED = "account.suspended"
    ACCOUNT_RESTORED = "account.restored"
    ACCOUNT_HELD = "account.held"  # suspended by an operator
    ACCOUNT_RELEASED = "account.released"  # an operator's suspension lifted
    CAP_REACHED = "account.cap_reached"


def notice_id(kind: NoticeKind, account: str, subject: str) -> str:
    """The id that makes a notice happen once: kind, account and what it is about (a plan
    id, a month, the start of an overdue episode...)."""
    return f"{kind.value}:{account}:{subject}"


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    account: str
    subject: str  # what makes it unique for its kind and account
    at: datetime  # when it happened
    data: Mapping[str, Any] = field(default_factory=dict)  # JSON-ready details

    @property
    def id(self) -> str:
        return notice_id(self.kind, self.account, self.subject)


def cap_notice(
    account: str, month: str, at: datetime, *, cap: Decimal, spend: Decimal, source: str
) -> Notice:
    """``account.cap_reached`` for a billing ``month`` (YYYY-MM): one id whoever finds it
    first, settlement (``source='settled'``: settled spend) or the spend guard
    (``'guard'``: its estimate of unsettled spend)."""
    return Notice(
        NoticeKind.CAP_REACHED,
        account,
        month,
        at,
        {"month": month, "cap": format(cap, "f"), "spend": format(spend, "f"), "source": source},
    )
