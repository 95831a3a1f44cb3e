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
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from os import PathLike

from .codec import format_time
from .store import StoreError

__all__ = [
    "Migration",
    "SchemaTooNew",
    "apply_migrations",
    "load_migrations",
    "migrate_file",
    "split_statements",
]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaTooNew(StoreError):
    """The file was migrated by a newer version of this package."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> tuple[Migration, ...]:
    """The packaged migrations in version order; versions must run 1, 2, 3, ..."""
    folder = resources.files("metering_middleware.ledger") / "migrations"
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
        known = {m.version for m in migrations}
        if done - known:
            raise SchemaTooNew(
                f"ledger schema has version {max(done)}, newer than this code knows "
                f"({max(known, default=0)}): upgrade metering_middleware"
            )
        applied: list[int] = []
        for migration in migrations:
            if migration.version in done:
                continue
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, applied_at),
            )
            applied.append(migration.version)
        if applied:
            # PRAGMA takes no parameters; the value is an int we produced.
            conn.execute(f"PRAGMA user_version = {max(known)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied


def migrate_file(
    path: str | PathLike[str],
    *,
    busy_timeout_ms: int = 5000,
    synchronous: str = "FULL",
) -> list[int]:
    """Create or upgrade the ledger file at ``path``; return the versions applied here.

    Also switches the file to WAL (a property of the file, kept across opens).
    SQLite errors are raised as ``StoreError``.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open ledger file {str(path)!r}: {exc}") from exc
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
