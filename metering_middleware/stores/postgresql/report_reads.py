"""The reports' own reads on a PostgreSQL ledger (``reports._db.LedgerReads``).

What rating has no read for: usage counters, the account list, the calls not yet
settled. Each method is one ``REPEATABLE READ`` read-only transaction on the rating
store's pool (the SQLite twin, ``reports/_sqlite_reads.py``, uses one read transaction):
the account check and the query see one snapshot. Same rows, same order as SQLite:
sorted text columns are ``COLLATE "C"`` (byte order, as Python's ``sorted``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from ...ledger.records import CallRecord
from ...reports._accounts import KNOWN_ACCOUNTS_SQL, unknown_account
from ...reports._db import CALL_COLUMNS
from ._migrate import Conn
from .ledger import _record
from .rating import PostgresRatingStore

__all__ = ["PostgresReportReads"]

_T = TypeVar("_T")


async def _known(conn: Conn, account: str) -> None:
    # The same three tables as SQLite's require_account, one indexed probe each. No
    # stored name holds a NUL (PostgreSQL text cannot), and a NUL parameter would be a
    # database error: such a name is unknown, as on SQLite.
    if "\x00" in account:
        raise unknown_account(account)
    for table in ("credentials", "balance_entries", "rating_plans"):
        if await conn.fetchval(f"SELECT 1 FROM {table} WHERE account = $1 LIMIT 1", account):
            return
    raise unknown_account(account)


class PostgresReportReads:
    """:class:`reports._db.LedgerReads` on an open :class:`PostgresRatingStore`."""

    def __init__(self, ratings: PostgresRatingStore) -> None:
        self._ratings = ratings

    async def _snapshot(self, fn: Callable[[Conn], Awaitable[_T]]) -> _T:
        # The rating store's private pool: this package's own store, one pool per report.
        async with (
            self._ratings._conn() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return await fn(conn)

    async def require_account(self, account: str) -> None:
        await self._snapshot(lambda conn: _known(conn, account))

    async def usage_sums(
        self, account: str, since: datetime, until: datetime, minutes: int
    ) -> list[tuple[str, str, str, str, str, int]]:
        async def run(conn: Conn) -> list[tuple[str, str, str, str, str, int]]:
            await _known(conn, account)
            # The day of the minute at UTC + offset, as SQLite's strftime(..., '+N minutes').
            rows = await conn.fetch(
                "SELECT to_char((minute AT TIME ZONE 'UTC') + make_interval(mins => $4),"
                " 'YYYY-MM-DD') AS day, category, action, outcome, detail, sum(count)"
                " FROM outcome_counts WHERE account = $1 AND minute >= $2 AND minute < $3"
                " GROUP BY day, category, action, outcome, detail",
                account,
                since,
                until,
                minutes,
            )
            return [(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

        return await self._snapshot(run)

    async def key_counts(self, account: str) -> tuple[int, int]:
        async def run(conn: Conn) -> tuple[int, int]:
            await _known(conn, account)
            row = await conn.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE enabled) FROM credentials"
                " WHERE account = $1",
                account,
            )
            assert row is not None  # an aggregate always returns a row
            return int(row[0]), int(row[1])

        return await self._snapshot(run)

    async def account_page(
        self, needle: str | None, limit: int, offset: int, after: str | None
    ) -> tuple[int, list[tuple[str, int, int]]]:
        async def run(conn: Conn) -> tuple[int, list[tuple[str, int, int]]]:
            if needle:
                # Python's casefold, as on SQLite (PostgreSQL's lower() is not casefold:
                # 'STRASSE' would not find 'straße'): the names are read and filtered
                # here, so a search reads every known name (one column, no keys).
                wanted = needle.casefold()
                names = [
                    str(r[0])
                    for r in await conn.fetch(f"SELECT account FROM ({KNOWN_ACCOUNTS_SQL}) k")
                    if wanted in str(r[0]).casefold()
                ]
                names.sort()
                total = len(names)
                if after is not None:
                    names = [n for n in names if n > after]
                page = names[offset : offset + limit]
            else:
                total = int(await conn.fetchval(f"SELECT count(*) FROM ({KNOWN_ACCOUNTS_SQL}) k"))
                op, bound = ">", after
                if after is not None and "\x00" in after:
                    # A NUL cannot be a parameter. For names without one (all stored
                    # names), name > p + NUL + rest exactly when name >= p + U+0001.
                    op, bound = ">=", after[: after.index("\x00")] + "\x01"
                page = [
                    str(r[0])
                    for r in await conn.fetch(
                        f"SELECT account FROM ({KNOWN_ACCOUNTS_SQL}) k"
                        f" WHERE $1::text IS NULL OR account {op} $1::text"
                        " ORDER BY account LIMIT $2 OFFSET $3",
                        bound,
                        limit,
                        offset,
                    )
                ]
            keys = {
                str(r[0]): (int(r[1]), int(r[2]))
                for r in await conn.fetch(
                    "SELECT account, count(*), count(*) FILTER (WHERE enabled)"
                    " FROM credentials WHERE account = ANY($1::text[]) GROUP BY account",
                    page,
                )
            }
            return total, [(n, *keys.get(n, (0, 0))) for n in page]

        return await self._snapshot(run)

    async def pending_calls(
        self, account: str, start: datetime, end: datetime, horizon: datetime | None, seen: int
    ) -> list[CallRecord]:
        async def run(conn: Conn) -> list[CallRecord]:
            await _known(conn, account)
            rows = await conn.fetch(
                f"SELECT {CALL_COLUMNS} FROM calls WHERE account = $1 AND occurred_at >= $2"
                " AND occurred_at < $3"
                " AND (seq > $5 OR ($4::timestamptz IS NOT NULL AND occurred_at >= $4))"
                " ORDER BY occurred_at, id",
                account,
                start,
                end,
                horizon,
                seen,
            )
            return [_record(r) for r in rows]

        return await self._snapshot(run)
