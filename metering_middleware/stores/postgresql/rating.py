"""The PostgreSQL rating store (asyncpg): plans, settlement results and money beside the ledger.

The whole :class:`~...rating.store.RatingStore` protocol, plus the money methods the SQLite
store has (balances, entries, standing, settings), with the same semantics: the SQLite
store (``stores/sqlite/rating.py``) and its tests are the spec, and the tests run one body
over both. Two things are done differently, because PostgreSQL is not one writer on one
file.

**The pass bound (``max_seq``).** Settlement bounds each pass by the highest ``seq`` it
saw, then reads ``seq <= seen``; the next pass reads ``seq > seen``. On SQLite that is
exact (commits are serial, in seq order). On PostgreSQL identity values are handed out
when a row is inserted, not when it commits: a writer can hold seq 7 uncommitted while
seq 8 is committed and visible, and a plain ``max(seq)`` would then return 8, the pass
would read without 7, and the next one would read from 9: record 7 never billed.
``max_seq()`` therefore runs, in one short transaction::

    SET LOCAL lock_timeout = ...; LOCK TABLE calls IN SHARE MODE;
    SELECT coalesce(max(seq), 0) FROM calls; COMMIT

``SHARE`` conflicts with the ``ROW EXCLUSIVE`` lock every ``INSERT`` takes for its whole
transaction, so the lock is granted only when no transaction that inserted into calls
(and so may hold a sequence value) is in flight: each seq at or below the max read is
committed or will never exist (rolled back). Inserts that start after the lock are
given higher values, provided the sequence hands values out one at a time
(``CACHE 1``, the default; a session-cached sequence would let a later insert take a
lower value, so ``open()`` refuses one). Writers stall only for that tiny transaction
(a few ms): the lock waits at most 200 ms a try, since new inserts queue behind a waiting
lock request, and tries again up to ``command_timeout`` (then ``StoreError``: the pass is
retried). The role that settles needs a privilege ``LOCK ... IN SHARE MODE`` asks for
(the ledger's owner has them). ``tests/rating/test_pg_rating.py`` holds an uncommitted
lower seq beside a committed higher one and checks the bound waits for it, then
includes it. A snapshot
bound (``pg_snapshot_xmin``) was the alternative; it needs the inserting transaction's
xid on every row (a column and its index written by every ingest) to be exact, where
this costs ingest nothing.

**The settlement lock.** One settler across processes and machines:
``pg_try_advisory_lock`` on a connection of its own, held for the pass (the SQLite
store's lock row with an expiry becomes a session lock: a settler that dies loses it
with its connection, at once, instead of after a TTL; ``now`` and ``ttl`` are unused). A
renewal checks the same session still holds it (``pg_locks``); one whose connection was
lost is told so (``False``, settlement raises ``LockLost``) and never takes it again
silently, since another settler may have run in between. ``commit`` runs on the lock's
connection and checks the lock in its transaction: ``LockLost`` otherwise.

**Writers are serial.** Every transaction that writes plans, refunds, entries, standing,
settings or settlement results first takes one transaction-scoped advisory lock
(``pg_advisory_xact_lock``), as SQLite's ``BEGIN IMMEDIATE`` makes them serial: so a
plan's or an entry's seq commits in seq order (the marks ``plan_seq``/``refund_seq`` are
exact, for the same reason as above), and checks such as "the balance covers the price"
see every earlier write. These writes are rare (a command, a pass's commit), and the
gateway's ingest (calls) never takes this lock.

Reads that must agree with each other (the plan book and its marks) run in one
``REPEATABLE READ`` transaction. Money is ``numeric``: ``Decimal`` in and out, exact.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

import asyncpg

from ...ledger.records import CallRecord
from ...ledger.store import StoreError
from ...rating import _rows as rows_
from ...rating.balances import AccountSettings, BalanceEntry, BalanceError, EntryKind, Standing
from ...rating.money_reads import (
    MoneyMarks,
    MoneyReading,
    ReadingParts,
    assemble_reading,
)
from ...rating.months import Month
from ...rating.plans import PlanKind, QpsSubscription, ResourcePlan
from ...rating.results import Source, SourceKind
from ...rating.state import DeductionState
from ...rating.store import (
    AccountProgress,
    Adjustment,
    BillLine,
    CallBatch,
    LockLost,
    Plan,
    PlanBook,
    PlanChange,
    Progress,
    SettlementWrites,
)
from . import _money as money_
from ._migrate import Conn, apply_migrations, ledger_birth
from ._url import PostgresOptions, parse_url
from .ledger import _FAILURES, _close_pool

__all__ = ["SETTLE_LOCK", "WRITE_LOCK", "PostgresRatingStore"]

_T = TypeVar("_T")

#: Advisory lock keys (arbitrary constants, small enough to be one 32-bit objid).
SETTLE_LOCK = 0x6D6D_7365  # 'mmse': one settler at a time (session lock)
WRITE_LOCK = 0x6D6D_7772  # 'mmwr': rating and money writers, one at a time (transaction)
_PROGRESS = "settle"
#: What a session whose server end went away may raise (asyncpg's internal state error too).
_LOST: tuple[type[BaseException], ...] = (*_FAILURES, asyncpg.InternalClientError)
_CHUNK = 50_000
#: How long one try of the pass bound's lock waits (ms), and the pause between tries (s).
_LOCK_TRY_MS = 200
_LOCK_PAUSE = 0.05

_CALL_COLUMNS = "seq, id, account, item, occurred_at"
_PLAN_COLUMNS = (
    "p.seq, p.id, p.account, p.kind, p.categories, p.action, p.qps, p.points, p.start_at,"
    " p.end_at, p.ordered_at, p.price_paid, r.refunded_at, r.recorded_at"
)
_LINE_COLUMNS = rows_.LINE_COLUMNS
_LINE_ORDER = "account, billed_month, origin_month, item, kind, plan_id, tier, unit_price"
_ACCOUNT_COLUMNS = rows_.ACCOUNT_COLUMNS
_ADJUSTMENT_COLUMNS = rows_.ADJUSTMENT_COLUMNS
_HOLDS = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
    " AND pid = pg_backend_pid() AND classid = 0 AND objid = $1 AND objsubid = 1 AND granted)"
)
_CACHE = (
    "SELECT s.seqcache FROM pg_sequence s"
    " WHERE s.seqrelid = pg_get_serial_sequence('calls', 'seq')::regclass"
)


class PostgresRatingStore:
    """A :class:`~...rating.store.RatingStore` on the ledger's PostgreSQL database.

    Build it from the ledger's options (:meth:`for_ledger`, what ``rating_store_for``
    does) or a URL (:meth:`from_url`); it is returned unopened. It keeps a pool of its own
    (settlement runs on a loop of its own in the gateway, and asyncpg pools are bound to
    one loop), with the ledger's options. ``create=False`` (the default) refuses a
    database without a ledger; ``open()`` applies missing migrations either way.
    """

    def __init__(self, options: PostgresOptions, *, create: bool = False) -> None:
        self._options = options
        self._create = create
        self._pool: asyncpg.Pool | None = None
        self._birth: datetime | None = None
        self._lifecycle = asyncio.Lock()
        self._books: dict[str | None, PlanBook] = {}
        # The settlement lock: its owner and the session holding it.
        self._holder: str | None = None
        self._lock_conn: asyncpg.Connection[Any] | None = None
        self._lock_guard = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, create: bool = False) -> PostgresRatingStore:
        return cls(parse_url(url), create=create)

    @property
    def where(self) -> str:
        return self._options.where

    def __repr__(self) -> str:
        return f"PostgresRatingStore({self._options.where!r})"

    async def __aenter__(self) -> PostgresRatingStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        async with self._lifecycle:
            if self._pool is not None:
                return
            o = self._options
            try:
                pool = await asyncpg.create_pool(
                    o.dsn,
                    min_size=1,
                    max_size=o.pool_max,
                    timeout=o.connect_timeout,
                    command_timeout=o.command_timeout,
                    server_settings={"timezone": "UTC"},
                )
            except _FAILURES as exc:
                raise StoreError(f"cannot connect to ledger {o.where}: {exc}") from exc
            try:
                async with pool.acquire() as conn:
                    await apply_migrations(
                        conn, create=self._birth is None and self._create, where=o.where
                    )
                    birth = await ledger_birth(conn)
                    cache = await conn.fetchval(_CACHE)
            except StoreError:
                await _close_pool(pool)
                raise
            except _FAILURES as exc:
                await _close_pool(pool)
                raise StoreError(f"cannot open rating store {o.where}: {exc}") from exc
            if cache != 1:
                await _close_pool(pool)
                raise StoreError(
                    f"{o.where}: the calls.seq sequence caches {cache} values per session; "
                    "settlement's pass bound needs CACHE 1 (ALTER SEQUENCE ... CACHE 1)"
                )
            if self._birth is not None and birth != self._birth:
                await _close_pool(pool)
                raise StoreError(f"{o.where} is a different ledger (created {birth})")
            self._pool, self._birth = pool, birth

    async def close(self) -> None:
        async with self._lifecycle:
            await self._drop_lock()
            pool, self._pool = self._pool, None
            if pool is not None:
                await _close_pool(pool)

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        pool = self._pool
        if pool is None:
            raise StoreError("rating store is not open")
        try:
            async with pool.acquire(timeout=self._options.connect_timeout) as conn:
                yield conn
        except _FAILURES as exc:
            raise StoreError(f"rating store: {exc.__class__.__name__}: {exc}") from exc

    async def _read(self, fn: Callable[[Conn], Awaitable[_T]]) -> _T:
        async with self._conn() as conn:
            return await fn(conn)

    async def _write(self, fn: Callable[[Conn], Awaitable[_T]]) -> _T:
        """``fn`` in one transaction holding the writers' lock: all of it, or nothing."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
            return await fn(conn)

    # -- plans -----------------------------------------------------------------------------

    async def add_plan(
        self, plan: Plan, recorded_at: datetime, *, require_funds: bool = False
    ) -> None:
        """Record a purchase and its balance entry (minus the price), in one transaction."""
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
        row = _plan_row(plan, recorded_at)

        async def run(conn: Conn) -> None:
            try:
                async with conn.transaction():  # a savepoint: the error is ours to report
                    await conn.execute(
                        "INSERT INTO rating_plans (id, account, kind, categories, action, qps,"
                        " points, start_at, end_at, ordered_at, price_paid, recorded_at)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                        *row,
                    )
            except asyncpg.UniqueViolationError:
                raise ValueError(f"a plan with id {plan.id!r} already exists") from None
            if require_funds:
                have = (await money_.read_balances(conn, plan.account)).get(
                    plan.account, Decimal(0)
                )
                if have < plan.price_paid:
                    raise BalanceError(
                        f"balance of {plan.account!r} is {have} CNY, the plan costs "
                        f"{plan.price_paid}: top up first (nothing bought)"
                    )
            await money_.insert_entries(conn, [entry])

        await self._write(run)

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

        async def run(conn: Conn) -> None:
            account = await conn.fetchval("SELECT account FROM rating_plans WHERE id = $1", plan_id)
            if account is None:
                raise ValueError(f"no plan {plan_id!r}")
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO rating_refunds (plan_id, refunded_at, amount, recorded_at)"
                        " VALUES ($1, $2, $3, $4)",
                        plan_id,
                        refunded_at,
                        amount,
                        recorded_at,
                    )
            except asyncpg.UniqueViolationError:
                raise ValueError(f"plan {plan_id!r} is already refunded") from None
            if amount is not None and amount > 0:
                entry = BalanceEntry(
                    id=f"refund:{plan_id}",
                    account=account,
                    kind=EntryKind.REFUND,
                    amount=amount,
                    at=refunded_at,
                    recorded_at=recorded_at,
                    ref=plan_id,
                    reason=reason or f"refunded {plan_id}",
                )
                await money_.insert_entries(conn, [entry])
                await money_.update_standing(conn, [account], recorded_at, settled=False)

        await self._write(run)

    async def plan_book(self, *, account: str | None = None) -> PlanBook:
        async def run(conn: Conn) -> PlanBook:
            # The marks must match the rows read: one snapshot.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                plan_seq = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM rating_plans")
                refund_seq = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM rating_refunds")
                cached = self._books.get(account)
                if cached is not None and (cached.plan_seq, cached.refund_seq) == (
                    plan_seq,
                    refund_seq,
                ):
                    return cached  # entries are immutable: the same marks, the same book
                sql = (
                    f"SELECT {_PLAN_COLUMNS} FROM rating_plans p"
                    " LEFT JOIN rating_refunds r ON r.plan_id = p.id"
                )
                if account:
                    found = await conn.fetch(sql + " WHERE p.account = $1 ORDER BY p.seq", account)
                else:
                    found = await conn.fetch(sql + " ORDER BY p.seq")
            plans = [_plan_from_row(r) for r in found]
            book = PlanBook(
                plans=tuple(p for p in plans if isinstance(p, ResourcePlan)),
                subscriptions=tuple(p for p in plans if isinstance(p, QpsSubscription)),
                plan_seq=int(plan_seq),
                refund_seq=int(refund_seq),
                refund_recorded={r[1]: r[13] for r in found if r[13] is not None},
            )
            self._books[account] = book
            return book

        return await self._read(run)

    async def plan_changes(self, plan_seq: int, refund_seq: int) -> list[PlanChange]:
        async def run(conn: Conn) -> list[PlanChange]:
            bought = await conn.fetch(
                "SELECT account, id, start_at FROM rating_plans WHERE seq > $1 ORDER BY seq",
                plan_seq,
            )
            refunded = await conn.fetch(
                "SELECT p.account, p.id, r.refunded_at FROM rating_refunds r"
                " JOIN rating_plans p ON p.id = r.plan_id WHERE r.seq > $1 ORDER BY r.seq",
                refund_seq,
            )
            return [PlanChange(r[0], r[1], r[2]) for r in (*bought, *refunded)]

        return await self._read(run)

    # -- balances, settings, standing ------------------------------------------------------

    async def post_entries(self, entries: Sequence[BalanceEntry], now: datetime) -> list[str]:
        async def run(conn: Conn) -> list[str]:
            posted = await money_.insert_entries(conn, entries)
            await money_.update_standing(conn, {e.account for e in entries}, now, settled=False)
            return posted

        return await self._write(run)

    async def balance_entries(
        self,
        account: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: EntryKind | None = None,
    ) -> list[BalanceEntry]:
        return await self._read(
            lambda conn: money_.entries(conn, account, since=since, until=until, kind=kind)
        )

    async def balances(self, *, account: str | None = None) -> dict[str, Decimal]:
        return await self._read(lambda conn: money_.read_balances(conn, account))

    async def standings(self, *, account: str | None = None) -> dict[str, Standing]:
        return await self._read(lambda conn: money_.standings(conn, account))

    async def set_hold(
        self, account: str, now: datetime, reason: str | None, *, hold: bool
    ) -> Standing | None:
        return await self._write(
            lambda conn: money_.set_hold(conn, account, now, reason, hold=hold)
        )

    async def account_settings(self, *, account: str | None = None) -> dict[str, AccountSettings]:
        return await self._read(lambda conn: money_.settings(conn, account))

    async def set_account_settings(self, settings: AccountSettings, now: datetime) -> None:
        await self._write(lambda conn: money_.write_settings(conn, settings, now))

    async def account_state(self, account: str) -> str | None:
        return await self._read(lambda conn: money_.account_state(conn, account))

    async def settle_standing(self, now: datetime) -> None:
        await self._write(lambda conn: money_.update_standing(conn, None, now, settled=True))

    async def read_money(
        self, month: Month, known: MoneyMarks | None = None
    ) -> MoneyReading | None:
        """What the request path's money view is built from, in one snapshot
        (``rating.money_reads.read_money``'s reading); None when the marks equal ``known``."""

        async def run(conn: Conn) -> MoneyReading | None:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                marks = await _money_marks(conn, month)
                if marks == known:
                    return None
                return await _read_money(conn, month, marks)

        return await self._read(run)

    # -- the lock --------------------------------------------------------------------------

    async def acquire_lock(self, owner: str, now: datetime, ttl: timedelta) -> bool:
        """Take the settlement lock for ``owner`` (``now``/``ttl`` unused: see the module
        docstring), or confirm ``owner`` still holds it. False while anyone else holds it,
        and for an owner whose session lost it."""
        async with self._lock_guard:
            if self._holder is not None:
                if owner != self._holder:
                    return False
                if await self._still_held():
                    return True
                await self._drop_lock()
                return False
            o = self._options
            try:
                conn: asyncpg.Connection[Any] = await asyncpg.connect(
                    o.dsn,
                    timeout=o.connect_timeout,
                    command_timeout=o.command_timeout,
                    server_settings={"timezone": "UTC"},
                )
            except _FAILURES as exc:
                raise StoreError(f"cannot connect for the settlement lock: {exc}") from exc
            try:
                got = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", SETTLE_LOCK))
            except _FAILURES as exc:
                conn.terminate()
                raise StoreError(f"cannot take the settlement lock: {exc}") from exc
            if not got:
                await _close(conn)
                return False
            self._holder, self._lock_conn = owner, conn
            return True

    async def release_lock(self, owner: str) -> None:
        async with self._lock_guard:
            if owner == self._holder:
                await self._drop_lock()

    async def _still_held(self) -> bool:
        conn = self._lock_conn
        if conn is None or conn.is_closed():
            return False
        try:
            return bool(await conn.fetchval(_HOLDS, SETTLE_LOCK))
        except _LOST:
            return False

    async def _drop_lock(self) -> None:
        conn, self._lock_conn, self._holder = self._lock_conn, None, None
        if conn is not None:
            await _close(conn)  # the session's end releases its advisory locks

    # -- the ledger, as settlement reads it ------------------------------------------------

    async def max_seq(self) -> int:
        """The pass bound: exact, see the module docstring.

        While the SHARE lock waits for inserts in flight, new inserts queue behind it: each
        try waits at most ``_LOCK_TRY`` (so the gateway's writes stall no longer than
        that), then lets the queue through and tries again, up to ``command_timeout``."""
        deadline = asyncio.get_running_loop().time() + self._options.command_timeout

        async def run(conn: Conn) -> int:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {_LOCK_TRY_MS}")
                await conn.execute("LOCK TABLE calls IN SHARE MODE")
                return int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM calls"))

        while True:
            try:
                return await self._read(run)
            except StoreError as exc:
                waited = isinstance(exc.__cause__, asyncpg.LockNotAvailableError)
                if not waited or asyncio.get_running_loop().time() >= deadline:
                    raise
            await asyncio.sleep(_LOCK_PAUSE)

    async def first_occurred(self, *, account: str | None = None) -> datetime | None:
        async def run(conn: Conn) -> datetime | None:
            if account is None:
                value = await conn.fetchval("SELECT min(occurred_at) FROM calls")
            else:
                value = await conn.fetchval(
                    "SELECT min(occurred_at) FROM calls WHERE account = $1", account
                )
            return value if isinstance(value, datetime) else None

        return await self._read(run)

    async def read_range(
        self,
        since: datetime | None,
        until: datetime,
        *,
        max_seq: int,
        account: str | None = None,
        arrived_from: datetime | None = None,
    ) -> CallBatch:
        params: list[Any] = [until, max_seq]
        clauses = ["occurred_at < $1", "seq <= $2"]
        if since is not None:
            params.append(since)
            clauses.append(f"occurred_at >= ${len(params)}")
        if account is not None:
            params.append(account)
            clauses.append(f"account = ${len(params)}")
        # The comparison runs in the server: only the times it flags come back.
        arrived = "NULL::timestamptz"
        if arrived_from is not None:
            params.append(arrived_from)
            arrived = f"CASE WHEN recorded_at >= ${len(params)} THEN recorded_at END"
        sql = f"SELECT {_CALL_COLUMNS}, {arrived} FROM calls WHERE {' AND '.join(clauses)}"
        return await self._batch(sql, params)

    async def read_new(
        self, after_seq: int, max_seq: int, before: datetime, *, account: str | None = None
    ) -> CallBatch:
        sql = (
            f"SELECT {_CALL_COLUMNS}, recorded_at FROM calls"
            " WHERE seq > $1 AND seq <= $2 AND occurred_at < $3"
        )
        params: list[Any] = [after_seq, max_seq, before]
        if account is not None:
            sql += " AND account = $4"
            params.append(account)
        return await self._batch(sql, params)

    async def read_seqs(self, seqs: Sequence[int]) -> CallBatch:
        sql = f"SELECT {_CALL_COLUMNS}, recorded_at FROM calls WHERE seq = ANY($1::bigint[])"
        return await self._batch(sql, [sorted(set(seqs))])

    async def _batch(self, sql: str, params: Sequence[Any]) -> CallBatch:
        async def run(conn: Conn) -> CallBatch:
            records: list[CallRecord] = []
            seqs = array("q")
            arrived: dict[int, datetime] = {}
            # A cursor in chunks, so a month's raw rows never sit in memory beside its
            # records (a cursor needs a transaction; a read-only one).
            async with conn.transaction(readonly=True):
                cursor = await conn.cursor(sql, *params)
                with rows_.gc_paused():
                    while chunk := await cursor.fetch(_CHUNK):
                        got, got_seqs, got_arrived = _records(chunk)
                        base = len(records)
                        records += got
                        seqs.extend(got_seqs)
                        for i, at in enumerate(got_arrived):
                            if at is not None:
                                arrived[base + i] = at
                        if len(chunk) < _CHUNK:
                            break
            return CallBatch(records, seqs, arrived)

        return await self._read(run)

    # -- settlement results ----------------------------------------------------------------

    async def progress(self) -> Progress | None:
        async def run(conn: Conn) -> Progress | None:
            r = await conn.fetchrow(
                "SELECT seen, horizon, plan_seq, refund_seq, updated_at FROM rating_progress"
                " WHERE name = $1",
                _PROGRESS,
            )
            if r is None:
                return None
            return Progress(int(r[0]), r[1], int(r[2]), int(r[3]), r[4])

        return await self._read(run)

    async def accounts(self, *, account: str | None = None) -> dict[str, AccountProgress]:
        sql = f"SELECT {_ACCOUNT_COLUMNS} FROM rating_accounts"

        async def run(conn: Conn) -> list[asyncpg.Record]:
            if account is None:
                return await conn.fetch(sql)
            return await conn.fetch(sql + " WHERE account = $1", account)

        return {r[0]: _account_from_row(r) for r in await self._read(run)}

    async def adjustments(
        self,
        *,
        account: str | None = None,
        billed_from: Month | None = None,
        effective_from: datetime | None = None,
    ) -> list[Adjustment]:
        where, params = _where(
            ("account", "=", account),
            ("billed_month", ">=", rows_.month_text(billed_from)),
            ("effective_at", ">=", effective_from),
        )
        sql = f"SELECT {_ADJUSTMENT_COLUMNS} FROM rating_adjustments{where} ORDER BY call_seq"
        return [_adjustment_from_row(r) for r in await self._read(lambda c: c.fetch(sql, *params))]

    async def checkpoint(self, account: str, month: Month) -> tuple[Month, DeductionState] | None:
        sql = (
            "SELECT month, state FROM rating_checkpoints WHERE account = $1 AND month <= $2"
            " ORDER BY month DESC LIMIT 1"
        )
        r = await self._read(lambda c: c.fetchrow(sql, account, str(month)))
        if r is None:
            return None
        return rows_.month_of(r[0]), rows_.state_from_text(r[1])

    async def lines(
        self,
        *,
        account: str | None = None,
        month: Month | None = None,
        billed_from: Month | None = None,
    ) -> list[BillLine]:
        where, params = _where(
            ("account", "=", account),
            ("billed_month", "=", rows_.month_text(month)),
            ("billed_month", ">=", rows_.month_text(billed_from)),
        )
        sql = f"SELECT {_LINE_COLUMNS} FROM rating_lines{where} ORDER BY {_LINE_ORDER}"
        return [_line_from_row(r) for r in await self._read(lambda c: c.fetch(sql, *params))]

    async def commit(self, owner: str, writes: SettlementWrites) -> None:
        """A pass's results in one transaction, on the lock's own session, which must still
        hold the settlement lock (checked inside the transaction): ``LockLost`` otherwise."""
        async with self._lock_guard:
            conn = self._lock_conn
            if owner != self._holder or conn is None or conn.is_closed():
                raise LockLost("the settlement lock was lost: this pass wrote nothing")
            try:
                async with conn.transaction():
                    if not await conn.fetchval(_HOLDS, SETTLE_LOCK):
                        raise LockLost("the settlement lock was lost: this pass wrote nothing")
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                    await _commit(conn, writes)
            except LockLost:
                raise
            except _LOST as exc:
                if conn.is_closed():  # the session, and with it the lock, is gone
                    await self._drop_lock()
                raise StoreError(f"settlement commit failed: {exc}") from exc


