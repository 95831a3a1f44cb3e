"""One ``memory://`` limiter per PostgreSQL ledger: a session advisory lock.

A ``memory://`` limiter counts calls in its own process, so a second gateway process on
the same ledger would admit every account's full QPS again. On SQLite a lock file
beside the ledger refuses it (``MemoryLimiter(lock_path=...)``); a PostgreSQL ledger has
no file, so the process holds ``pg_try_advisory_lock(key)`` for its lifetime on a
connection of its own (never the store's pool). The key is derived from the ledger's
identity (its birth stamp, ``stores/postgresql/_migrate.py``), and advisory locks are
per database, so two ledgers never share one.

- A second process's start fails with one line naming the holder and ``redis://``.
- A process that dies (even ``kill -9``) frees the lock: its connection closes, and
  the server releases a session's locks when the session ends.
- The lock lives as long as its connection. If the connection is lost (a server
  restart, a network cut), the lock is gone too: the holder logs it and takes it
  again every ``retry_interval`` seconds; if another process took it meanwhile (it
  started while the server was back and this one not yet), the error is logged at
  each attempt and the operator has two limiters on one ledger until one stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from typing import Any

from ..ledger.store import StoreError
from ._pgconn import connect
from .targets import PostgresTarget

__all__ = ["LimiterLockHeld", "PostgresLimiterLock", "limiter_lock_key"]

log = logging.getLogger("metering_middleware.limiter")

_BIRTH = "SELECT applied_at FROM schema_migrations WHERE version = 1"
# The holder's application_name (who holds it, for the refusal), visible to every role.
_HOLDER = (
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.database = ("
    "  SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1"
)


class LimiterLockHeld(StoreError):
    """Another process holds the ledger's ``memory://`` limiter lock (one line: who, and
    the fix). A ``StoreError``: the gateway's start prints it and exits 1."""


def limiter_lock_key(birth: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of the ledger born at ``birth``."""
    digest = hashlib.sha256(f"metering memory:// limiter {birth}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLimiterLock:
    """Held from :meth:`acquire` to :meth:`release` by this process (see the module)."""

    __slots__ = ("_conn", "_key", "_regain", "_retry", "_stopping", "_target")

    def __init__(self, url: str, *, retry_interval: float = 5.0) -> None:
        self._target = PostgresTarget(url)
        self._retry = retry_interval
        self._conn: Any = None
        self._key: int | None = None
        self._regain: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def held(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed()

    async def acquire(self) -> None:
        """Take the lock; ``LimiterLockHeld`` (one line) when another process holds it,
        another ``StoreError`` when the ledger cannot be reached."""
        self._stopping = False
        conn = await self._locked()
        conn.add_termination_listener(self._lost)
        self._conn = conn

    async def release(self) -> None:
        self._stopping = True
        task, self._regain = self._regain, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing the session releases the lock
                await conn.close()

    async def _locked(self) -> Any:
        import asyncpg

        name = f"metering-limiter pid {os.getpid()} on {socket.gethostname()}"[:63]
        conn, where = await connect(self._target)
        try:
            await conn.execute("SELECT set_config('application_name', $1, false)", name)
            birth = await conn.fetchval(_BIRTH)
            if birth is None:
                raise StoreError(f"no ledger in {where} to hold the memory:// limiter's lock on")
            key = self._key = limiter_lock_key(birth.isoformat())
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                holder = await conn.fetchval(_HOLDER, (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
                raise LimiterLockHeld(
                    f"another gateway process ({holder or 'unknown'}) already limits calls "
                    f"with memory:// on this ledger ({where}, advisory lock {key}); a second "
                    "one would double every QPS limit: use limiter_url = redis://host:port/db"
                )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
                raise StoreError(f"cannot take the limiter's lock on {where}: {exc}") from None
            raise
        return conn

    def _lost(self, conn: Any) -> None:
        if self._stopping or conn is not self._conn:
            return
        log.warning("memory:// limiter: the ledger connection holding its lock was lost")
        self._regain = asyncio.get_running_loop().create_task(self._take_again())

    async def _take_again(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._retry)
            try:
                conn = await self._locked()
            except LimiterLockHeld as exc:
                log.error("memory:// limiter: %s", exc)
                continue
            except StoreError as exc:
                log.warning("memory:// limiter: lock not taken again yet: %s", exc)
                continue
            conn.add_termination_listener(self._lost)
            self._conn = conn
            log.info("memory:// limiter: lock on the ledger taken again")
            return
