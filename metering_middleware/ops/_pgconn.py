"""One asyncpg connection to a PostgreSQL ledger, for operations (private to ``ops``).

``metering migrate``, ``prune``, the retention task and the ``memory://`` limiter's
lock each use a connection of their own, never the ledger store's pool: what they do
(DDL under a lock, long delete passes, a session lock held for a process's lifetime)
must not take a connection the writer needs, and is not the store's business.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..ledger.store import StoreError
from .targets import PostgresTarget

__all__ = ["connect", "postgres"]


async def connect(target: PostgresTarget) -> tuple[Any, str]:
    """A new connection to ``target`` and its URL without the password; a failure to
    reach it (or asyncpg missing) is a ``StoreError`` whose message holds no password."""
    try:
        import asyncpg
    except ImportError:
        raise StoreError(
            "PostgreSQL ledgers need asyncpg: pip install 'metering_middleware[postgresql]'"
        ) from None
    from ..stores.postgresql import parse_url

    options = parse_url(target.url)
    try:
        conn = await asyncpg.connect(
            options.dsn,
            timeout=options.connect_timeout,
            command_timeout=options.command_timeout,
            server_settings={"timezone": "UTC", "application_name": "metering-ops"},
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"cannot connect to ledger {options.where}: {exc}") from None
    return conn, options.where


@contextlib.asynccontextmanager
async def postgres(target: PostgresTarget) -> AsyncIterator[tuple[Any, str]]:
    """One connection for the block, closed after it; any failure to reach or use the
    database is a ``StoreError`` (exit 1 from a command), never a traceback."""
    conn, where = await connect(target)
    import asyncpg  # present: connect() succeeded

    try:
        yield conn, where
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise StoreError(f"ledger {where}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):  # a lost connection has nothing to close
            await conn.close()
