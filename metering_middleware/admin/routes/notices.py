"""Notices (plan points low, expiring, balance low, overdue, suspended, cap reached...),
newest last, with their webhook delivery's state: :func:`notices.outbox.list_notices`."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import FastAPI, Query

from ...notices.model import NoticeKind
from ...notices.outbox import OutboxRow, list_notices
from ..context import AdminContext
from ..errors import AdminError
from ..models import NoticeOut, NoticePage, timestamp
from ..pagination import DEFAULT_LIMIT, CursorQuery, Cursors, LimitQuery
from ._common import account_state

__all__ = ["notice_out", "register"]

_TAGS: list[str | Enum] = ["notices"]


def notice_out(row: OutboxRow) -> NoticeOut:
    n = row.notice
    return NoticeOut(
        id=n.id,
        kind=n.kind.value,
        account=n.account,
        subject=n.subject,
        at=timestamp(n.at),
        data=dict(n.data),
        recorded_at=timestamp(row.recorded_at),
        delivery=row.state,  # type: ignore[arg-type]  # pending, delivered or failed
        attempts=row.attempts,
    )


def register(app: FastAPI, ctx: AdminContext) -> None:
    """Add this resource's routes to ``app`` (under its app-wide bearer guard)."""
    cursors = Cursors(ctx.tokens.derive_key("cursor"))

    @app.get(
        "/notices", tags=_TAGS, response_model=NoticePage, summary="Notices, in recording order"
    )
    async def get_notices(
        account: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        kind: Annotated[NoticeKind | None, Query(description="This kind only")] = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> NoticePage:
        listing = f"notices:{account}:{kind}"
        after = cursors.read(listing, cursor)
        if account is not None:
            await account_state(ctx, account)
        rows = await ctx.read(
            lambda conn: list_notices(
                conn, account=account, kind=None if kind is None else kind.value
            )
        )
        start = 0
        if after is not None:
            # Notices are only ever appended (in seq order), so the last one shown keeps
            # its place: the page starts after it.
            ids = [r.notice.id for r in rows]
            try:
                start = ids.index(str(after[0])) + 1
            except ValueError:
                raise AdminError(
                    400, "InvalidCursor", "cursor names no notice of this list"
                ) from None
        chosen = rows[start : start + limit]
        more = len(rows) > start + limit
        return NoticePage(
            items=[notice_out(r) for r in chosen],
            next_cursor=cursors.make(listing, (chosen[-1].notice.id,)) if more else None,
        )
