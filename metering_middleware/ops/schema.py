"""The ledger's schema version: read it, and bring it to the version this code knows.

Both run in the caller's thread (plain ``sqlite3``): the CLI calls them through
``asyncio.to_thread``. :func:`migrate` is :func:`~..ledger.migrate.migrate_file`, the
same migration every store open runs, inside one ``BEGIN IMMEDIATE`` transaction: two
processes migrating one file at once are safe (the first applies, the second finds it
applied), and the versions reported are the ones *this* call applied, read in that
transaction, so "from" and "to" are true whoever won.

:func:`status` never writes: it opens the file read-only and reads
``schema_migrations``, so ``metering migrate --check`` is safe on a live ledger and on a
backup nobody should touch.

On PostgreSQL both run the store's own migration code over one asyncpg connection
(``asyncio.run`` in the calling thread): :func:`migrate` is what a gateway's start
applies, under the same advisory lock; :func:`status` only reads ``schema_migrations``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass

from ..ledger.migrate import (
    SchemaTooNew,
    connect_existing,
    load_migrations,
    migrate_file,
)
from ..ledger.store import StoreError
from ._pgconn import postgres
from .targets import LedgerTarget, PostgresTarget

__all__ = ["SchemaStatus", "migrate", "status"]


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    #: The highest version applied to the ledger (0: a new file).
    current: int
    #: The highest version this code knows.
    target: int
    #: Versions this code would apply (none: up to date).
    pending: tuple[int, ...]
    #: Versions in the ledger this code does not know (a newer release migrated it).
    unknown: tuple[int, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return not self.pending and not self.unknown


def status(target: LedgerTarget) -> SchemaStatus:
    """The ledger's schema against this code's migrations, read without writing."""
    if isinstance(target, PostgresTarget):
        return asyncio.run(_postgres_status(target))
    known = {m.version for m in load_migrations()}
    conn = connect_existing(target.path, timeout=target.busy_timeout_ms / 1000)
    try:
        conn.execute("PRAGMA query_only = 1")  # a check never writes, whatever it finds
        done = {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the schema of {str(target.path)!r}: {exc}") from exc
    finally:
        conn.close()
    return SchemaStatus(
        current=max(done, default=0),
        target=max(known, default=0),
        pending=tuple(sorted(known - done)),
        unknown=tuple(sorted(done - known)),
    )


def migrate(target: LedgerTarget, *, create: bool = False) -> tuple[int, int, tuple[int, ...]]:
    """Apply the missing migrations; ``(from, to, applied)`` as this call found them.

    ``create=False`` (the default) refuses a missing file (``LedgerMissing``) and one
    that is not a ledger (``NotALedger``): a mistyped path is an error, not a new ledger.
    ``SchemaTooNew`` when a newer release migrated the file (this code must not run it).
    """
    if isinstance(target, PostgresTarget):
        return asyncio.run(_postgres_migrate(target, create=create))
    before = None if create else status(target)
    if before is not None and before.unknown:
        raise SchemaTooNew(
            f"ledger schema has version {max(before.unknown)}, newer than this code knows "
            f"({before.target}): upgrade metering_middleware"
        )
    applied = tuple(
        migrate_file(target.path, busy_timeout_ms=target.busy_timeout_ms, create=create)
    )
    to = max(m.version for m in load_migrations())
    # What this call applied, read inside its own transaction: a concurrent migrator
    # that won the lock leaves nothing applied here, and "from" is then "to".
    start = applied[0] - 1 if applied else to
    return start, to, applied


async def _postgres_status(target: PostgresTarget) -> SchemaStatus:
    from ..stores.postgresql._migrate import applied_versions
    from ..stores.postgresql._migrate import load_migrations as pg_migrations

    async with postgres(target) as (conn, where):
        done = await applied_versions(conn, where=where)
    known = {m.version for m in pg_migrations()}
    return SchemaStatus(
        current=max(done, default=0),
        target=max(known, default=0),
        pending=tuple(sorted(known - done)),
        unknown=tuple(sorted(done - known)),
    )


async def _postgres_migrate(
    target: PostgresTarget, *, create: bool
) -> tuple[int, int, tuple[int, ...]]:
    # The store's own migration step (the advisory lock, the refusal of an empty or
    # foreign database without --create, of a newer schema): what a gateway's start runs.
    from ..stores.postgresql._migrate import apply_migrations
    from ..stores.postgresql._migrate import load_migrations as pg_migrations

    async with postgres(target) as (conn, where):
        applied = tuple(await apply_migrations(conn, create=create, where=where))
    to = max(m.version for m in pg_migrations())
    return (applied[0] - 1 if applied else to), to, applied
