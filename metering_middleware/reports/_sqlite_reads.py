"""The reports' own reads on an SQLite ledger file (private): what rating has no read for.

Each method is one read transaction on a fresh ``sqlite3`` connection in a worker thread
(:func:`._db.read`): the account check and the query see one commit. The PostgreSQL
twin is ``stores/postgresql/report_reads.py``; both answer :class:`._db.LedgerReads`.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from ..ledger.codec import format_time, record_from_row
from ..ledger.records import CallRecord
from ._accounts import KNOWN_ACCOUNTS_SQL, require_account
from ._db import CALL_COLUMNS, LedgerPath, read

__all__ = ["SqliteReads"]


def _sums(
    conn: sqlite3.Connection, account: str, since: str, until: str, minutes: int
) -> list[tuple[str, str, str, str, str, int]]:
    require_account(conn, account)
    rows = conn.execute(
        "SELECT strftime('%Y-%m-%d', substr(minute, 1, 19), ?) AS day, category, action,"
        " outcome, detail, SUM(count) FROM outcome_counts"
        " WHERE account = ? AND minute >= ? AND minute < ?"
        " GROUP BY day, category, action, outcome, detail",
        (f"{minutes:+d} minutes", account, since, until),
    ).fetchall()
    return [(str(d), str(c), str(a), str(o), str(t), int(n)) for d, c, a, o, t, n in rows]


def _keys(conn: sqlite3.Connection, account: str) -> tuple[int, int]:
    require_account(conn, account)
    n, enabled = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(enabled), 0) FROM credentials WHERE account = ?",
        (account,),
    ).fetchone()
    return int(n), int(enabled)


def _page(
    conn: sqlite3.Connection, needle: str | None, limit: int, offset: int, after: str | None
) -> tuple[int, list[tuple[str, int, int]]]:
    # A Python casefold, not LIKE: the search is a plain substring ('%' and '_' are
    # characters like any other) and case-insensitive beyond ASCII.
    conn.create_function("casefold", 1, str.casefold, deterministic=True)
    where, params = "", []
    if needle:
        where, params = " WHERE instr(casefold(account), ?) > 0", [needle.casefold()]
    known = f"SELECT account FROM ({KNOWN_ACCOUNTS_SQL}){where}"
    (total,) = conn.execute(f"SELECT COUNT(*) FROM ({known})", params).fetchone()
    start, start_params = "", []
    if after is not None:
        start, start_params = " WHERE account > ?", [after]
    rows = conn.execute(
        f"SELECT k.account, COUNT(c.access_key_id), COALESCE(SUM(c.enabled), 0)"
        f" FROM (SELECT account FROM ({known}){start} ORDER BY account LIMIT ? OFFSET ?) k"
        " LEFT JOIN credentials c ON c.account = k.account"
        " GROUP BY k.account ORDER BY k.account",
        [*params, *start_params, limit, offset],
    ).fetchall()
    return int(total), [(str(a), int(n), int(e)) for a, n, e in rows]


def _pending(
    conn: sqlite3.Connection,
    account: str,
    start: str,
    end: str,
    horizon: str | None,
    seen: int,
) -> list[CallRecord]:
    require_account(conn, account)
    unsettled = "seq > ?" if horizon is None else "(occurred_at >= ? OR seq > ?)"
    params: list[Any] = [account, start, end]
    params += [seen] if horizon is None else [horizon, seen]
    rows = conn.execute(
        f"SELECT {CALL_COLUMNS} FROM calls WHERE account = ? AND occurred_at >= ?"
        f" AND occurred_at < ? AND {unsettled} ORDER BY occurred_at, id",
        params,
    ).fetchall()
    return [record_from_row(r) for r in rows]


class SqliteReads:
    """:class:`._db.LedgerReads` on the ledger file at ``path``."""

    def __init__(self, path: LedgerPath) -> None:
        self.path = path

    async def require_account(self, account: str) -> None:
        await read(self.path, require_account, account)

    async def usage_sums(
        self, account: str, since: datetime, until: datetime, minutes: int
    ) -> list[tuple[str, str, str, str, str, int]]:
        return await read(
            self.path, _sums, account, format_time(since), format_time(until), minutes
        )

    async def key_counts(self, account: str) -> tuple[int, int]:
        return await read(self.path, _keys, account)

    async def account_page(
        self, needle: str | None, limit: int, offset: int, after: str | None
    ) -> tuple[int, list[tuple[str, int, int]]]:
        return await read(self.path, _page, needle, limit, offset, after)

    async def pending_calls(
        self, account: str, start: datetime, end: datetime, horizon: datetime | None, seen: int
    ) -> list[CallRecord]:
        return await read(
            self.path,
            _pending,
            account,
            format_time(start),
            format_time(end),
            None if horizon is None else format_time(horizon),
            seen,
        )
