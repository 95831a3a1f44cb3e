"""Cash balances: an immutable journal of dated entries per account, in CNY.

The balance is the exact sum of the account's entries (billing rules section 6). Every
entry a program posts has a deterministic id, so a crashed and rerun poster cannot post
twice:

========== ============================== ===================================================
kind       id                             posted by
========== ============================== ===================================================
topup      ``topup:KEY``                  ``metering balance topup`` (KEY: ``--id`` or new)
purchase   ``purchase:PLAN``              buying a plan (negative: its price)
payg       ``payg:ACCOUNT:MONTH:N``       a settlement pass: the month's exact pay-as-you-go
                                          so far, minus what earlier entries posted
adjustment ``adjustment:ACCOUNT:MONTH:N`` the same, for records billed as adjustments
rounding   ``rounding:ACCOUNT:MONTH:N``   the pass that closes the month: down to the fen
refund     ``refund:PLAN``                refunding a plan (positive)
correction ``correction:KEY``             ``metering balance adjust``, with its reason
========== ============================== ===================================================

A re-rate that changes what a month costs posts the difference as a new entry (N + 1),
never an edit; so a closed month's entries always sum to minus its bill's amount due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from .errors import RatingError
from .months import Month

__all__ = [
    "MAX_AMOUNT",
    "SUSPEND_AFTER",
    "AccountSettings",
    "BalanceEntry",
    "BalanceError",
    "EntryKind",
    "Standing",
    "correction_amount",
    "limit_amount",
    "topup_amount",
]

#: Overdue this long, an account is suspended (billing rules section 6).
SUSPEND_AFTER = timedelta(hours=24)

#: No single top-up, correction or limit above this (CNY): a typo guard, not a business rule.
MAX_AMOUNT = Decimal("1000000000")


class BalanceError(RatingError):
    """A balance operation that was refused (nothing was written)."""


class EntryKind(StrEnum):
    TOPUP = "topup"
    PURCHASE = "purchase"
    PAYG = "payg"
    ADJUSTMENT = "adjustment"
    ROUNDING = "rounding"
    REFUND = "refund"
    CORRECTION = "correction"


@dataclass(frozen=True, slots=True)
class BalanceEntry:
    """One immutable entry: positive credits the account, negative charges it."""

    id: str
    account: str
    kind: EntryKind
    amount: Decimal
    at: datetime  # when it takes effect
    recorded_at: datetime
    month: Month | None = None  # payg, adjustment, rounding: the billing month charged
    ref: str | None = None  # purchase, refund: the plan
    reason: str | None = None
    seq: int = 0  # its place in the journal (0 until stored)


@dataclass(frozen=True, slots=True)
class AccountSettings:
    account: str
    monthly_cap: Decimal | None = None  # pay-as-you-go per billing month
    low_balance: Decimal | None = None  # a notice when the balance falls below it


@dataclass(frozen=True, slots=True)
class Standing:
    """An account that is not in good standing (accounts in good standing have none).

    ``overdue_since``: when settlement first found its balance below zero;
    ``suspended_at``: when it had been overdue for 24 hours; ``held_at``: an operator
    suspended it by hand (only an operator lifts that).
    """

    account: str
    overdue_since: datetime | None
    suspended_at: datetime | None
    held_at: datetime | None
    held_reason: str | None
    updated_at: datetime


def _decimal(text: Decimal | str | int, what: str) -> Decimal:
    try:
        value = text if isinstance(text, Decimal) else Decimal(str(text).strip())
    except InvalidOperation:
        raise BalanceError(f"{what} must be a decimal number, got {text!r}") from None
    if not value.is_finite():
        raise BalanceError(f"{what} must be a finite amount, got {text!r}")
    return value


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def topup_amount(text: Decimal | str | int) -> Decimal:
    """A top-up: positive, at most 2 decimals (fen), at most ``MAX_AMOUNT``."""
    value = _decimal(text, "a top-up")
    if value <= 0:
        raise BalanceError(f"a top-up must be positive, got {text}")
    if _places(value) > 2:
        raise BalanceError(f"a top-up has at most 2 decimals (fen), got {text}")
    if value > MAX_AMOUNT:
        raise BalanceError(f"a top-up is at most {MAX_AMOUNT} CNY, got {text}")
    return value


def correction_amount(text: Decimal | str | int) -> Decimal:
    """A manual correction: non-zero, either sign, at most 4 decimals (a price's precision)."""
    value = _decimal(text, "a correction")
    if value == 0:
        raise BalanceError("a correction must not be zero")
    if _places(value) > 4:
        raise BalanceError(f"a correction has at most 4 decimals, got {text}")
    if abs(value) > MAX_AMOUNT:
        raise BalanceError(f"a correction is at most {MAX_AMOUNT} CNY either way, got {text}")
    return value


def limit_amount(text: Decimal | str | int, what: str) -> Decimal:
    """A cap or a threshold: positive, at most 2 decimals."""
    value = _decimal(text, what)
    if value <= 0:
        raise BalanceError(f"{what} must be positive, got {text}")
    if _places(value) > 2:
        raise BalanceError(f"{what} has at most 2 decimals (fen), got {text}")
    if value > MAX_AMOUNT:
        raise BalanceError(f"{what} is at most {MAX_AMOUNT} CNY, got {text}")
    return value
