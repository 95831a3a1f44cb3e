"""The SQLite rating store: plans and settlement results in the ledger's own file.

Plain ``sqlite3``, one connection owned by one thread of the store's own
(:class:`._owner.OwnerThread`, as the ledger store's): opening, migrating, the file checks,
every call and closing run there, never on the event loop; calls are also serialised by
an ``asyncio.Lock``. Settlement reads a million rows at a time, and aiosqlite's per-row
hops would cost more than the reads. WAL lets the gateway keep writing
while settlement reads. Migrations are the ledger's (``0002_rating.sql``).

The file is the ledger's, with the ledger store's rules (see :mod:`.ledger`): only
the first ``open()`` may create it (``create=True``; :func:`rating_store_for` never does),
and every call first checks the path still holds the file that was opened. When it was
moved, removed or replaced, the call reopens the path without creating, and only if it
holds the same ledger (same birth stamp); otherwise it raises ``StoreError``, so plans are
never read from, nor purchases written into, an empty stand-in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from ...ledger._lifecycle import OpenClose
from ...ledger.codec import format_time, parse_time
from ...ledger.migrate import connect_existing, ledger_birth, migrate_file
from ...ledger.store import LedgerStore, StoreError
from ...rating import _rows as rows_
from ...rating.balances import AccountSettings, BalanceEntry, BalanceError, EntryKind, Standing
from ...rating.months import Month
from ...rating.plans import QpsSubscription, ResourcePlan
from ...rating.state import DeductionState
from ...rating.store import (
    AccountProgress,
    Adjustment,
    BillLine,
    CallBatch,
    Plan,
    PlanBook,
    PlanChange,
    Progress,
    SettlementWrites,
)
from . import _money as money_
from . import _rating_ops as ops
from ._owner import OwnerThread
from .ledger import SqliteStore

__all__ = ["SqliteRatingStore", "rating_store_for"]

_T = TypeVar("_T")
_log = logging.getLogger("metering_middleware.rating")
_CALL_COLUMNS = "seq, id, account, item, occurred_at"


def rating_store_for(ledger: LedgerStore) -> SqliteRatingStore:
    """The rating store beside an (SQLite) ledger store; ``ValueError`` for other stores."""
    if isinstance(ledger, SqliteStore):
        return SqliteRatingStore(ledger.path, create=False)  # the ledger store decided that
    raise ValueError("rating needs an SQLite ledger (sqlite:///path); memory:// keeps no plans")


class SqliteRatingStore(OpenClose):
    """A :class:`~metering_middleware.rating.store.RatingStore` on the ledger's SQLite file."""

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000, create: bool = True
    ) -> None:
        self._path = Path(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._create = create
        self._worker: OwnerThread | None = None  # from the first open() to close()
        self._conn: sqlite3.Connection | None = None  # the worker's only
        self._identity: tuple[int, int] | None = None
        self._birth: str | None = None  # the ledger this store belongs to, once opened
        self._opened = False  # between open() and close(), even while the file is away
        self._lock = asyncio.Lock()
        self._books: dict[str | None, PlanBook] = {}

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"SqliteRatingStore({str(self._path)!r})"

    async def open(self) -> None:
        async with self._lock:
            fresh = self._worker is None
            if fresh:
                self._worker = OwnerThread(f"rating-sqlite:{self._path.name}")
            assert self._worker is not None
            try:
                await self._worker.call(self._open_if_closed)
            except BaseException:
                if fresh and not self._opened:  # nothing to keep the thread for
                    await self._stop()
                raise
            self._opened = True

    async def close(self) -> None:
        async with self._lock:
            self._opened = False
            await self._stop()

    async def _stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop(self._close_sync)

    # -- in the owner thread ---------------------------------------------------------------

    def _open_if_closed(self) -> None:
        if self._conn is None:
            self._open_sync()

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _open_sync(self) -> None:
        first = self._birth is None
        # Only the first open may create the file; later ones find the same ledger or fail.
        migrate_file(
            self._path, busy_timeout_ms=self._busy_timeout_ms, create=first and self._create
        )
        conn = connect_existing(self._path, timeout=self._busy_timeout_ms / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            # Settlement results can be recomputed from the ledger, so their commits need
            # not wait for the disk; purchases switch to FULL (see ops.durable).
            conn.execute("PRAGMA synchronous = NORMAL")
            # Decimal text added exactly, in SQL: lines are upserted without reading them.
            conn.create_function("rating_add", 2, ops.add_decimal_text, deterministic=True)
            birth = ledger_birth(conn)
            stat = os.stat(self._path)
        except (sqlite3.Error, OSError) as exc:
            conn.close()
            raise StoreError(f"cannot open rating store {str(self._path)!r}: {exc}") from exc
        if not first and birth != self._birth:
            conn.close()
            raise StoreError(
                f"ledger file {str(self._path)!r} is a different ledger (created {birth}, "
                f"not {self._birth}); put the real ledger file back"
            )
        self._conn, self._identity, self._birth = conn, (stat.st_dev, stat.st_ino), birth

    def _current(self) -> sqlite3.Connection:
        """The connection, reopened first if the file at the path is not the one it has."""
        conn = self._conn
        if conn is not None:
            try:
                stat = os.stat(self._path)
                same = (stat.st_dev, stat.st_ino) == self._identity
            except OSError:
                same = False
            if same:
                return conn
            # Commits still in the WAL under the path's name belong to the moved file:
            # checkpoint them into it before letting go (see SqliteStore._close).
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                _log.warning("could not checkpoint the moved ledger file", exc_info=True)
            conn.close()
            self._conn = None
        try:
            self._open_sync()
        except StoreError as exc:
            raise StoreError(f"ledger file {str(self._path)!r} unavailable: {exc}") from exc
        assert self._conn is not None
        return self._conn

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        async with self._lock:
            worker = self._worker
            if not self._opened or worker is None:
                raise StoreError("rating store is not open")

            def run() -> _T:
                return fn(self._current(), *args)

            try:
                return await worker.call(run)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise StoreError(f"rating store: {exc}") from exc

    # -- plans -----------------------------------------------------------------------------

    async def add_plan(
        self, plan: Plan, recorded_at: datetime, *, require_funds: bool = False
    ) -> None:
        """Record a purchase and its balance entry (minus the price), in one transaction.

        ``require_funds``: refuse (``BalanceError``) unless the balance covers the price."""
        row = rows_.plan_row(plan, recorded_at)
        sql = (
            "INSERT INTO rating_plans (id, account, kind, categories, action, qps, points,"
            " start_at, end_at, ordered_at, price_paid, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        entry = BalanceEntry(
            id=f"purchase:{plan.id}",
            account=plan.account,
            kind=EntryKind.PURCHASE,
            amount=-plan.price_paid,
            at=plan.ordered_at,
            recorded_at=recorded_at,
            ref=plan.id,
            reason=f"bought {plan.id}",
        )

        def run(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(sql, row)
            except sqlite3.IntegrityError:
                raise ValueError(f"a plan with id {plan.id!r} already exists") from None
            if require_funds:
                have = money_.read_balances(conn, plan.account).get(plan.account, Decimal(0))
                if have < plan.price_paid:
                    raise BalanceError(
                        f"balance of {plan.account!r} is {have} CNY, the plan costs "
                        f"{plan.price_paid}: top up first (nothing bought)"
                    )
            money_.insert_entries(conn, [entry])

        await self._call(ops.durable, ops.transaction, run)

    async def add_refund(
        self,
        plan_id: str,
        refunded_at: datetime,
        recorded_at: datetime,
        amount: Decimal | None,
        *,
        reason: str | None = None,
    ) -> None:
        """Record a refund and, when ``amount`` is positive, its balance entry."""

        def run(conn: sqlite3.Connection) -> None:
            found = conn.execute(
                "SELECT account FROM rating_plans WHERE id = ?", (plan_id,)
            ).fetchone()
            if found is None:
                raise ValueError(f"no plan {plan_id!r}")
            try:
                conn.execute(
                    "INSERT INTO rating_refunds (plan_id, refunded_at, amount, recorded_at)"
                    " VALUES (?, ?, ?, ?)",
                    (
                        plan_id,
                        format_time(refunded_at),
                        None if amount is None else rows_.decimal_text(amount),
                        format_time(recorded_at),
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"plan {plan_id!r} is already refunded") from None
            if amount is not None and amount > 0:
                entry = BalanceEntry(
                    id=f"refund:{plan_id}",
                    account=found[0],
                    kind=EntryKind.REFUND,
                    amount=amount,
                    at=refunded_at,
                    recorded_at=recorded_at,
                    ref=plan_id,
                    reason=reason or f"refunded {plan_id}",
                )
                money_.insert_entries(conn, [entry])
                money_.update_standing(conn, [found[0]], recorded_at, settled=False)

        await self._call(ops.durable, ops.transaction, run)

    # -- balances, settings, standing ------------------------------------------------------

    async def post_entries(self, entries: Sequence[BalanceEntry], now: datetime) -> list[str]:
        """Post entries (one transaction, durable); the ids that were new. A balance that
        is back at zero or above restores its account at once."""

        def run(conn: sqlite3.Connection) -> list[str]:
            posted = money_.insert_entries(conn, entries)
            money_.update_standing(conn, {e.account for e in entries}, now, settled=False)
            return posted

        return await self._call(ops.durable, ops.transaction, run)

    async def balance_entries(
        self,
        account: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: EntryKind | None = None,
    ) -> list[BalanceEntry]:
        return await self._call(
            lambda conn: money_.entries(conn, account, since=since, until=until, kind=kind)
        )

    async def balances(self, *, account: str | None = None) -> dict[str, Decimal]:
        return await self._call(ops.reading, money_.read_balances, account)

    async def standings(self, *, account: str | None = None) -> dict[str, Standing]:
        return await self._call(money_.standings, account)

    async def set_hold(
        self, account: str, now: datetime, reason: str | None, *, hold: bool
    ) -> Standing | None:
        def run(conn: sqlite3.Connection) -> Standing | None:
            return money_.set_hold(conn, account, now, reason, hold=hold)

        return await self._call(ops.durable, ops.transaction, run)

    async def account_settings(self, *, account: str | None = None) -> dict[str, AccountSettings]:
        return await self._call(money_.settings, account)

    async def set_account_settings(self, settings: AccountSettings, now: datetime) -> None:
        def run(conn: sqlite3.Connection) -> None:
            money_.write_settings(conn, settings, now)

        await self._call(ops.durable, ops.transaction, run)

    async def account_state(self, account: str) -> str | None:
        """'enabled', 'disabled' or None (unknown): see ``_money.account_state``."""
        return await self._call(money_.account_state, account)

    async def settle_standing(self, now: datetime) -> None:
        """Re-evaluate every account's standing as a settlement would (the 24-hour step)."""

        def run(conn: sqlite3.Connection) -> None:
            money_.update_standing(conn, None, now, settled=True)

        await self._call(ops.durable, ops.transaction, run)

    async def plan_book(self, *, account: str | None = None) -> PlanBook:
        def run(conn: sqlite3.Connection) -> PlanBook:
            conn.execute("BEGIN")  # the marks must match the rows read
            try:
                (plan_seq,) = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM rating_plans"
                ).fetchone()
                (refund_seq,) = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM rating_refunds"
                ).fetchone()
                # Entries are immutable: the same marks mean the same book.
                cached = self._books.get(account)
                if cached is not None and (cached.plan_seq, cached.refund_seq) == (
                    plan_seq,
                    refund_seq,
                ):
                    return cached
                where, params = ("WHERE p.account = ?", [account]) if account else ("", [])
                found = conn.execute(
                    f"SELECT {rows_.PLAN_COLUMNS} FROM rating_plans p"
                    f" LEFT JOIN rating_refunds r ON r.plan_id = p.id {where} ORDER BY p.seq",
                    params,
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            plans = [rows_.plan_from_row(row) for row in found]
            recorded = {row[1]: parse_time(row[13]) for row in found if row[13] is not None}
            book = PlanBook(
                plans=tuple(p for p in plans if isinstance(p, ResourcePlan)),
                subscriptions=tuple(p for p in plans if isinstance(p, QpsSubscription)),
                plan_seq=int(plan_seq),
                refund_seq=int(refund_seq),
                refund_recorded=recorded,
            )
            self._books[account] = book
            return book

        return await self._call(run)

    async def plan_changes(self, plan_seq: int, refund_seq: int) -> list[PlanChange]:
        def run(conn: sqlite3.Connection) -> list[PlanChange]:
            bought = conn.execute(
                "SELECT account, id, start_at FROM rating_plans WHERE seq > ? ORDER BY seq",
                (plan_seq,),
            ).fetchall()
            refunded = conn.execute(
                "SELECT p.account, p.id, r.refunded_at FROM rating_refunds r"
                " JOIN rating_plans p ON p.id = r.plan_id WHERE r.seq > ? ORDER BY r.seq",
                (refund_seq,),
            ).fetchall()
            return [PlanChange(a, pid, parse_time(at)) for a, pid, at in (*bought, *refunded)]

        return await self._call(run)

    # -- the lock --------------------------------------------------------------------------

    async def acquire_lock(self, owner: str, now: datetime, ttl: timedelta) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT owner, expires_at FROM rating_lock WHERE name = ?", (ops.LOCK,)
                ).fetchone()
                if row is not None and row[0] != owner and row[1] > format_time(now):
                    return False
                conn.execute(
                    "INSERT INTO rating_lock (name, owner, acquired_at, expires_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                    " owner = excluded.owner, acquired_at = excluded.acquired_at,"
                    " expires_at = excluded.expires_at",
                    (ops.LOCK, owner, format_time(now), format_time(now + ttl)),
                )
                return True
            finally:
                conn.execute("COMMIT")

        return await self._call(run)

    async def release_lock(self, owner: str) -> None:
        sql = "DELETE FROM rating_lock WHERE name = ? AND owner = ?"
        await self._call(ops.execute, sql, (ops.LOCK, owner))

    # -- the ledger ------------------------------------------------------------------------

    async def max_seq(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM calls").fetchone()[0])

        return await self._call(run)

    async def first_occurred(self, *, account: str | None = None) -> datetime | None:
        def run(conn: sqlite3.Connection) -> datetime | None:
            if account is None:
                row = conn.execute("SELECT MIN(occurred_at) FROM calls").fetchone()
            else:
                row = conn.execute(
                    "SELECT MIN(occurred_at) FROM calls WHERE account = ?", (account,)
                ).fetchone()
            return rows_.optional_time(row[0])

        return await self._call(run)

    async def read_range(
        self,
        since: datetime | None,
        until: datetime,
        *,
        max_seq: int,
        account: str | None = None,
        arrived_from: datetime | None = None,
    ) -> CallBatch:
        clauses = ["occurred_at < ?", "seq <= ?"]
        params: list[Any] = [format_time(until), max_seq]
        if since is not None:
            clauses.append("occurred_at >= ?")
            params.append(format_time(since))
        if account is not None:
            clauses.append("account = ?")
            params.append(account)
        # The comparison runs in SQLite: Python only parses the few times it flags.
        arrived = (
            "NULL" if arrived_from is None else "CASE WHEN recorded_at >= ? THEN recorded_at END"
        )
        head = [] if arrived_from is None else [format_time(arrived_from)]
        sql = f"SELECT {_CALL_COLUMNS}, {arrived} FROM calls WHERE {' AND '.join(clauses)}"
        return await self._call(ops.read_batch, sql, head + params)

    async def read_new(
        self, after_seq: int, max_seq: int, before: datetime, *, account: str | None = None
    ) -> CallBatch:
        sql = (
            f"SELECT {_CALL_COLUMNS}, recorded_at FROM calls"
            " WHERE seq > ? AND seq <= ? AND occurred_at < ?"
        )
        params: list[Any] = [after_seq, max_seq, format_time(before)]
        if account is not None:
            sql += " AND account = ?"
            params.append(account)
        return await self._call(ops.read_batch, sql, params)

    async def read_seqs(self, seqs: Sequence[int]) -> CallBatch:
        def run(conn: sqlite3.Connection) -> CallBatch:
            found: list[tuple[Any, ...]] = []
            wanted = sorted(set(seqs))
            for i in range(0, len(wanted), 500):  # SQLite's parameter limit
                part = wanted[i : i + 500]
                found += conn.execute(
                    f"SELECT {_CALL_COLUMNS}, recorded_at FROM calls"
                    f" WHERE seq IN ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
            return ops.batch(found)

        return await self._call(run)

    # -- settlement results ----------------------------------------------------------------

    async def progress(self) -> Progress | None:
        def run(conn: sqlite3.Connection) -> Progress | None:
            row = conn.execute(
                "SELECT seen, horizon, plan_seq, refund_seq, updated_at FROM rating_progress"
                " WHERE name = ?",
                (ops.PROGRESS,),
            ).fetchone()
            if row is None:
                return None
            return Progress(
                int(row[0]), parse_time(row[1]), int(row[2]), int(row[3]), parse_time(row[4])
            )

        return await self._call(run)

    async def accounts(self, *, account: str | None = None) -> dict[str, AccountProgress]:
        sql = f"SELECT {rows_.ACCOUNT_COLUMNS} FROM rating_accounts"
        params: list[Any] = []
        if account is not None:
            sql += " WHERE account = ?"
            params.append(account)
        found = await self._call(ops.fetch, sql, params)
        return {row[0]: rows_.account_from_row(row) for row in found}

    async def adjustments(
        self,
        *,
        account: str | None = None,
        billed_from: Month | None = None,
        effective_from: datetime | None = None,
    ) -> list[Adjustment]:
        clauses, params = ops.where(
            ("account = ?", account),
            ("billed_month >= ?", rows_.month_text(billed_from)),
            ("effective_at >= ?", None if effective_from is None else format_time(effective_from)),
        )
        sql = (
            f"SELECT {rows_.ADJUSTMENT_COLUMNS} FROM rating_adjustments{clauses} ORDER BY call_seq"
        )
        return [rows_.adjustment_from_row(row) for row in await self._call(ops.fetch, sql, params)]

    async def checkpoint(self, account: str, month: Month) -> tuple[Month, DeductionState] | None:
        sql = (
            "SELECT month, state FROM rating_checkpoints WHERE account = ? AND month <= ?"
            " ORDER BY month DESC LIMIT 1"
        )
        found = await self._call(ops.fetch, sql, [account, str(month)])
        if not found:
            return None
        return rows_.month_of(found[0][0]), rows_.state_from_text(found[0][1])

    async def lines(
        self,
        *,
        account: str | None = None,
        month: Month | None = None,
        billed_from: Month | None = None,
    ) -> list[BillLine]:
        clauses, params = ops.where(
            ("account = ?", account),
            ("billed_month = ?", rows_.month_text(month)),
            ("billed_month >= ?", rows_.month_text(billed_from)),
        )
        sql = (
            f"SELECT {rows_.LINE_COLUMNS} FROM rating_lines{clauses}"
            " ORDER BY account, billed_month, origin_month, item, kind, plan_id, tier, unit_price"
        )
        return [rows_.line_from_row(row) for row in await self._call(ops.fetch, sql, params)]

    async def commit(self, owner: str, writes: SettlementWrites) -> None:
        await self._call(ops.commit, owner, writes)
