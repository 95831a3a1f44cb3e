"""One read of the ledger file for one report (private).

Each report opens the rating store (plans, balances, bills: rating's own reads) and,
for what rating has no read for (usage counters, account lists, the calls not yet
settled), a plain ``sqlite3`` connection of its own. Both run in worker threads: no
SQLite call ever runs on the event loop. Nothing here writes; the file must exist
(``LedgerMissing`` otherwise: a mistyped path is an error, not a new empty ledger).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from ..ledger.migrate import connect_existing
from ..ledger.store import StoreError
from ..stores.sqlite.rating import SqliteRatingStore

__all__ = ["Ledger", "LedgerPath", "open_ledger", "read"]

LedgerPath = str | os.PathLike[str]
_T = TypeVar("_T")


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


class Ledger:
    """The rating store on the file, and :func:`read` on the same path."""

    def __init__(self, path: LedgerPath, ratings: SqliteRatingStore) -> None:
        self.path = path
        self.ratings = ratings

    async def read(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await read(self.path, fn, *args)


@asynccontextmanager
async def open_ledger(path: LedgerPath) -> AsyncIterator[Ledger]:
    async with SqliteRatingStore(path, create=False) as ratings:
        yield Ledger(path, ratings)