async def _commit(conn: Conn, writes: SettlementWrites) -> None:
    lines: list[tuple[Any, ...]] = []
    checkpoints: list[tuple[str, str, str]] = []
    replaced: dict[str, list[str]] = {}  # from month -> accounts
    for aw in writes.accounts:
        name = aw.progress.account
        if aw.lines_from is not None:
            replaced.setdefault(str(aw.lines_from), []).append(name)
        lines += map(_line_row, aw.lines)
        checkpoints += ((name, str(m), rows_.state_text(s)) for m, s in aw.checkpoints)
    for since, names in replaced.items():
        await conn.execute(
            "DELETE FROM rating_lines WHERE billed_month >= $1 AND account = ANY($2::text[])",
            since,
            names,
        )
    if writes.accounts:
        await conn.executemany(
            f"INSERT INTO rating_accounts ({_ACCOUNT_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (account) DO UPDATE SET"
            " seen = excluded.seen, horizon = excluded.horizon,"
            " frontier_month = excluded.frontier_month, frontier_at = excluded.frontier_at,"
            " frontier_occurred = excluded.frontier_occurred,"
            " frontier_id = excluded.frontier_id, state = excluded.state,"
            " updated_at = excluded.updated_at",
            [_account_row(aw.progress) for aw in writes.accounts],
        )
    if lines:
        # Added to the stored line of the same key, exactly (numeric + numeric); merged
        # first, since one statement cannot upsert one row twice.
        merged: dict[tuple[Any, ...], list[Any]] = {}
        for row in lines:
            found = merged.get(row[:8])
            if found is None:
                merged[row[:8]] = list(row)
            else:
                found[9] += row[9]
                found[10] = _add(found[10], row[10])
                found[11] = _add(found[11], row[11])
        keys = sorted(merged)
        columns = list(zip(*(merged[k] for k in keys), strict=True))
        await conn.execute(
            f"INSERT INTO rating_lines AS l ({_LINE_COLUMNS})"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::integer[], $8::text[], $9::text[], $10::bigint[],"
            " $11::numeric[], $12::numeric[])"
            " ON CONFLICT (account, billed_month, origin_month, item, kind, plan_id, tier,"
            " unit_price) DO UPDATE SET calls = l.calls + excluded.calls,"
            " points = CASE WHEN excluded.points = 0 THEN l.points"
            " ELSE l.points + excluded.points END,"
            " amount = CASE WHEN excluded.amount = 0 THEN l.amount"
            " ELSE l.amount + excluded.amount END",
            *(list(c) for c in columns),
        )
    if checkpoints:
        await conn.executemany(
            "INSERT INTO rating_checkpoints (account, month, state) VALUES ($1, $2, $3)"
            " ON CONFLICT (account, month) DO UPDATE SET state = excluded.state",
            checkpoints,
        )
    if writes.adjustments:
        # A record's classification is made once; a re-rate reads it back, never redoes it.
        await conn.executemany(
            f"INSERT INTO rating_adjustments ({_ADJUSTMENT_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            [_adjustment_row(a) for a in writes.adjustments],
        )
    if writes.progress is not None:
        p = writes.progress
        await conn.execute(
            "INSERT INTO rating_progress (name, seen, horizon, plan_seq, refund_seq, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET"
            " seen = excluded.seen, horizon = excluded.horizon, plan_seq = excluded.plan_seq,"
            " refund_seq = excluded.refund_seq, updated_at = excluded.updated_at",
            _PROGRESS,
            p.seen,
            p.horizon,
            p.plan_seq,
            p.refund_seq,
            p.updated_at,
        )
    if writes.money is not None:
        # In the same transaction: the entries follow the lines exactly, once.
        await money_.post_settled(conn, writes)
        await money_.update_standing(conn, None, writes.money.posted_at, settled=True)


