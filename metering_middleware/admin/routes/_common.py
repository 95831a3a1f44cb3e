"""What several routers share: 404s for unknown ids, and rows as response models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path

from ...credentials import CredentialInfo
from ...rating.cash import BalanceView
from ..context import AdminContext
from ..errors import AdminError
from ..models import BalanceOut, KeyOut, money, timestamp

__all__ = ["AccountPath", "account_state", "balance_out", "key_out", "micros", "not_found"]


AccountPath = Annotated[str, Path(min_length=1, max_length=128, description="The account")]


def not_found(code: str, what: str) -> AdminError:
    return AdminError(404, code, f"no {what}", recommend="check the id (ids are case-sensitive)")


async def account_state(ctx: AdminContext, account: str) -> str:
    """'enabled' or 'disabled'; 404 ``Account.NotFound`` for an account nobody created."""
    state = await (await ctx.ratings()).account_state(account)
    if state is None:
        raise not_found("Account.NotFound", f"account {account!r}")
    return state


def balance_out(view: BalanceView) -> BalanceOut:
    return BalanceOut(
        account=view.account,
        balance=money(view.balance),
        standing=view.standing,  # type: ignore[arg-type]  # one of the four by contract
        overdue_since=None if view.overdue_since is None else timestamp(view.overdue_since),
        monthly_cap=None if view.settings.monthly_cap is None else money(view.settings.monthly_cap),
        low_balance=None if view.settings.low_balance is None else money(view.settings.low_balance),
    )


def key_out(info: CredentialInfo) -> KeyOut:
    return KeyOut(
        access_key_id=info.access_key_id,
        account=info.account,
        enabled=info.enabled,
        created_at=timestamp(info.created_at),
        disabled_at=None if info.disabled_at is None else timestamp(info.disabled_at),
    )


def micros(when: datetime) -> int:
    """A time as a sort key (integer microseconds since the epoch: exact, ordered)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC if when.tzinfo is not None else None)
    delta = when - epoch
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
