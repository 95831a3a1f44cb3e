"""Balances and standing: show, top up (idempotent), entries, corrections, monthly cap,
low-balance threshold, suspend and restore by hand.

Every write is one of :mod:`metering_middleware.rating.cash`'s functions; this module
checks what it can name precisely first (amount, account, account enabled), so the
refusals the rating layer would give anyway come out with a precise code.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from enum import Enum
from typing import Annotated

from fastapi import FastAPI, Query, Response

from ...rating.balances import (
    BalanceEntry,
    BalanceError,
    EntryKind,
    correction_amount,
    limit_amount,
    topup_amount,
)
from ...rating.cash import (
    balance_view,
    correct_balance,
    hold_account,
    release_account,
    set_low_balance,
    set_monthly_cap,
    top_up,
)
from ..context import AdminContext
from ..errors import AdminError
from ..models import (
    BalanceOut,
    CapIn,
    CorrectionIn,
    EntryOut,
    EntryPage,
    PostedOut,
    SuspendIn,
    TopUpIn,
    money,
    timestamp,
)
from ..pagination import DEFAULT_LIMIT, CursorQuery, Cursors, LimitQuery, page_of
from ._common import AccountPath, account_state, balance_out

__all__ = ["entry_out", "register"]

_TAGS: list[str | Enum] = ["balances"]


def entry_out(e: BalanceEntry) -> EntryOut:
    return EntryOut(
        seq=e.seq,
        id=e.id,
        account=e.account,
        kind=e.kind.value,
        amount=money(e.amount),
        at=timestamp(e.at),
        month=None if e.month is None else str(e.month),
        ref=e.ref,
        reason=e.reason,
    )


def _amount(parse: Callable[[str], Decimal], text: str, field: str = "body.amount") -> Decimal:
    """The rating layer's own parse (one rule), its refusal as a 400 naming the field."""
    try:
        return parse(text)
    except BalanceError as exc:
        raise AdminError(400, "InvalidParameter", f"{field}: {exc}") from None


def register(app: FastAPI, ctx: AdminContext) -> None:
    """Add this resource's routes to ``app`` (under its app-wide bearer guard)."""
    cursors = Cursors(ctx.tokens.derive_key("cursor"))

    async def view(account: str) -> BalanceOut:
        return balance_out(await balance_view(await ctx.ratings(), account))

    @app.get(
        "/accounts/{account}/balance",
        tags=_TAGS,
        response_model=BalanceOut,
        summary="Show a balance",
    )
    async def show_balance(account: AccountPath) -> BalanceOut:
        await account_state(ctx, account)
        return await view(account)

    @app.post(
        "/accounts/{account}/topups",
        tags=_TAGS,
        response_model=PostedOut,
        status_code=201,
        summary="Top up (idempotent by key)",
        responses={200: {"model": PostedOut, "description": "The key was already posted"}},
    )
    async def post_topup(account: AccountPath, body: TopUpIn, response: Response) -> PostedOut:
        amount = _amount(topup_amount, body.amount)
        if await account_state(ctx, account) != "enabled":
            raise AdminError(
                409,
                "Account.Disabled",
                f"account {account!r} has no enabled AccessKey: no top-up",
                recommend="enable one of its keys first",
            )
        try:
            entry, posted = await top_up(
                await ctx.ratings(),
                account,
                amount,
                key=body.idempotency_key,
                reason=body.reason,
                clock=ctx.clock,
            )
        except BalanceError as exc:  # the key was used before with another amount
            raise AdminError(409, "IdempotencyKey.Conflict", str(exc)) from None
        if not posted:
            response.status_code = 200
        return PostedOut(entry=entry_out(entry), posted=posted, balance=await view(account))

    @app.post(
        "/accounts/{account}/corrections",
        tags=_TAGS,
        response_model=PostedOut,
        status_code=201,
        summary="A manual correction with its reason (either sign)",
        responses={200: {"model": PostedOut, "description": "The key was already posted"}},
    )
    async def post_correction(
        account: AccountPath, body: CorrectionIn, response: Response
    ) -> PostedOut:
        amount = _amount(correction_amount, body.amount)
        if not body.reason.strip():
            raise AdminError(400, "InvalidParameter", "body.reason: must not be blank")
        await account_state(ctx, account)
        try:
            entry, posted = await correct_balance(
                await ctx.ratings(),
                account,
                amount,
                body.reason,
                key=body.idempotency_key,
                clock=ctx.clock,
            )
        except BalanceError as exc:
            raise AdminError(409, "IdempotencyKey.Conflict", str(exc)) from None
        if not posted:
            response.status_code = 200
        return PostedOut(entry=entry_out(entry), posted=posted, balance=await view(account))

    @app.get(
        "/accounts/{account}/entries",
        tags=_TAGS,
        response_model=EntryPage,
        summary="An account's balance entries, oldest first",
    )
    async def list_entries(
        account: AccountPath,
        kind: Annotated[EntryKind | None, Query(description="This kind only")] = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> EntryPage:
        await account_state(ctx, account)
        found = await (await ctx.ratings()).balance_entries(account, kind=kind)
        page = page_of(
            found,
            lambda e: (e.seq,),
            cursors=cursors,
            listing=f"entries:{account}:{kind}",
            cursor=cursor,
            limit=limit,
        )
        return EntryPage(items=[entry_out(e) for e in page.items], next_cursor=page.next_cursor)

    @app.put(
        "/accounts/{account}/monthly-cap",
        tags=_TAGS,
        response_model=BalanceOut,
        summary="Cap pay-as-you-go spend per billing month (null: no cap)",
    )
    async def put_cap(account: AccountPath, body: CapIn) -> BalanceOut:
        amount = None
        if body.amount is not None:
            amount = _amount(lambda t: limit_amount(t, "a monthly cap"), body.amount)
        await account_state(ctx, account)
        await set_monthly_cap(await ctx.ratings(), account, amount, clock=ctx.clock)
        return await view(account)

    @app.put(
        "/accounts/{account}/low-balance",
        tags=_TAGS,
        response_model=BalanceOut,
        summary="A notice when the balance falls below an amount (null: none)",
    )
    async def put_low_balance(account: AccountPath, body: CapIn) -> BalanceOut:
        amount = None
        if body.amount is not None:
            amount = _amount(lambda t: limit_amount(t, "a low-balance threshold"), body.amount)
        await account_state(ctx, account)
        await set_low_balance(await ctx.ratings(), account, amount, clock=ctx.clock)
        return await view(account)

    @app.post(
        "/accounts/{account}/suspend",
        tags=_TAGS,
        response_model=BalanceOut,
        summary="Suspend (hold) an account by hand: its calls are refused until restored",
    )
    async def suspend(account: AccountPath, body: SuspendIn) -> BalanceOut:
        if not body.reason.strip():
            raise AdminError(400, "InvalidParameter", "body.reason: must not be blank")
        await account_state(ctx, account)
        try:
            await hold_account(await ctx.ratings(), account, body.reason, clock=ctx.clock)
        except BalanceError as exc:
            raise AdminError(409, "Account.AlreadySuspended", str(exc)) from None
        return await view(account)

    @app.post(
        "/accounts/{account}/restore",
        tags=_TAGS,
        response_model=BalanceOut,
        summary="Lift an operator's suspension (an account in debt stays overdue)",
    )
    async def restore(account: AccountPath) -> BalanceOut:
        await account_state(ctx, account)
        try:
            await release_account(await ctx.ratings(), account, clock=ctx.clock)
        except BalanceError as exc:
            raise AdminError(409, "Account.NotSuspended", str(exc)) from None
        return await view(account)