async def _money_marks(conn: Conn, month: Month) -> MoneyMarks:
    """Cheap marks: rows of the money reading only change with one of them."""
    r = await conn.fetchrow(
        "SELECT (SELECT coalesce(max(seq), 0) FROM balance_entries),"
        " (SELECT row(seen, horizon, updated_at)::text FROM rating_progress WHERE name = $1),"
        " (SELECT row(count(*), max(updated_at))::text FROM rating_accounts),"
        " (SELECT row(count(*), max(updated_at))::text FROM account_standing),"
        " (SELECT row(count(*), max(updated_at))::text FROM account_settings),"
        " (SELECT coalesce(max(seq), 0) FROM rating_plans),"
        " (SELECT coalesce(max(seq), 0) FROM rating_refunds)",
        _PROGRESS,
    )
    assert r is not None
    return (*tuple(r), str(month))


async def _read_money(conn: Conn, month: Month, marks: MoneyMarks) -> MoneyReading:
    balances = await money_.read_balances(conn)
    standings = await money_.standings(conn)
    caps = {a: s.monthly_cap for a, s in (await money_.settings(conn)).items()}
    progress = await conn.fetchrow(
        "SELECT seen, horizon FROM rating_progress WHERE name = $1", _PROGRESS
    )
    global_seen = -1 if progress is None else int(progress[0])
    global_horizon = None if progress is None else progress[1]
    horizons: dict[str, datetime | None] = {}
    remaining: dict[str, Mapping[str, Decimal]] = {}
    for account, seen, horizon, state in await conn.fetch(
        "SELECT account, seen, horizon, state FROM rating_accounts"
    ):
        # The account's own marks win when its last pass saw at least as far (bills' rule).
        horizons[account] = horizon if int(seen) >= global_seen else global_horizon
        remaining[account] = rows_.state_from_text(state).remaining
    spend: dict[str, list[Decimal]] = {}
    calls: dict[str, dict[str, int]] = {}
    for account, item, n, amount in await conn.fetch(
        "SELECT account, item, calls, amount FROM rating_lines"
        " WHERE billed_month = $1 AND kind = 'payg'",
        str(month),
    ):
        spend.setdefault(account, []).append(amount)
        per_item = calls.setdefault(account, {})
        per_item[item] = per_item.get(item, 0) + int(n)
    book = [
        _plan_from_row(r)
        for r in await conn.fetch(
            f"SELECT {_PLAN_COLUMNS} FROM rating_plans p"
            " LEFT JOIN rating_refunds r ON r.plan_id = p.id ORDER BY p.seq"
        )
    ]
    return assemble_reading(
        marks,
        month,
        ReadingParts(
            balances, standings, caps, horizons, global_horizon, remaining, spend, calls, book
        ),
    )


