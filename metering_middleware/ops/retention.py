"""Retention: what the ledger may forget, and a background task that makes it forget.

Three kinds of working data grow without bound; each has its own rule:

- **Expired signature nonces** (table ``nonces``). A nonce is held until its
  signature's timestamp leaves the signature window; after that the timestamp
  check refuses the replay by itself, so an expired row protects nothing. Always
  pruned (no setting): the ledger writer already prunes a few after each batch
  that held nonces; this pass also clears them on a quiet gateway and on a ledger
  no gateway runs on (``metering prune``).
- **Journals** hold nothing once replayed: the writer empties its journal (to zero
  bytes) right after the store took everything in it, and a journal that is not
  empty holds records the ledger does not have yet. Retention never touches one.
- **Per-minute outcome counters** (table ``outcome_counts``): every call by outcome,
  the source of usage reports (CLI, admin API, tenant view, web page) and of
  reconciliation's free and unanswered counts. Kept forever unless
  ``counter_retention_days`` is set; then rows older than that many days go, but
  never a row of the current or the previous billing month (UTC+8), whatever the
  setting, so this month's and last month's usage and reconciliation stay whole.
  Settlement, balances and bills never read counters (they read the records,
  which retention never deletes).

Deletes run in bounded batches, one short ``BEGIN IMMEDIATE`` transaction each, with
a pause between them four times as long as the last one took (see ``_in_batches``), so
a large prune never holds the write lock for long and the gateway's writer (and any
other process) commits between batches. All database work runs in a worker thread
with a connection of its own; nothing runs on the serving loop. Time is the
injected clock's: its wall time decides what has expired, its monotonic reading
when the next pass is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ..clock import Clock
from ..ledger.codec import format_time
from ..ledger.migrate import connect_existing
from ..ledger.store import StoreError
from ..rating.months import Month
from .targets import PostgresTarget

__all__ = [
    "BackgroundRetention",
    "PruneReport",
    "RetentionPolicy",
    "RetentionStats",
    "counter_cutoff",
    "prune_ledger_file",
]

log = logging.getLogger("metering_middleware.retention")

#: The most rows one delete transaction removes (the write lock is held that long).
DEFAULT_BATCH = 1000

#: Pause between delete transactions: this many times the last one's duration ...
_YIELD = 4.0
#: ... and at least this long (seconds).
_MIN_PAUSE = 0.01

_NONCES_DUE = "SELECT count(*) FROM nonces WHERE expires_ms <= ?"
_PRUNE_NONCES = (
    "DELETE FROM nonces WHERE seq IN"
    " (SELECT seq FROM nonces WHERE expires_ms <= ? ORDER BY expires_ms LIMIT ?)"
)
_COUNTERS_DUE = "SELECT count(*) FROM outcome_counts WHERE minute < ?"
# outcome_counts is WITHOUT ROWID: rows are named by their primary key.
_PRUNE_COUNTERS = (
    "DELETE FROM outcome_counts WHERE (minute, account, category, action, outcome, detail) IN"
    " (SELECT minute, account, category, action, outcome, detail FROM outcome_counts"
    "  WHERE minute < ? ORDER BY minute LIMIT ?)"
)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    #: Days of per-minute counters kept (0: forever). The current and the previous
    #: billing month are kept whatever this says.
    counter_days: int = 0
    #: Rows per delete transaction.
    batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        if isinstance(self.counter_days, bool) or not isinstance(self.counter_days, int):
            raise ValueError("counter_retention_days: must be a whole number of days")
        if self.counter_days < 0:
            raise ValueError("counter_retention_days: must be 0 (keep forever) or more")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError("retention_batch: must be a positive integer")


@dataclass(frozen=True, slots=True)
class PruneReport:
    nonces: int  # expired nonces deleted (or, dry run, that would be)
    counters: int  # counter rows deleted (or that would be)
    counter_cutoff: datetime | None  # counters before this go; None: counters kept
    dry_run: bool = False
    #: Delete transactions committed (each removed at most ``batch`` rows).
    transactions: int = 0


def counter_cutoff(now: datetime, days: int) -> datetime | None:
    """Counters of minutes before this instant may go (None: ``days`` is 0, keep all).

    ``now - days``, but never later than the start of the previous billing month.
    """
    if days == 0:
        return None
    floor = Month.of(now).shift(-1).start
    return min(now - timedelta(days=days), floor).replace(second=0, microsecond=0)


def prune_ledger_file(
    path: str | os.PathLike[str],
    now: datetime,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    busy_timeout_ms: int = 5000,
) -> PruneReport:
    """One retention pass over the SQLite ledger at ``path`` (synchronous: a thread's).

    ``dry_run`` counts what would go and deletes nothing. ``StoreError`` on failure;
    the batches committed before it stay committed (each is complete on its own).
    """
    now_ms = math.floor(now.timestamp() * 1000)
    cutoff = counter_cutoff(now, policy.counter_days)
    conn = connect_existing(Path(path), timeout=busy_timeout_ms / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if dry_run:
            conn.execute("PRAGMA query_only = 1")
            nonces = _count(conn, _NONCES_DUE, now_ms)
            counters = 0 if cutoff is None else _count(conn, _COUNTERS_DUE, format_time(cutoff))
            transactions = 0
        else:
            nonces, transactions = _in_batches(conn, _PRUNE_NONCES, now_ms, policy.batch)
            counters = 0
            if cutoff is not None:
                counters, more = _in_batches(
                    conn, _PRUNE_COUNTERS, format_time(cutoff), policy.batch
                )
                transactions += more
    except sqlite3.Error as exc:
        raise StoreError(f"retention pass on {str(path)!r} failed: {exc}") from exc
    finally:
        conn.close()
    return PruneReport(nonces, counters, cutoff, dry_run, transactions)


def _count(conn: sqlite3.Connection, sql: str, bound: object) -> int:
    return int(conn.execute(sql, (bound,)).fetchone()[0])


def _in_batches(conn: sqlite3.Connection, sql: str, bound: object, batch: int) -> tuple[int, int]:
    """Delete in transactions of at most ``batch`` rows; (rows, transactions).

    Between two transactions the lock is left free for ``_YIELD`` times as long as the
    last one held it (at least ``_MIN_PAUSE``). A writer waiting for the lock does not
    queue: SQLite's busy handler polls it at growing intervals (1, 2, 5 ... 100 ms), so
    back-to-back batches would leave it free for microseconds and could starve the
    gateway's writer past its busy timeout. With the pause, retention holds the write
    lock at most 1/(1 + _YIELD) of the time while it has work.
    """
    total = transactions = 0
    while True:
        started = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = int(conn.execute(sql, (bound, batch)).rowcount)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        total += deleted
        transactions += 1
        if deleted < batch:
            return total, transactions
        # A worker thread's sleep: the serving event loop never waits on it.
        time.sleep(max(_MIN_PAUSE, _YIELD * (time.monotonic() - started)))


@dataclass(slots=True)
class RetentionStats:
    passes: int = 0
    failures: int = 0
    nonces: int = 0  # deleted since start
    counters: int = 0
    last: PruneReport | None = None


class BackgroundRetention:
    """One retention pass over ``ledger`` every ``interval`` seconds.

    ``ledger``: an SQLite ledger file's path (a pass runs in a worker thread) or a
    :class:`~.targets.PostgresTarget` (a pass is asyncpg on the loop, on a connection
    of its own: :mod:`.pg_retention`).

    The first pass is due at ``start()``; then one every ``interval`` (the clock's
    monotonic reading). :meth:`tick` runs a pass if one is due, :meth:`run_now` one
    at once: tests move a ``ManualClock`` and call them instead of waiting.
    Several gateway processes may all run one: their batches take turns at the
    write lock, and a row deleted by one is simply not there for the other.
    """

    __slots__ = (
        "_clock",
        "_done",
        "_interval",
        "_ledger",
        "_lock",
        "_next",
        "_pass",
        "_policy",
        "_task",
        "_wake",
        "stats",
    )

    def __init__(
        self,
        ledger: str | os.PathLike[str] | PostgresTarget,
        policy: RetentionPolicy,
        clock: Clock,
        *,
        interval: float,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError("retention_interval: must be a positive number of seconds")
        self._ledger = ledger if isinstance(ledger, PostgresTarget) else Path(ledger)
        self._policy = policy
        self._clock = clock
        self._interval = float(interval)
        self._next = clock.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._pass: asyncio.Future[PruneReport] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._done = asyncio.Condition()
        self.stats = RetentionStats()

    @property
    def next_due(self) -> float:
        """The monotonic reading at which the next pass is due."""
        return self._next

    async def start(self) -> None:
        if self._task is None:
            self._next = self._clock.monotonic()
            self._task = asyncio.create_task(self._run(), name="metering-retention")

    async def stop(self) -> None:
        """Stop the timer; a pass under way finishes first (its thread cannot be cut)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._pass is not None:
            await asyncio.gather(self._pass, return_exceptions=True)

    def wake(self) -> None:
        """Make the background task look at the clock now (after a test moved it)."""
        self._wake.set()

    async def tick(self) -> PruneReport | None:
        """Run a pass if one is due by the clock; None if none was (or it failed)."""
        if self._clock.monotonic() < self._next:
            return None
        self._next = self._clock.monotonic() + self._interval
        return await self.run_now()

    async def run_now(self) -> PruneReport | None:
        """One pass now (after the one under way); None if it failed (logged)."""
        async with self._lock:
            self._pass = asyncio.ensure_future(self._one_pass(self._clock.now()))
            report: PruneReport | None = None
            try:
                # Shielded: a cancelled caller (stop) leaves the thread's pass to finish.
                done = await asyncio.shield(self._pass)
            except Exception:  # a pass that fails is logged and retried; calls go on
                self.stats.failures += 1
                log.exception("retention pass failed; the next one retries")
            else:
                report = done
                self.stats.passes += 1
                self.stats.nonces += done.nonces
                self.stats.counters += done.counters
                self.stats.last = done
                if done.nonces or done.counters:
                    log.info(
                        "retention: %d expired nonces, %d counter rows deleted",
                        done.nonces,
                        done.counters,
                    )
        async with self._done:
            self._done.notify_all()
        return report

    async def _one_pass(self, now: datetime) -> PruneReport:
        ledger = self._ledger
        if isinstance(ledger, PostgresTarget):
            from .pg_retention import prune_postgres  # asyncpg only when it is used

            return await prune_postgres(ledger, now, self._policy)
        return await asyncio.to_thread(prune_ledger_file, ledger, now, self._policy)

    async def wait_for_passes(self, count: int) -> None:
        """Until ``count`` passes have run or failed (tests; no time involved)."""
        async with self._done:
            await self._done.wait_for(lambda: self.stats.passes + self.stats.failures >= count)

    async def _run(self) -> None:
        while True:
            delay = max(0.0, self._next - self._clock.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            await self.tick()
