"""Versioned schema migrations for the SQLite ledger.

Migrations are the ``NNNN_name.sql`` files in ``migrations/`` (shipped as
package data), applied in version order. Each open runs them inside one
``BEGIN IMMEDIATE`` transaction: the first of several processes starting at
once on the same file takes the write lock and applies what is missing; the
others wait on the busy timeout, then find everything applied and do nothing.
SQLite's DDL is transactional, so a migration is applied completely or not at
all. Applied versions are rows of ``schema_migrations`` (``PRAGMA user_version``
mirrors the highest one for outside tools).

The functions here are synchronous (plain ``sqlite3``): the async store runs
them in a thread before it opens its own connection, and a CLI can call
:func:`migrate_file` directly.

Creating is a decision, not a side effect of opening: ``migrate_file(path,
create=False)`` (and :func:`connect_existing`) refuse a missing file
(:class:`LedgerMissing`) and a file that is not a ledger (:class:`NotALedger`)
instead of making a new empty database at a mistyped or vanished path.

A ledger's identity is :func:`ledger_birth`: when its first migration was
applied (microsecond UTC text in ``schema_migrations``). It is written once,
when the file is created, and travels with every copy of the file, so a
store can tell "the same ledger again" (moved back, restored from a backup of
it) from "some other database at the same path".
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from os import PathLike
from pathlib import Path
from urllib.parse import quote

from .codec import format_time
from .store import StoreError

__all__ = [
    "LedgerMissing",
    "Migration",
    "NotALedger",
    "SchemaTooNew",
    "apply_migrations",
    "connect_existing",
    "ledger_birth",
    "load_migrations",
    "migrate_file",
    "pending",
    "rw_uri",
    "split_statements",
]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaTooNew(StoreError):
    """The file was migrated by a newer version of this package."""


class LedgerMissing(StoreError):
    """No file at the ledger's path, and this open may not create one."""


class NotALedger(StoreError):
    """A file at the ledger's path that no ledger migration ever touched."""


_BIRTH_SQL = "SELECT applied_at FROM schema_migrations WHERE version = 1"
_HAS_SCHEMA_SQL = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(package: str = "metering_middleware.ledger") -> tuple[Migration, ...]:
    """The migrations packaged in ``package``'s ``migrations/`` folder (the SQLite ledger's
    by default; each store backend has its own), in version order; versions must run
    1, 2, 3, ..."""
    folder = resources.files(package) / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match is not None:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"ledger migrations must be numbered 1..n without gaps, got {versions}")
    return tuple(found)


def pending(
    migrations: tuple[Migration, ...], done: set[int], *, where: str | None = None
) -> list[Migration]:
    """The migrations not in ``done`` (the versions applied), in version order: the plan
    of every store's apply step; ``SchemaTooNew`` when ``done`` holds a version this code
    does not know (``where`` names the database in the message)."""
    known = {m.version for m in migrations}
    if done - known:
        schema = "ledger schema" if where is None else f"ledger schema in {where}"
        raise SchemaTooNew(
            f"{schema} has version {max(done)}, newer than this code "
            f"knows ({max(known, default=0)}): upgrade metering_middleware"
        )
    return [m for m in migrations if m.version not in done]


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements.

    ``executescript`` would COMMIT the surrounding ``BEGIN IMMEDIATE`` first,
    so migrations run statement by statement; SQLite's own tokenizer
    (``complete_statement``) decides where a statement ends, so semicolons in
    strings, comments and trigger bodies are handled.
    """
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    leftover = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {leftover[0]!r}")
    return statements


def apply_migrations(
    conn: sqlite3.Connection,
    migrations: tuple[Migration, ...] | None = None,
    *,
    applied_at: str | None = None,
) -> list[int]:
    """Apply the missing migrations in one immediate transaction; return their versions.

    ``conn`` must be in autocommit mode (``isolation_level=None``) with a busy
    timeout set, so a concurrent starter waits for the lock instead of failing.
    """
    if migrations is None:
        migrations = load_migrations()
    if conn.isolation_level is not None:
        raise ValueError("apply_migrations needs a connection with isolation_level=None")
    if applied_at is None:
        from datetime import UTC, datetime

        applied_at = format_time(datetime.now(UTC))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        applied: list[int] = []
        for migration in pending(migrations, done):
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, applied_at),
            )
            applied.append(migration.version)
        if applied:
            # PRAGMA takes no parameters; the value is an int we produced.
            conn.execute(f"PRAGMA user_version = {max(m.version for m in migrations)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied


def connect_existing(path: str | PathLike[str], *, timeout: float = 5.0) -> sqlite3.Connection:
    """An autocommit connection to the ledger file at ``path``, which must exist.

    Opened with ``mode=rw``, so SQLite itself never creates the file (a plain
    ``connect`` would, even between our check and the open). The file must
    already be a ledger (``NotALedger`` otherwise). Extra ``sqlite3.connect``
    options are the caller's to set afterwards (PRAGMAs).
    """
    if not os.path.exists(path):
        raise LedgerMissing(f"no ledger file at {str(path)!r}")
    try:
        conn = sqlite3.connect(
            rw_uri(path),
            uri=True,
            isolation_level=None,
            timeout=timeout,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open ledger file {str(path)!r}: {exc}") from exc
    try:
        if conn.execute(_HAS_SCHEMA_SQL).fetchone() is None:
            raise NotALedger(f"{str(path)!r} is not a ledger file (no schema_migrations table)")
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):  # e.g. "file is not a database"
            raise NotALedger(f"{str(path)!r} is not a ledger file: {exc}") from exc
        raise
    return conn


def ledger_birth(conn: sqlite3.Connection) -> str | None:
    """The ledger's identity: when its first migration was applied (None: not a ledger)."""
    try:
        row = conn.execute(_BIRTH_SQL).fetchone()
    except sqlite3.OperationalError:  # no schema_migrations table
        return None
    return None if row is None else str(row[0])


def rw_uri(path: str | PathLike[str]) -> str:
    """A ``file:`` URI for ``path`` that SQLite opens read-write but never creates."""
    # An absolute path keeps a relative one from being read as a URI authority.
    return "file:" + quote(str(Path(path).absolute())) + "?mode=rw"


def migrate_file(
    path: str | PathLike[str],
    *,
    busy_timeout_ms: int = 5000,
    synchronous: str = "FULL",
    create: bool = True,
) -> list[int]:
    """Create or upgrade the ledger file at ``path``; return the versions applied here.

    With ``create=False`` a missing file is ``LedgerMissing`` and a file that is
    not a ledger (empty, another application's database) is ``NotALedger``:
    only a ledger that exists is upgraded. Also switches the file to WAL (a
    property of the file, kept across opens). SQLite errors are raised as
    ``StoreError``.
    """
    if create:
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open ledger file {str(path)!r}: {exc}") from exc
    else:
        conn = connect_existing(path, timeout=busy_timeout_ms / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = _enable_wal(conn, busy_timeout_ms / 1000)
        if mode != "wal":
            raise StoreError(f"ledger file {str(path)!r} refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {_synchronous(synchronous)}")
        return apply_migrations(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot migrate ledger file {str(path)!r}: {exc}") from exc
    finally:
        conn.close()


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch the file to WAL, waiting out concurrent starters.

    Changing the journal mode needs an exclusive lock, and SQLite does not call
    the busy handler for it: a second process creating the same new file gets
    "database is locked" at once. Retry until the busy timeout instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.002)


def _synchronous(value: str) -> str:
    upper = value.upper()
    if upper not in {"FULL", "NORMAL", "EXTRA"}:
        raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {value!r}")
    return upper