def _add(a: Decimal, b: Decimal) -> Decimal:
    # The stored text of a line is kept when nothing is added (as the SQLite store does).
    return a if b == 0 else (b if a == 0 else a + b)


async def _close(conn: asyncpg.Connection[Any]) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=5.0)
    except _LOST:
        conn.terminate()


def _where(*triples: tuple[str, str, Any]) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in triples:
        if value is not None:
            params.append(value)
            clauses.append(f"{column} {op} ${len(params)}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


# -- rows ----------------------------------------------------------------------------------

_FIELDS = tuple(CallRecord.__dataclass_fields__)
_PLACEHOLDERS = rows_._PLACEHOLDERS  # the SQLite reader's: the same records


def _records(
    rows: Sequence[asyncpg.Record],
) -> tuple[list[CallRecord], Sequence[int], Sequence[datetime | None]]:
    """``(seq, id, account, item, occurred_at, recorded_at|None)`` rows as rating records:
    the SQLite reader's column-by-column loop, with asyncpg's aware UTC datetimes as they
    come (nothing to parse)."""
    return rows_.records_from_rows(rows, parse=None)


def _plan_row(plan: Plan, recorded_at: datetime) -> tuple[Any, ...]:
    times = (plan.start, plan.end, plan.ordered_at)
    if isinstance(plan, QpsSubscription):
        return (
            plan.id,
            plan.account,
            "qps",
            plan.category,
            plan.action,
            plan.qps,
            None,
            *times,
            plan.price_paid,
            recorded_at,
        )
    return (
        plan.id,
        plan.account,
        plan.kind.value,
        " ".join(sorted(plan.categories)),
        None,
        None,
        plan.points,
        *times,
        plan.price_paid,
        recorded_at,
    )


def _plan_from_row(r: asyncpg.Record) -> Plan:
    _, pid, account, kind, categories, action, qps, points, start, end, ordered, price = r[:12]
    refunded = r[12]
    if kind == "qps":
        return QpsSubscription(
            id=pid,
            account=account,
            category=categories,
            action=action,
            qps=int(qps),
            price_paid=price,
            refunded_at=refunded,
            start=start,
            end=end,
            ordered_at=ordered,
        )
    return ResourcePlan(
        id=pid,
        account=account,
        kind=PlanKind(kind),
        categories=frozenset(categories.split()),
        points=points,
        price_paid=price,
        refunded_at=refunded,
        start=start,
        end=end,
        ordered_at=ordered,
    )


def _line_row(line: BillLine) -> tuple[Any, ...]:
    source = line.source
    return (
        line.account,
        rows_.text_of(line.billed),
        rows_.text_of(line.origin),
        line.item,
        source.kind.value,
        source.plan_id or "",
        -1 if source.tier is None else source.tier,
        "" if source.unit_price is None else rows_.decimal_text(source.unit_price),
        line.category,
        line.calls,
        line.points,
        line.amount,
    )


def _line_from_row(r: asyncpg.Record) -> BillLine:
    account, billed, origin, item, kind, plan_id, tier, price, category, calls, points, amount = r
    source = Source(
        SourceKind(kind),
        plan_id or None,
        None if tier < 0 else int(tier),
        None if price == "" else Decimal(price),
    )
    return BillLine(
        account=account,
        billed=rows_.month_of(billed),
        origin=rows_.month_of(origin),
        category=category,
        item=item,
        source=source,
        calls=int(calls),
        points=points,
        amount=amount,
    )


def _account_row(p: AccountProgress) -> tuple[Any, ...]:
    f = p.frontier
    return (
        p.account,
        p.seen,
        p.horizon,
        None if f is None else str(f[0]),
        None if f is None else f[1],
        None if f is None else f[2],
        None if f is None else f[3],
        rows_.state_text(p.state),
        p.updated_at,
    )


def _account_from_row(r: asyncpg.Record) -> AccountProgress:
    account, seen, horizon, f_month, f_at, f_occurred, f_id, state, updated = r
    frontier = None
    if f_month is not None:
        frontier = (rows_.month_of(f_month), f_at, f_occurred, f_id)
    return AccountProgress(
        account=account,
        seen=int(seen),
        horizon=horizon,
        frontier=frontier,
        state=rows_.state_from_text(state),
        updated_at=updated,
    )


def _adjustment_row(a: Adjustment) -> tuple[Any, ...]:
    return (
        a.seq,
        a.call_id,
        a.account,
        a.occurred_at,
        str(a.origin),
        str(a.billed),
        a.effective_at,
    )


def _adjustment_from_row(r: asyncpg.Record) -> Adjustment:
    seq, call_id, account, occurred, origin, billed, effective = r
    return Adjustment(
        seq=int(seq),
        call_id=call_id,
        account=account,
        occurred_at=occurred,
        origin=rows_.month_of(origin),
        billed=rows_.month_of(billed),
        effective_at=effective,
    )
