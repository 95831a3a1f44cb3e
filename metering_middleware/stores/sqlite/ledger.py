"""The SQLite ledger store (WAL), its connection owned by one thread of its own.

Behaviour worth knowing before running it in production:

- **Durability.** ``synchronous="FULL"`` (the default) makes every COMMIT
  durable across power loss; ``"NORMAL"`` is durable across process crashes
  only (WAL). Strict writers should keep FULL.
- **Schema.** :meth:`SqliteStore.open` switches the file to WAL and applies the
  missing migrations in one ``BEGIN IMMEDIATE`` transaction, so several
  processes starting at once on a new file are safe (one applies, the others
  find it applied). See :mod:`metering_middleware.ledger.migrate`.
- **One transaction per write.** ``write`` inserts records (idempotent by id:
  ``ON CONFLICT(id) DO NOTHING``, which unlike ``INSERT OR IGNORE`` still fails
  on a NOT NULL violation instead of silently dropping the row) and adds the
  outcome counts (upsert-add), then commits. Any SQLite or OS failure rolls
  back and is raised as ``StoreError``.
- **Nonces.** ``write`` also appends the batch's claimed signature nonces (table
  ``nonces``, one row per claim with its expiry) in the same transaction;
  ``live_nonces`` reads them back in keyset pages at start, ``prune_nonces``
  deletes a bounded number of expired ones (the writer calls it).
- **Creating is for the first open only.** ``open()`` creates and migrates a
  missing file when the store was made with ``create=True`` (the default: a
  gateway's first start, ``metering accounts add``); with ``create=False`` it
  raises ``LedgerMissing`` instead (the CLI's read commands, so a mistyped
  path is an error, not a new empty ledger). Nothing after the first open
  ever creates a file.
- **File identity.** The store remembers the (device, inode) of the file it
  opened and the ledger's birth stamp
  (:func:`~metering_middleware.ledger.migrate.ledger_birth`). Before each operation
  and in ``check()`` it stats the path again (in the owner thread): if the file was
  removed or replaced (moved away, deleted by hand, a new file in its place),
  the open connection would go on writing into a file nobody will read, so
  every operation raises ``StoreError`` instead, with a message that says
  which. The ledger writer then journals (``/readyz`` answers 503 through
  ``check()``) and periodically calls :meth:`SqliteStore.reopen`, which
  checkpoints the old file's WAL into it, closes the connection and opens the
  path again *without creating*, and only if the file there is the same
  ledger (same birth stamp: the file moved back, or a backup of it restored).
  A missing file, an empty one or another ledger stays a store failure until
  the real file is back; then the journal is replayed into it. Records
  committed to the old file stay in the old file (wherever it was moved);
  nothing is copied between files.
- **Concurrency.** One connection per store, owned by one thread
  (:class:`._owner.OwnerThread`) that does all of the store's database and file work:
  opening and migrating, the file-identity ``stat`` before each operation, every
  transaction and read, checkpoints, closing. Nothing of it runs on the event loop. A
  whole transaction is one hand-off to that thread (measured against aiosqlite in
  ``bench/sqlite_owner_bench.py``: see ``_owner.py``). Operations are also serialised by
  an ``asyncio.Lock``, so open/close/reopen never interleave with them.
  WAL lets other processes (the CLI) read while the gateway writes. A write
  waits at most ``busy_timeout_ms`` for another process's write lock before
  failing with ``StoreError``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from ...clock import Clock, SystemClock
from ...ledger._lifecycle import OpenClose
from ...ledger._query import (
    CREDENTIAL_COLUMNS,
    Dialect,
    Filter,
    calls_page,
    count_calls_sql,
    credentials_sql,
    outcome_counts_sql,
    pages,
    summary_sql,
)
from ...ledger.codec import (
    CallRow,
    CountRow,
    NonceRow,
    count_from_row,
    count_to_row,
    credential_from_row,
    credential_to_row,
    format_time,
    nonce_from_row,
    nonce_to_row,
    parse_time,
    record_from_row,
    record_to_row,
)
from ...ledger.migrate import ledger_birth, migrate_file, rw_uri
from ...ledger.records import CallRecord, ClaimedNonce, OutcomeCount
from ...ledger.store import CallSummary, CredentialRow, StoreError
from ._owner import OwnerThread

__all__ = ["SqliteStore"]

_log = logging.getLogger("metering_middleware.ledger")

_INSERT_CALL = (
    "INSERT INTO calls (id, request_id, account, access_key_id, category, action, version,"
    " item, occurred_at, status, error_code, latency_ms, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_ADD_COUNT = (
    "INSERT INTO outcome_counts (minute, account, category, action, outcome, detail, count)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (minute, account, category, action, outcome, detail)"
    " DO UPDATE SET count = count + excluded.count"
)
# Appended, never upserted: a key on the (random) nonce would cost a page per row.
_HOLD_NONCE = "INSERT INTO nonces (access_key_id, nonce, account, expires_ms) VALUES (?, ?, ?, ?)"
_LIVE_NONCES = (
    "SELECT seq, access_key_id, nonce, account, expires_ms FROM nonces"
    " WHERE seq > ? AND expires_ms > ? ORDER BY seq LIMIT ?"
)
_PRUNE_NONCES = (
    "DELETE FROM nonces WHERE seq IN"
    " (SELECT seq FROM nonces WHERE expires_ms <= ? ORDER BY expires_ms LIMIT ?)"
)
# Times as ISO text, ? placeholders, LIMIT -1 for all (see _query).
_SQL = Dialect(numbered=False, time=format_time, text=str, no_limit=-1)
_SQLITE_FAILURES = (sqlite3.Error, OSError, ValueError)  # ValueError: bad parameters
_T = TypeVar("_T")


class SqliteStore(OpenClose):
    """A :class:`~metering_middleware.ledger.store.LedgerStore` on one SQLite file.

    ``writes`` counts committed write transactions (tests and metrics use it to
    see group commit at work).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 2000,
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if busy_timeout_ms < 0:
            raise ValueError("busy_timeout_ms must be >= 0")
        self._path = Path(path)
        self._synchronous = synchronous
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._clock: Clock = clock or SystemClock()
        self._owner: OwnerThread | None = None  # from the first open() to close()
        # Touched by the owner thread only:
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._create = create
        self._birth: str | None = None  # the ledger this store belongs to, once opened
        self._opened = False  # between open() and close(), even while the file is away
        self._lock = asyncio.Lock()
        self.writes = 0
        #: Migration versions applied by the last ``open()`` (empty if already current).
        self.applied_migrations: tuple[int, ...] = ()

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r}, synchronous={self._synchronous!r})"

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        async with self._lock:
            fresh = self._owner is None
            if fresh:
                self._owner = OwnerThread(f"ledger-sqlite:{self._path.name}")
            try:
                applied = await self._call(self._open_sync)
            except BaseException:
                if fresh and not self._opened:  # nothing to keep the thread for
                    await self._stop()
                raise
            if applied is not None:
                self.applied_migrations = applied
            self._opened = True

    async def close(self) -> None:
        async with self._lock:
            self._opened = False
            await self._stop()

    async def reopen(self) -> None:
        """Close and open the path again: never creating, and only the same ledger."""
        async with self._lock:
            if self._owner is None:
                self._owner = OwnerThread(f"ledger-sqlite:{self._path.name}")
            await self._call(self._close_sync)
            self._opened = True
            applied = await self._call(self._open_sync)
            self.applied_migrations = applied or ()

    async def check(self) -> None:
        async with self._lock:
            try:
                await self._call(self._check_sync)
            except _SQLITE_FAILURES as exc:
                raise StoreError(f"ledger store unreachable: {exc}") from exc

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in the owner thread; callers hold ``self._lock``."""
        owner = self._owner
        if owner is None:
            raise StoreError("ledger store is not open")
        return await owner.call(fn, *args)

    async def _stop(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            await owner.stop(self._close_sync)

    # -- in the owner thread ---------------------------------------------------------------

    def _open_sync(self) -> tuple[int, ...] | None:
        """Open (and migrate) the file; the versions applied, None if it was open."""
        if self._db is not None:
            return None
        # Only the first open may create the file: once this store has held a ledger, a
        # missing file is that ledger gone (moved, deleted), not a ledger to start.
        first = self._birth is None
        applied = migrate_file(
            self._path,
            busy_timeout_ms=self._busy_timeout_ms,
            synchronous=self._synchronous,
            create=first and self._create,
        )
        db: sqlite3.Connection | None = None
        try:
            # Autocommit mode: transactions are explicit BEGIN IMMEDIATE ... COMMIT. The
            # rw URI: should the file vanish after the migration, this fails, not creates.
            # check_same_thread stays on: only the owner thread may use it.
            db = sqlite3.connect(rw_uri(self._path), uri=True, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            birth = ledger_birth(db)
            stat = os.stat(self._path)
        except _SQLITE_FAILURES as exc:
            if db is not None:
                _close_quietly(db)
            raise StoreError(f"cannot open ledger file {str(self._path)!r}: {exc}") from exc
        if not first and birth != self._birth:
            _close_quietly(db)
            raise StoreError(
                f"ledger file {str(self._path)!r} is a different ledger (created {birth}, "
                f"not {self._birth}): not writing into it; put the real ledger file back"
            )
        self._db = db
        self._identity = (stat.st_dev, stat.st_ino)
        self._birth = birth
        return tuple(applied)

    def _close_sync(self) -> None:
        db, moved = self._db, self._file_changed()
        self._db = self._identity = None
        if db is None:
            return
        if moved:
            # SQLite does not checkpoint on close when the file was moved or deleted, and
            # leaves its WAL under the *path's* name: commits still in it would be lost
            # with the old file, and a new file at the path could pick up foreign frames.
            # Checkpointing through the open connection puts them into the old file (where
            # it went, if it still exists) and empties the WAL.
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except _SQLITE_FAILURES:
                _log.warning("could not checkpoint the moved ledger file", exc_info=True)
        _close_quietly(db)

    def _check_sync(self) -> None:
        self._connection().execute("SELECT 1 FROM schema_migrations LIMIT 1").fetchall()

    def _file_changed(self) -> bool:
        return self._file_problem() is not None

    def _file_problem(self) -> str | None:
        """Why the file at the path is not the one we opened, or None if it is."""
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return f"ledger file {str(self._path)!r} is gone (moved or removed)"
        except OSError as exc:
            return f"ledger file {str(self._path)!r} cannot be checked: {exc}"
        if (stat.st_dev, stat.st_ino) != self._identity:
            return f"ledger file {str(self._path)!r} was replaced by another file"
        return None

    def _connection(self) -> sqlite3.Connection:
        """The open connection, after checking the file is still the one we opened."""
        db = self._db
        if db is None or self._identity is None:
            if self._opened and self._birth is not None:  # the real file is not back yet
                raise StoreError(self._file_problem() or "ledger file is not open")
            raise StoreError("ledger store is not open")
        problem = self._file_problem()
        if problem is not None:
            raise StoreError(problem)
        return db

    def _write_sync(
        self, rows: list[CallRow], count_rows: list[CountRow], nonce_rows: list[NonceRow]
    ) -> None:
        _write_transaction(self._connection(), rows, count_rows, nonce_rows)

    def _prune_sync(self, cutoff_ms: int, limit: int) -> int:
        return _prune_transaction(self._connection(), cutoff_ms, limit)

    def _execute_sync(self, sql: str, params: Sequence[Any]) -> int:
        cursor = self._connection().execute(sql, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def _fetch_sync(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql, params).fetchall()

    # -- writes ----------------------------------------------------------------------------

    async def write(
        self,
        records: Sequence[CallRecord],
        counts: Sequence[OutcomeCount],
        nonces: Sequence[ClaimedNonce] = (),
    ) -> None:
        if not records and not counts and not nonces:
            return
        recorded_at = format_time(self._clock.now())
        rows = [record_to_row(r, recorded_at) for r in records]
        count_rows = [count_to_row(c) for c in counts]
        nonce_rows = [nonce_to_row(n) for n in nonces]
        async with self._lock:
            try:
                # The whole transaction in one hand-off to the owner thread: each hand-off
                # (queue, wake-up, call_soon_threadsafe) costs more CPU than the inserts of
                # a small batch (one per statement, as aiosqlite's API does, cost ~100-150
                # µs more per commit).
                await self._call(self._write_sync, rows, count_rows, nonce_rows)
            except _SQLITE_FAILURES as exc:
                raise StoreError(f"ledger write failed: {exc}") from exc
            self.writes += 1

    async def add_credential(self, row: CredentialRow) -> None:
        async with self._lock:
            try:
                await self._call(
                    self._execute_sync,
                    f"INSERT INTO credentials ({CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    credential_to_row(row),
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"AccessKeyId {row.access_key_id!r} already exists") from exc
            except _SQLITE_FAILURES as exc:
                raise StoreError(f"cannot add credential: {exc}") from exc

    async def set_credential_enabled(
        self, access_key_id: str, enabled: bool, when: datetime
    ) -> bool:
        # Disabling twice keeps the first disabled_at: it is when the key stopped working.
        sql = (
            "UPDATE credentials SET enabled = ?,"
            " disabled_at = CASE WHEN ? THEN NULL ELSE COALESCE(disabled_at, ?) END"
            " WHERE access_key_id = ?"
        )
        params = (1 if enabled else 0, 1 if enabled else 0, format_time(when), access_key_id)
        async with self._lock:
            try:
                changed = await self._call(self._execute_sync, sql, params)
            except _SQLITE_FAILURES as exc:
                raise StoreError(f"cannot update credential: {exc}") from exc
        return changed > 0

    async def prune_nonces(self, now: float, limit: int) -> int:
        async with self._lock:
            try:
                return await self._call(self._prune_sync, math.floor(now * 1000), limit)
            except _SQLITE_FAILURES as exc:
                raise StoreError(f"cannot prune nonces: {exc}") from exc

    async def live_nonces(
        self, now: float, *, chunk: int = 10_000
    ) -> AsyncIterator[list[ClaimedNonce]]:
        # Keyset pages in insertion order: each page is one short read under the lock,
        # so the writer commits between pages however many nonces there are.
        after = 0
        cutoff = math.floor(now * 1000)
        while True:
            rows = await self._fetch(_LIVE_NONCES, (after, cutoff, chunk))
            if rows:
                yield [nonce_from_row(row[1:]) for row in rows]
            if len(rows) < chunk:
                return
            after = rows[-1][0]

    # -- reads -----------------------------------------------------------------------------

    async def calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[CallRecord]:
        sql, args = calls_page(_SQL, Filter(account, since, until), None, limit)
        return [record_from_row(row) for row in await self._fetch(sql, args)]

    async def iter_calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        page: int = 1000,
    ) -> AsyncIterator[list[CallRecord]]:
        where = Filter(account, since, until)

        async def fetch(after: tuple[Any, Any] | None, size: int) -> list[tuple[Any, ...]]:
            return await self._fetch(*calls_page(_SQL, where, after, size))

        async for rows in pages(fetch, _call_key, record_from_row, limit=limit, page=page):
            yield rows

    async def count_calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        rows = await self._fetch(*count_calls_sql(_SQL, Filter(account, since, until)))
        return int(rows[0][0])

    async def summary(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[CallSummary]:
        rows = await self._fetch(*summary_sql(_SQL, Filter(account, since, until)))
        return [_summary_from_row(row) for row in rows]

    async def outcome_counts(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[OutcomeCount]:
        rows = await self._fetch(*outcome_counts_sql(_SQL, Filter(account, since, until)))
        return [count_from_row(row) for row in rows]

    async def list_credentials(self, *, account: str | None = None) -> list[CredentialRow]:
        rows = await self._fetch(*credentials_sql(_SQL, account))
        return [credential_from_row(row) for row in rows]

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._lock:
            try:
                return await self._call(self._fetch_sync, sql, params)
            except _SQLITE_FAILURES as exc:
                raise StoreError(f"ledger read failed: {exc}") from exc


def _write_transaction(
    db: sqlite3.Connection,
    rows: list[CallRow],
    count_rows: list[CountRow],
    nonce_rows: list[NonceRow],
) -> None:
    """One write transaction, run in the connection's thread; rolled back on any failure.

    The nonces claimed by a batch's calls commit with its records (the writer puts a
    call's nonce, claimed at admission, in the batch of its record or an earlier one).
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        if nonce_rows:
            db.executemany(_HOLD_NONCE, nonce_rows)
        if rows:
            db.executemany(_INSERT_CALL, rows)
        if count_rows:
            db.executemany(_ADD_COUNT, count_rows)
        db.execute("COMMIT")
    except BaseException:
        _rollback_quietly(db, "ledger write")
        raise


