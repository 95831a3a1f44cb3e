"""One read of the ledger for one report (private), whichever database holds it.

Each report opens a :class:`Ledger`: the rating store beside the ledger (plans,
balances, bills: rating's own reads, ``rating_store_for``) and :class:`LedgerReads`,
the few reads rating has none for (usage counters, account lists, the calls not yet
settled), implemented once per backend: ``_sqlite_reads.py`` (a plain ``sqlite3``
connection per read, one read transaction, in a worker thread: no SQLite call on the
event loop) and ``stores/postgresql/report_reads.py`` (asyncpg on the rating store's
pool, one ``REPEATABLE READ`` snapshot per read). Nothing here writes; the ledger must
exist (``LedgerMissing`` otherwise: a mistyped path is an error, not a new empty ledger).

A ledger is given as a path (an SQLite file: what the admin API and the tenant view
pass) or as a ledger store (what the CLI opened from its URL); a store must be SQLite
or PostgreSQL (``ValueError`` for ``memory://``, which keeps no plans).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ..ledger.migrate import connect_existing
from ..ledger.records import CallRecord
from ..ledger.store import LedgerStore, StoreError
from ..rating.open import MoneyRatingStore, rating_store_for
from ..stores.sqlite.ledger import SqliteStore
from ..stores.sqlite.rating import SqliteRatingStore

__all__ = [
    "CALL_COLUMNS",
    "Ledger",
    "LedgerPath",
    "LedgerReads",
    "LedgerSource",
    "open_ledger",
    "read",
]

LedgerPath = str | os.PathLike[str]
#: A path of an SQLite ledger file, or an (SQLite or PostgreSQL) ledger store.
LedgerSource = LedgerPath | LedgerStore
_T = TypeVar("_T")

#: The first twelve ``calls`` columns, in ``CallRecord`` order (both backends).
CALL_COLUMNS = (
    "id, request_id, account, access_key_id, category, action, version, item,"
    " occurred_at, status, error_code, latency_ms"
)


async def read(path: LedgerPath, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(conn, *args)`` in one read transaction on a fresh connection, off the loop."""

    def run() -> _T:
        conn = connect_existing(path)
        try:
            conn.execute("BEGIN")  # one snapshot: every SELECT of fn sees the same commit
            try:
                return fn(conn, *args)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"ledger read failed: {exc}") from exc
        finally:
            conn.close()

    return await asyncio.to_thread(run)


class LedgerReads(Protocol):
    """The reports' own reads; each is one snapshot, and each that names an account
    raises ``UnknownAccount`` first when the account is not known (in that snapshot)."""

    async def require_account(self, account: str) -> None: ...

    async def usage_sums(
        self, account: str, since: datetime, until: datetime, minutes: int
    ) -> list[tuple[str, str, str, str, str, int]]:
        """(day 'YYYY-MM-DD' at UTC+``minutes``, category, action, outcome, detail, sum)
        of ``account``'s counters with ``since <= minute < until``."""
        ...

    async def key_counts(self, account: str) -> tuple[int, int]:
        """(AccessKeys, enabled AccessKeys) of ``account``."""
        ...

    async def account_page(
        self, needle: str | None, limit: int, offset: int, after: str | None
    ) -> tuple[int, list[tuple[str, int, int]]]:
        """(known accounts containing ``needle`` casefolded, that page's (account, keys,
        enabled keys) by name)."""
        ...

    async def pending_calls(
        self, account: str, start: datetime, end: datetime, horizon: datetime | None, seen: int
    ) -> list[CallRecord]:
        """``account``'s calls in ``[start, end)`` not settled: ``seq > seen``, or at or
        after ``horizon`` (by occurred_at, id)."""
        ...


class Ledger:
    """The rating store beside the ledger, and the reports' reads on the same ledger."""

    def __init__(self, ratings: MoneyRatingStore, reads: LedgerReads) -> None:
        self.ratings = ratings
        self.reads = reads


@asynccontextmanager
async def open_ledger(source: LedgerSource) -> AsyncIterator[Ledger]:
    if isinstance(source, SqliteStore):
        source = source.path
    if isinstance(source, (str, os.PathLike)):  # a path: the SQLite file
        from ._sqlite_reads import SqliteReads  # here: it imports read() from this module

        async with SqliteRatingStore(source, create=False) as sqlite_ratings:
            yield Ledger(sqlite_ratings, SqliteReads(source))
        return
    ratings = rating_store_for(source)  # ValueError for a ledger that keeps no plans
    # Only now: asyncpg is an optional extra, and only a PostgreSQL ledger gets here.
    from ..stores.postgresql.rating import PostgresRatingStore
    from ..stores.postgresql.report_reads import PostgresReportReads

    if not isinstance(ratings, PostgresRatingStore):  # pragma: no cover - a new backend
        raise ValueError(f"reports cannot read {source!r} yet")
    async with ratings:
        yield Ledger(ratings, PostgresReportReads(ratings))
