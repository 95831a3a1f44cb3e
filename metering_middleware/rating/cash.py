"""Operations on cash balances: top up, correct, cap, threshold, suspend and restore by hand.

Each validates before it writes and writes in one durable transaction through the rating
store (entries, totals, standing and notices together). Refusals are ``BalanceError``
(nothing written): unknown accounts, top-ups for disabled accounts, malformed amounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ..clock import Clock, SystemClock
from ..ledger.ids import new_record_id
from .balances import (
    AccountSettings,
    BalanceEntry,
    BalanceError,
    EntryKind,
    Standing,
    correction_amount,
    limit_amount,
    topup_amount,
)
from .open import MoneyRatingStore

__all__ = [
    "BalanceView",
    "balance_view",
    "correct_balance",
    "hold_account",
    "release_account",
    "set_low_balance",
    "set_monthly_cap",
    "top_up",
]


@dataclass(frozen=True, slots=True)
class BalanceView:
    account: str
    balance: Decimal
    standing: str  # good, overdue, suspended, held
    overdue_since: datetime | None
    settings: AccountSettings


def _state(s: Standing | None) -> str:
    if s is None:
        return "good"
    if s.held_at is not None:
        return "held"
    return "suspended" if s.suspended_at is not None else "overdue"


async def _known(store: MoneyRatingStore, account: str, *, enabled: bool) -> None:
    state = await store.account_state(account)
    if state is None:
        raise BalanceError(f"no account {account!r} (no AccessKey was ever created for it)")
    if enabled and state != "enabled":
        raise BalanceError(f"account {account!r} is disabled (no enabled AccessKey): no top-up")


def _key(key: str | None) -> str:
    if key is None:
        return new_record_id()
    key = key.strip()
    if not key or len(key) > 128 or any(c.isspace() for c in key):
        raise BalanceError("an entry id is 1 to 128 characters without spaces")
    return key


async def top_up(
    store: MoneyRatingStore,
    account: str,
    amount: Decimal | str | int,
    *,
    key: str | None = None,
    reason: str | None = None,
    clock: Clock | None = None,
) -> tuple[BalanceEntry, bool]:
    """Credit ``amount`` (positive, fen) to an enabled account. ``key`` makes it idempotent:
    the same key and amount again is the same top-up, posted once (then False)."""
    value = topup_amount(amount)
    await _known(store, account, enabled=True)
    now = (clock or SystemClock()).now()
    entry = BalanceEntry(
        id=f"topup:{_key(key)}",
        account=account,
        kind=EntryKind.TOPUP,
        amount=value,
        at=now,
        recorded_at=now,
        reason=reason,
    )
    posted = await store.post_entries([entry], now)
    return entry, bool(posted)


async def correct_balance(
    store: MoneyRatingStore,
    account: str,
    amount: Decimal | str | int,
    reason: str,
    *,
    key: str | None = None,
    clock: Clock | None = None,
) -> tuple[BalanceEntry, bool]:
    """A manual correction (either sign) with its reason, for a known account (posted
    once per ``key``, like a top-up)."""
    value = correction_amount(amount)
    if not reason or not reason.strip():
        raise BalanceError("a correction needs its reason")
    await _known(store, account, enabled=False)
    now = (clock or SystemClock()).now()
    entry = BalanceEntry(
        id=f"correction:{_key(key)}",
        account=account,
        kind=EntryKind.CORRECTION,
        amount=value,
        at=now,
        recorded_at=now,
        reason=reason.strip(),
    )
    posted = await store.post_entries([entry], now)
    return entry, bool(posted)


async def balance_view(store: MoneyRatingStore, account: str) -> BalanceView:
    await _known(store, account, enabled=False)
    balance = (await store.balances(account=account)).get(account, Decimal(0))
    standing = (await store.standings(account=account)).get(account)
    settings = (await store.account_settings(account=account)).get(account)
    return BalanceView(
        account=account,
        balance=balance,
        standing=_state(standing),
        overdue_since=None if standing is None else standing.overdue_since,
        settings=settings or AccountSettings(account),
    )


async def _settings(store: MoneyRatingStore, account: str) -> AccountSettings:
    await _known(store, account, enabled=False)
    found = (await store.account_settings(account=account)).get(account)
    return found or AccountSettings(account)


async def set_monthly_cap(
    store: MoneyRatingStore,
    account: str,
    amount: Decimal | str | None,
    *,
    clock: Clock | None = None,
) -> AccountSettings:
    """Cap the account's pay-as-you-go spend per billing month (None: no cap)."""
    cap = None if amount is None else limit_amount(amount, "a monthly cap")
    current = await _settings(store, account)
    new = AccountSettings(account, cap, current.low_balance)
    await store.set_account_settings(new, (clock or SystemClock()).now())
    return new


async def set_low_balance(
    store: MoneyRatingStore,
    account: str,
    amount: Decimal | str | None,
    *,
    clock: Clock | None = None,
) -> AccountSettings:
    """Notice when the balance falls below ``amount`` (None: no notice)."""
    low = None if amount is None else limit_amount(amount, "a low-balance threshold")
    current = await _settings(store, account)
    new = AccountSettings(account, current.monthly_cap, low)
    await store.set_account_settings(new, (clock or SystemClock()).now())
    return new


async def hold_account(
    store: MoneyRatingStore, account: str, reason: str, *, clock: Clock | None = None
) -> Standing | None:
    """Suspend an account by hand: refused like a suspended one until released."""
    if not reason or not reason.strip():
        raise BalanceError("a suspension needs its reason")
    await _known(store, account, enabled=False)
    return await store.set_hold(account, (clock or SystemClock()).now(), reason.strip(), hold=True)


async def release_account(
    store: MoneyRatingStore, account: str, *, clock: Clock | None = None
) -> Standing | None:
    """Lift an operator's suspension (an account still in debt stays overdue)."""
    await _known(store, account, enabled=False)
    return await store.set_hold(account, (clock or SystemClock()).now(), None, hold=False)
