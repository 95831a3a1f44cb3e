"""Accounts: listed (search, pages) and shown.

The list is the reports layer's (``reports.accounts``: accounts with AccessKeys, balances
or plans, a literal case-insensitive search), the same one the billing page shows; the
API only turns its keyset page into a signed cursor."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import FastAPI, Query

from ...rating.cash import balance_view
from ...rating.purchases import list_plans
from ...reports import accounts as list_known_accounts
from ..context import AdminContext
from ..models import AccountOut, AccountPage, AccountSummary, money
from ..pagination import DEFAULT_LIMIT, CursorQuery, Cursors, LimitQuery
from ._common import AccountPath, account_state, balance_out, key_out

__all__ = ["register"]

_TAGS: list[str | Enum] = ["accounts"]

_LISTING = "accounts"


def register(app: FastAPI, ctx: AdminContext) -> None:
    """Add this resource's routes to ``app`` (under its app-wide bearer guard)."""
    cursors = Cursors(ctx.tokens.derive_key("cursor"))

    @app.get("/accounts", tags=_TAGS, response_model=AccountPage, summary="List accounts")
    async def list_accounts(
        search: Annotated[
            str | None, Query(max_length=128, description="Substring, any case")
        ] = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> AccountPage:
        key = cursors.read(_LISTING, cursor)
        after = None if key is None else str(key[0])
        page = await list_known_accounts(ctx.ledger_path, search=search, limit=limit, after=after)
        more = page.next_after
        return AccountPage(
            items=[
                AccountSummary(
                    account=a.account,
                    state="enabled" if a.enabled else "disabled",
                    keys=a.keys,
                    enabled_keys=a.enabled_keys,
                    balance=money(a.balance),
                    standing=a.standing,  # type: ignore[arg-type]
                )
                for a in page.items
            ],
            next_cursor=None if more is None else cursors.make(_LISTING, (more,)),
        )

    @app.get(
        "/accounts/{account}",
        tags=_TAGS,
        response_model=AccountOut,
        summary="Show an account",
    )
    async def show_account(account: AccountPath) -> AccountOut:
        state = await account_state(ctx, account)
        keys = await (await ctx.credentials()).list(account)
        ratings = await ctx.ratings()
        view = await balance_view(ratings, account)
        plans = await list_plans(ratings, account=account)
        return AccountOut(
            account=account,
            state="enabled" if state == "enabled" else "disabled",
            keys=[key_out(k) for k in sorted(keys, key=lambda k: (k.created_at, k.access_key_id))],
            balance=balance_out(view),
            plans=len(plans),
        )
