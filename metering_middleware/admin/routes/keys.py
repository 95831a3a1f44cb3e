"""AccessKeys: create (the secret is in that one answer only), list, show, disable, enable."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import FastAPI, Path

from ..context import AdminContext
from ..errors import AdminError
from ..models import KeyCreated, KeyOut, KeyPage
from ..pagination import DEFAULT_LIMIT, CursorQuery, Cursors, LimitQuery, page_of
from ._common import AccountPath, account_state, key_out, micros, not_found

__all__ = ["register"]

_TAGS: list[str | Enum] = ["keys"]

KeyPath = Annotated[str, Path(min_length=1, max_length=128, description="The AccessKeyId")]
_LISTING = "keys"


def _account_name(account: str) -> str:
    # Shown in bills, pages and exports: no control characters, no blank around it.
    if account != account.strip() or not account.isprintable():
        raise AdminError(
            400,
            "InvalidParameter",
            "path.account: an account name has no control characters and no blank around it",
        )
    return account


def register(app: FastAPI, ctx: AdminContext) -> None:
    """Add this resource's routes to ``app`` (under its app-wide bearer guard)."""
    cursors = Cursors(ctx.tokens.derive_key("cursor"))

    async def find(access_key_id: str) -> KeyOut:
        for info in await (await ctx.credentials()).list():
            if info.access_key_id == access_key_id:
                return key_out(info)
        raise not_found("AccessKey.NotFound", f"AccessKey {access_key_id!r}")

    @app.post(
        "/accounts/{account}/keys",
        tags=_TAGS,
        response_model=KeyCreated,
        status_code=201,
        summary="Create an AccessKey (a new account with its first key)",
        description="The answer carries the secret: the only time it is shown.",
    )
    async def create_key(account: AccountPath) -> KeyCreated:
        manager = await ctx.credentials()
        row, secret = await manager.add(_account_name(account))
        info = key_out(
            next(i for i in await manager.list(account) if i.access_key_id == row.access_key_id)
        )
        return KeyCreated(**info.model_dump(), secret=secret)

    @app.get(
        "/accounts/{account}/keys",
        tags=_TAGS,
        response_model=KeyPage,
        summary="List an account's keys",
    )
    async def list_keys(
        account: AccountPath, limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None
    ) -> KeyPage:
        await account_state(ctx, account)
        infos = await (await ctx.credentials()).list(account)
        page = page_of(
            infos,
            lambda k: (micros(k.created_at), k.access_key_id),
            cursors=cursors,
            listing=f"{_LISTING}:{account}",
            cursor=cursor,
            limit=limit,
        )
        return KeyPage(items=[key_out(i) for i in page.items], next_cursor=page.next_cursor)

    @app.get(
        "/keys/{access_key_id}", tags=_TAGS, response_model=KeyOut, summary="Show an AccessKey"
    )
    async def show_key(access_key_id: KeyPath) -> KeyOut:
        return await find(access_key_id)

    @app.post(
        "/keys/{access_key_id}/disable",
        tags=_TAGS,
        response_model=KeyOut,
        summary="Disable an AccessKey (its calls are refused within a refresh interval)",
    )
    async def disable_key(access_key_id: KeyPath) -> KeyOut:
        await find(access_key_id)  # 404 first: disable() would take an account name too
        await (await ctx.credentials()).disable(access_key_id)
        return await find(access_key_id)

    @app.post(
        "/keys/{access_key_id}/enable", tags=_TAGS, response_model=KeyOut, summary="Enable it again"
    )
    async def enable_key(access_key_id: KeyPath) -> KeyOut:
        await find(access_key_id)
        await (await ctx.credentials()).enable(access_key_id)
        return await find(access_key_id)
