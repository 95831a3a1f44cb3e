"""Accounts: the distinct accounts of the AccessKeys, listed (search, pages) and shown."""

from __future__ import annotations

import sqlite3
from enum import Enum
from typing import Annotated

from fastapi import FastAPI, Query

from ...rating.cash import balance_view
from ...rating.purchases import list_plans
from ..context import AdminContext
from ..models import AccountOut, AccountPage, AccountSummary
from ..pagination import DEFAULT_LIMIT, CursorQuery, Cursors, LimitQuery
from ._common import AccountPath, account_state, balance_out, key_out

__all__ = ["register"]

_TAGS: list[str | Enum] = ["accounts"]

_LISTING = "accounts"


def _accounts_page(
    conn: sqlite3.Connection, after: str | None, search: str | None, limit: int
) -> list[tuple[str, int, int]]:
    # Keyset on the account name (the credentials_account index): stable under inserts.
    clauses, params = ["1"], []
    if after is not None:
        clauses.append("account > ?")
        params.append(after)
    if search:
        clauses.append("instr(lower(account), lower(?)) > 0")
        params.append(search)
    rows = conn.execute(
        "SELECT account, COUNT(*), COALESCE(SUM(enabled), 0) FROM credentials"
        f" WHERE {' AND '.join(clauses)} GROUP BY account ORDER BY account LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [(str(a), int(n), int(e)) for a, n, e in rows]


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
        rows = await ctx.read(lambda conn: _accounts_page(conn, after, search, limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        return AccountPage(
            items=[
                AccountSummary(
                    account=a, state="enabled" if e else "disabled", keys=n, enabled_keys=e
                )
                for a, n, e in rows
            ],
            next_cursor=cursors.make(_LISTING, (rows[-1][0],)) if more else None,
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