def _prune_transaction(db: sqlite3.Connection, cutoff_ms: int, limit: int) -> int:
    """Delete up to ``limit`` expired nonces, earliest first (bounded work per call)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        deleted = db.execute(_PRUNE_NONCES, (cutoff_ms, limit)).rowcount
        db.execute("COMMIT")
    except BaseException:
        _rollback_quietly(db, "nonce prune")
        raise
    return int(deleted)


def _rollback_quietly(db: sqlite3.Connection, what: str) -> None:
    # SQLite may already have rolled back (some I/O errors do); the original error matters.
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except _SQLITE_FAILURES:
            _log.debug("rollback after a failed %s failed too", what, exc_info=True)


def _call_key(row: tuple[Any, ...]) -> tuple[Any, Any]:
    return row[8], row[0]  # occurred_at, id as stored: the keyset cursor


def _summary_from_row(row: tuple[Any, ...]) -> CallSummary:
    return CallSummary(
        account=row[0],
        category=row[1],
        action=row[2],
        item=row[3],
        calls=int(row[4]),
        first=parse_time(row[5]),
        last=parse_time(row[6]),
    )


def _close_quietly(db: sqlite3.Connection) -> None:
    try:
        db.close()
    except _SQLITE_FAILURES:
        _log.warning("closing the ledger connection failed", exc_info=True)
