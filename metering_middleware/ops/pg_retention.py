"""Retention on a PostgreSQL ledger: the same rules as SQLite's (:mod:`.retention`).

Expired signature nonces always go; per-minute outcome counters older than
``counter_retention_days`` go, never one of the current or the previous billing
month (:func:`~.retention.counter_cutoff`); records, and anything billing reads, are
never touched. Deletes run in transactions of at most ``batch`` rows on a connection
of this pass's own (never the store's pool, which the writer needs).

What differs from SQLite, and why:

- **No pause between batches.** SQLite has one write lock and a busy handler that
  polls, so a long prune must step aside for the gateway's writer. PostgreSQL locks
  rows: the writer's inserts (new calls, this minute's counters, fresh nonces) never
  wait on rows a prune deletes. Batches still keep each transaction short (its WAL,
  its locks, what a hot standby replays at once).
- **A row changed while it is deleted stays.** The outer ``WHERE`` repeats the
  bound: under READ COMMITTED a delete that waited for a writer's lock re-checks the
  outer condition on the row's new version (a nonce claimed again, its expiry raised)
  and leaves it, where the subquery alone would have deleted it.
- **Counters are deleted in key order**, the order the writer upserts them in, so a
  prune and a writer replaying an old journal lock shared rows in one order and
  cannot deadlock. Nonces go in expiry order (the index the pass walks); a writer
  touches an expired nonce only when a client reuses a nonce after its window, and a
  deadlock there is detected by the server, fails one side, and is retried (the pass
  at its next interval, the writer through its journal).
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Any

from ..ledger.migrate import LedgerMissing
from ._pgconn import postgres
from .retention import PruneReport, RetentionPolicy, counter_cutoff
from .targets import PostgresTarget

__all__ = ["prune_postgres"]

_NONCES_DUE = "SELECT count(*) FROM nonces WHERE expires_ms <= $1"
_PRUNE_NONCES = (
    "DELETE FROM nonces WHERE (access_key_id, nonce) IN"
    " (SELECT access_key_id, nonce FROM nonces WHERE expires_ms <= $1"
    "  ORDER BY expires_ms LIMIT $2)"
    " AND expires_ms <= $1"
)
_COUNTERS_DUE = "SELECT count(*) FROM outcome_counts WHERE minute < $1"
_KEY = "minute, account, category, action, outcome, detail"
_PRUNE_COUNTERS = (
    f"DELETE FROM outcome_counts WHERE ({_KEY}) IN"
    f" (SELECT {_KEY} FROM outcome_counts WHERE minute < $1 ORDER BY {_KEY} LIMIT $2)"
    " AND minute < $1"
)


async def prune_postgres(
    target: PostgresTarget, now: datetime, policy: RetentionPolicy, *, dry_run: bool = False
) -> PruneReport:
    """One retention pass over the PostgreSQL ledger ``target`` names.

    ``dry_run`` counts what would go and deletes nothing (in a read-only transaction).
    ``StoreError`` on failure (``LedgerMissing`` for a database with no ledger); the
    batches committed before it stay committed (each is complete on its own).
    """
    now_ms = math.floor(now.timestamp() * 1000)
    cutoff = counter_cutoff(now, policy.counter_days)
    async with postgres(target) as (conn, where):
        if not await conn.fetchval("SELECT to_regclass('nonces') IS NOT NULL"):
            raise LedgerMissing(f"no ledger in {where} (no nonces table)")
        if dry_run:
            async with conn.transaction(readonly=True):
                nonces = int(await conn.fetchval(_NONCES_DUE, now_ms))
                counters = 0 if cutoff is None else int(await conn.fetchval(_COUNTERS_DUE, cutoff))
            return PruneReport(nonces, counters, cutoff, True, 0)
        nonces, transactions = await _in_batches(conn, _PRUNE_NONCES, now_ms, policy.batch)
        counters = 0
        if cutoff is not None:
            counters, more = await _in_batches(conn, _PRUNE_COUNTERS, cutoff, policy.batch)
            transactions += more
    return PruneReport(nonces, counters, cutoff, False, transactions)


async def _in_batches(conn: Any, sql: str, bound: object, batch: int) -> tuple[int, int]:
    """Delete in transactions of at most ``batch`` rows; (rows, transactions)."""
    total = transactions = 0
    while True:
        status: str = await conn.execute(sql, bound, batch)  # one statement: its own transaction
        deleted = int(status.rsplit(" ", 1)[-1])  # "DELETE n"
        total += deleted
        transactions += 1
        if deleted < batch:
            return total, transactions
        await asyncio.sleep(0)  # let the serving loop run between batches
