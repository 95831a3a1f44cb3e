"""Versioned schema migrations for the PostgreSQL stores (private).

Migrations are the ``NNNN_name.sql`` files in ``migrations/`` (package data), applied
in version order, all in one transaction that first takes a transaction-scoped
advisory lock (``pg_advisory_xact_lock``): of several processes starting at once on a
fresh database, the first applies what is missing, the others wait on the lock and
then find everything applied. PostgreSQL's DDL is transactional, so a migration is
applied completely or not at all, and the lock is released by the COMMIT (or by the
server when a starter dies).

A ledger's identity is the ``applied_at`` of its first migration (its birth), as on
SQLite: a store remembers it and refuses a database that is another ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ...ledger.migrate import LedgerMissing, Migration, NotALedger, pending
from ...ledger.migrate import load_migrations as _load_migrations

__all__ = [
    "MIGRATION_LOCK",
    "Conn",
    "Migration",
    "applied_versions",
    "apply_migrations",
    "ledger_birth",
    "load_migrations",
]

#: A connection of its own or one lent by a pool.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

#: The advisory lock key of schema migrations (an arbitrary constant, 'mmledger' in hex).
MIGRATION_LOCK = 0x6D6D_6C65_6467_6572

_CREATE_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
)
_HAS_VERSIONS = "SELECT to_regclass('schema_migrations') IS NOT NULL"
_HAS_TABLES = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables"
    " WHERE schemaname = ANY (current_schemas(false)))"
)
_BIRTH = "SELECT applied_at FROM schema_migrations WHERE version = 1"


def load_migrations() -> tuple[Migration, ...]:
    """The PostgreSQL store's packaged migrations, in version order (numbered 1..n)."""
    return _load_migrations("metering_middleware.stores.postgresql")


async def apply_migrations(
    conn: Conn,
    *,
    create: bool,
    where: str,
    migrations: tuple[Migration, ...] | None = None,
) -> list[int]:
    """Apply the missing migrations under the advisory lock; return their versions.

    ``create=False`` refuses a database with no ledger in it: ``LedgerMissing`` when it
    is empty, ``NotALedger`` when it holds other tables. ``where`` names the database
    in messages (never its password).
    """
    if migrations is None:
        migrations = load_migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        if not await conn.fetchval(_HAS_VERSIONS):
            if not create:
                await _refuse(conn, where)
            await conn.execute(_CREATE_VERSIONS)
        done = {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied: list[int] = []
        for migration in pending(migrations, done, where=where):
            await conn.execute(migration.sql)  # simple protocol: a script of statements
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
    return applied


async def applied_versions(conn: Conn, *, where: str) -> set[int]:
    """The versions applied to the ledger, read without writing (``metering migrate
    --check``): ``LedgerMissing`` for an empty database, ``NotALedger`` for another's."""
    if not await conn.fetchval(_HAS_VERSIONS):
        await _refuse(conn, where)
    return {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_migrations")}


async def _refuse(conn: Conn, where: str) -> NoReturn:
    """A database without ``schema_migrations``: empty, or somebody else's."""
    if await conn.fetchval(_HAS_TABLES):
        raise NotALedger(f"{where} is not a ledger (no schema_migrations table)")
    raise LedgerMissing(f"no ledger in {where} (an empty database)")


async def ledger_birth(conn: Conn) -> datetime | None:
    """When the ledger's first migration was applied (None: not a ledger)."""
    if not await conn.fetchval(_HAS_VERSIONS):
        return None
    value = await conn.fetchval(_BIRTH)
    return value if isinstance(value, datetime) else None
