"""The PostgreSQL ledger store (asyncpg): the whole :class:`~...ledger.store.LedgerStore`.

Behaviour worth knowing before running it in production (docs/postgresql.md):

- **One statement per group commit.** ``write`` sends the batch's records, outcome
  counts and nonces as arrays in one prepared statement: data-modifying CTEs
  (``INSERT ... SELECT FROM unnest(...)``) for nonces and counts, the records' insert
  last. One statement is one implicit transaction and one round trip, whatever the
  batch size; it commits everything or nothing. Records are idempotent by id
  (``ON CONFLICT (id) DO NOTHING``; the first of duplicate ids in a batch wins), counts
  are added by upsert, a nonce held again keeps the later expiry. Duplicate keys within
  one batch are merged first (an upsert cannot touch one row twice in a statement), and
  every table's rows go in key order: writers in several processes adding to the same
  counters lock them in one order, so they never deadlock (tested; in arrival order
  four writers deadlocked within seconds).
  ``COPY`` into a temporary table was measured against it: more round trips (a
  transaction around COPY and the insert from the temporary table) and slower for the
  batch sizes group commit makes (docs/postgresql.md has the numbers).
- **Durability.** A write returns once the server confirmed its COMMIT
  (``synchronous_commit`` is the server's setting; keep it ``on`` for strict mode).
- **Failures.** Any connection, protocol, timeout or server error is raised as
  ``StoreError``: the writer journals the batch and retries; ``check()`` fails while the
  server is unreachable (``/readyz`` 503). ``reopen()`` drops the connection pool and
  connects again; both it and ``check()`` refuse a database that is another ledger
  (another birth stamp), like the SQLite store refuses another file. A write whose
  COMMIT reply was lost (the server died between committing and answering) is
  journaled although committed: its records replay idempotently, its per-minute counts
  are added a second time (as on SQLite, counters are not used for billing).
- **Schema.** ``open()`` applies the missing migrations under an advisory lock (several
  processes may start at once on a fresh database); ``create=False`` refuses a
  database without a ledger (``LedgerMissing``) instead of making one.
- **Text.** PostgreSQL text cannot hold U+0000: a NUL in a stored string (a client's
  signature nonce could carry one) is written as U+FFFD, so one such value can never
  make a batch, and its journal replay, fail for ever.
- **Concurrency.** A pool of connections (``pool_min``..``pool_max``): reads run beside
  the writer's commits; every operation is one statement (keyset pages are short reads
  with writes going on between them).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ...clock import Clock, SystemClock
from ...ledger._lifecycle import OpenClose
from ...ledger._query import (
    CREDENTIAL_COLUMNS,
    Dialect,
    Filter,
    calls_page,
    count_calls_sql,
    credentials_sql,
    outcome_counts_sql,
    pages,
    summary_sql,
)
from ...ledger.records import CallRecord, ClaimedNonce, Outcome, OutcomeCount
from ...ledger.store import CallSummary, CredentialRow, StoreError
from ._migrate import Conn, apply_migrations, ledger_birth
from ._url import PostgresOptions, parse_url

__all__ = ["PostgresStore"]

_log = logging.getLogger("metering_middleware.ledger")

#: What a lost, refused or failing server raises through asyncpg (plus our own timeouts).
_FAILURES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)

_WRITE = """
WITH held AS (
    INSERT INTO nonces AS n (access_key_id, nonce, account, expires_ms)
    SELECT * FROM unnest($14::text[], $15::text[], $16::text[], $17::bigint[]) ORDER BY 1, 2
    ON CONFLICT (access_key_id, nonce) DO UPDATE
    SET expires_ms = GREATEST(n.expires_ms, excluded.expires_ms),
        account = CASE WHEN excluded.expires_ms > n.expires_ms
                       THEN excluded.account ELSE n.account END
), counted AS (
    INSERT INTO outcome_counts AS o (minute, account, category, action, outcome, detail, count)
    SELECT * FROM unnest($18::timestamptz[], $19::text[], $20::text[], $21::text[],
                         $22::text[], $23::text[], $24::bigint[]) ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (minute, account, category, action, outcome, detail)
    DO UPDATE SET count = o.count + excluded.count
)
INSERT INTO calls (id, request_id, account, access_key_id, category, action, version,
                   item, occurred_at, status, error_code, latency_ms, recorded_at)
SELECT u.*, $13::timestamptz
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::timestamptz[], $10::integer[], $11::text[],
            $12::float8[]) AS u ORDER BY 1
ON CONFLICT (id) DO NOTHING
"""
_FIRST_NONCES = (
    "SELECT access_key_id, nonce, account, expires_ms FROM nonces"
    " WHERE expires_ms > $1 ORDER BY access_key_id, nonce LIMIT $2"
)
_NEXT_NONCES = (
    "SELECT access_key_id, nonce, account, expires_ms FROM nonces"
    " WHERE expires_ms > $1 AND (access_key_id, nonce) > ($3, $4)"
    " ORDER BY access_key_id, nonce LIMIT $2"
)
_PRUNE_NONCES = (
    "DELETE FROM nonces WHERE (access_key_id, nonce) IN (SELECT access_key_id, nonce"
    " FROM nonces WHERE expires_ms <= $1 ORDER BY expires_ms LIMIT $2)"
)


class PostgresStore(OpenClose):
    """A :class:`~...ledger.store.LedgerStore` on one PostgreSQL database.

    ``writes`` counts committed write statements (group commits). Build it from a URL
    with :meth:`from_url` (what ``open_store`` does); the store is returned unopened.
    """

    def __init__(
        self,
        options: PostgresOptions,
        *,
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        self._options = options
        self._clock: Clock = clock or SystemClock()
        self._create = create
        self._pool: asyncpg.Pool | None = None
        self._birth: datetime | None = None  # the ledger this store belongs to, once opened
        self._lifecycle = asyncio.Lock()
        self.writes = 0
        #: Migration versions applied by the last ``open()`` (empty if already current).
        self.applied_migrations: tuple[int, ...] = ()

    @classmethod
    def from_url(
        cls, url: str, *, clock: Clock | None = None, create: bool = True
    ) -> PostgresStore:
        """``ValueError`` for a URL that is not a usable ``postgresql://`` one."""
        return cls(parse_url(url), clock=clock, create=create)

    @property
    def where(self) -> str:
        """The database's URL without its password."""
        return self._options.where

    @property
    def options(self) -> PostgresOptions:
        """What it connects with (the rating store beside it uses the same)."""
        return self._options

    def __repr__(self) -> str:
        return f"PostgresStore({self._options.where!r})"

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        async with self._lifecycle:
            # Only the first open may create: once this store has held a ledger, an empty
            # database at the URL is that ledger gone, not a ledger to start.
            await self._open(create=self._birth is None and self._create)

    async def close(self) -> None:
        async with self._lifecycle:
            await self._close()

    async def reopen(self) -> None:
        """Drop the pool and connect again: never creating, and only the same ledger."""
        async with self._lifecycle:
            await self._close()
            await self._open(create=self._birth is None and self._create)

    async def check(self) -> None:
        try:
            birth = await self._run(ledger_birth)
        except StoreError as exc:
            raise StoreError(f"ledger store unreachable: {exc}") from exc
        self._same_ledger(birth)

    async def _open(self, *, create: bool) -> None:
        if self._pool is not None:
            return
        o = self._options
        try:
            pool = await asyncpg.create_pool(
                o.dsn,
                min_size=o.pool_min,
                max_size=o.pool_max,
                timeout=o.connect_timeout,
                command_timeout=o.command_timeout,
                # The ledger's times are UTC; a session zone changes nothing we read
                # (timestamptz arrives as an aware UTC datetime), but logs stay readable.
                server_settings={"timezone": "UTC"},
            )
        except _FAILURES as exc:
            raise StoreError(f"cannot connect to ledger {o.where}: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                applied = await apply_migrations(conn, create=create, where=o.where)
                birth = await ledger_birth(conn)
        except StoreError:
            await _close_pool(pool)
            raise
        except _FAILURES as exc:
            await _close_pool(pool)
            raise StoreError(f"cannot migrate ledger {o.where}: {exc}") from exc
        if self._birth is not None and birth != self._birth:
            await _close_pool(pool)
            raise StoreError(
                f"{o.where} is a different ledger (created {birth}, not {self._birth}): "
                "not writing into it; point the URL back at the real ledger"
            )
        self._pool = pool
        self._birth = birth
        self.applied_migrations = tuple(applied)

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await _close_pool(pool)

    def _same_ledger(self, birth: datetime | None) -> None:
        if birth != self._birth:
            raise StoreError(
                f"{self._options.where} is not the ledger this store opened "
                f"(created {birth}, not {self._birth}): point the URL back at the real ledger"
            )

    async def _run(self, fn: Any, *args: Any) -> Any:
        """``await fn(conn, *args)`` on a pooled connection; any failure a ``StoreError``."""
        pool = self._pool
        if pool is None:
            raise StoreError("ledger store is not open")
        try:
            async with pool.acquire(timeout=self._options.connect_timeout) as conn:
                return await fn(conn, *args)
        except _FAILURES as exc:
            raise StoreError(f"{exc.__class__.__name__}: {exc}") from exc

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run(conn: Conn) -> list[asyncpg.Record]:
            return await conn.fetch(sql, *args)

        try:
            rows: list[asyncpg.Record] = await self._run(run)
        except StoreError as exc:
            raise StoreError(f"ledger read failed: {exc}") from exc
        return rows

    # -- writes ----------------------------------------------------------------------------

    async def write(
        self,
        records: Sequence[CallRecord],
        counts: Sequence[OutcomeCount],
        nonces: Sequence[ClaimedNonce] = (),
    ) -> None:
        if not records and not counts and not nonces:
            return
        args = _write_arguments(records, counts, nonces, self._clock.now())

        async def run(conn: Conn) -> None:
            await conn.execute(_WRITE, *args)

        try:
            await self._run(run)
        except StoreError as exc:
            raise StoreError(f"ledger write failed: {exc}") from exc
        self.writes += 1

    async def live_nonces(
        self, now: float, *, chunk: int = 10_000
    ) -> AsyncIterator[list[ClaimedNonce]]:
        # Keyset pages on the key: each page is one short read, writes go on between.
        cutoff = math.floor(now * 1000)
        after: tuple[str, str] | None = None
        while True:
            if after is None:
                rows = await self._fetch(_FIRST_NONCES, cutoff, chunk)
            else:
                rows = await self._fetch(_NEXT_NONCES, cutoff, chunk, *after)
            if rows:
                yield [
                    ClaimedNonce(
                        account=r[2], access_key_id=r[0], nonce=r[1], expires_at=r[3] / 1000
                    )
                    for r in rows
                ]
            if len(rows) < chunk:
                return
            after = (rows[-1][0], rows[-1][1])

    async def prune_nonces(self, now: float, limit: int) -> int:
        async def run(conn: Conn) -> str:
            return await conn.execute(_PRUNE_NONCES, math.floor(now * 1000), max(limit, 0))

        try:
            status: str = await self._run(run)
        except StoreError as exc:
            raise StoreError(f"cannot prune nonces: {exc}") from exc
        return _affected(status)

    async def add_credential(self, row: CredentialRow) -> None:
        async def run(conn: Conn) -> None:
            await conn.execute(
                f"INSERT INTO credentials ({CREDENTIAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                _clean(row.access_key_id),
                _clean(row.account),
                _clean(row.secret),
                row.enabled,
                _utc(row.created_at),
                None if row.disabled_at is None else _utc(row.disabled_at),
            )

        try:
            await self._run(run)
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise ValueError(f"AccessKeyId {row.access_key_id!r} already exists") from None
            raise StoreError(f"cannot add credential: {exc}") from exc

    async def set_credential_enabled(
        self, access_key_id: str, enabled: bool, when: datetime
    ) -> bool:
        # Disabling twice keeps the first disabled_at: it is when the key stopped working.
        sql = (
            "UPDATE credentials SET enabled = $1,"
            " disabled_at = CASE WHEN $1 THEN NULL ELSE COALESCE(disabled_at, $2) END"
            " WHERE access_key_id = $3"
        )
        at = _utc(when)

        async def run(conn: Conn) -> str:
            return await conn.execute(sql, enabled, at, _clean(access_key_id))

        try:
            status: str = await self._run(run)
        except StoreError as exc:
            raise StoreError(f"cannot update credential: {exc}") from exc
        return _affected(status) > 0

    # -- reads -----------------------------------------------------------------------------

    async def calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[CallRecord]:
        sql, args = calls_page(_SQL, Filter(account, since, until), None, limit)
        return [_record(r) for r in await self._fetch(sql, *args)]

    async def iter_calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        page: int = 1000,
    ) -> AsyncIterator[list[CallRecord]]:
        where = Filter(account, since, until)

        async def fetch(after: tuple[Any, Any] | None, size: int) -> list[asyncpg.Record]:
            sql, args = calls_page(_SQL, where, after, size)
            return await self._fetch(sql, *args)

        async for rows in pages(fetch, _call_key, _record, limit=limit, page=page):
            yield rows

    async def count_calls(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        sql, args = count_calls_sql(_SQL, Filter(account, since, until))
        rows = await self._fetch(sql, *args)
        return int(rows[0][0])

    async def summary(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[CallSummary]:
        sql, args = summary_sql(_SQL, Filter(account, since, until))
        rows = await self._fetch(sql, *args)
        return [
            CallSummary(
                account=r[0],
                category=r[1],
                action=r[2],
                item=r[3],
                calls=int(r[4]),
                first=_aware(r[5]),
                last=_aware(r[6]),
            )
            for r in rows
        ]

    async def outcome_counts(
        self,
        *,
        account: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[OutcomeCount]:
        sql, args = outcome_counts_sql(_SQL, Filter(account, since, until))
        rows = await self._fetch(sql, *args)
        return [
            OutcomeCount(
                minute=_aware(r[0]),
                account=r[1],
                category=r[2],
                action=r[3],
                outcome=Outcome(r[4]),
                detail=r[5],
                count=int(r[6]),
            )
            for r in rows
        ]

    async def list_credentials(self, *, account: str | None = None) -> list[CredentialRow]:
        sql, args = credentials_sql(_SQL, account)
        rows = await self._fetch(sql, *args)
        return [
            CredentialRow(
                access_key_id=r[0],
                account=r[1],
                secret=r[2],
                enabled=bool(r[3]),
                created_at=_aware(r[4]),
                disabled_at=None if r[5] is None else _aware(r[5]),
            )
            for r in rows
        ]


def _write_arguments(
    records: Sequence[CallRecord],
    counts: Sequence[OutcomeCount],
    nonces: Sequence[ClaimedNonce],
    now: datetime,
) -> list[Any]:
    """The write statement's 24 arrays (and the commit's ``recorded_at``), column-wise."""
    clean = _clean
    columns: list[list[Any]] = [[] for _ in range(12)]
    (ids, request_ids, accounts, keys, categories, actions, versions, items, times,
     statuses, codes, latencies) = columns  # fmt: skip
    # Key order (see the module docstring); the first of duplicate ids wins, as before.
    unique: dict[str, CallRecord] = {}
    for r in records:
        unique.setdefault(clean(r.id), r)
    for rid in sorted(unique):
        r = unique[rid]
        ids.append(rid)
        request_ids.append(None if r.request_id is None else clean(r.request_id))
        accounts.append(clean(r.account))
        keys.append(clean(r.access_key_id))
        categories.append(clean(r.category))
        actions.append(clean(r.action))
        versions.append(clean(r.version))
        items.append(clean(r.item))
        times.append(r.occurred_at)  # aware: CallRecord refuses naive times
        statuses.append(r.status)
        codes.append(None if r.error_code is None else clean(r.error_code))
        latencies.append(r.latency_ms)
    # One row per key (an upsert cannot touch a row twice in one statement).
    held: dict[tuple[str, str], tuple[str, int]] = {}
    for n in nonces:
        key = (clean(n.access_key_id), clean(n.nonce))
        expires = round(n.expires_at * 1000)
        old = held.get(key)
        if old is None or expires > old[1]:
            held[key] = (clean(n.account), expires)
    summed: dict[tuple[datetime, str, str, str, str, str], int] = {}
    for c in counts:
        ckey = (
            _utc(c.minute),
            clean(c.account),
            clean(c.category),
            clean(c.action),
            c.outcome.value,
            clean(c.detail),
        )
        summed[ckey] = summed.get(ckey, 0) + c.count
    nonce_keys = sorted(held)
    count_keys = sorted(summed)
    return [
        *columns,
        _utc(now),
        [k[0] for k in nonce_keys],
        [k[1] for k in nonce_keys],
        [held[k][0] for k in nonce_keys],
        [held[k][1] for k in nonce_keys],
        *([k[i] for k in count_keys] for i in range(6)),
        [summed[k] for k in count_keys],
    ]


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold U+0000 (see the module docstring).
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _utc(when: datetime) -> datetime:
    """An aware datetime; naive ones are refused like the other stores refuse them."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: ledger times must be timezone-aware")
    return when


def _aware(value: datetime) -> datetime:
    # asyncpg returns timestamptz as an aware datetime in UTC (datetime.timezone.utc).
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _record(r: asyncpg.Record) -> CallRecord:
    return CallRecord(
        id=r[0],
        request_id=r[1],
        account=r[2],
        access_key_id=r[3],
        category=r[4],
        action=r[5],
        version=r[6],
        item=r[7],
        occurred_at=_aware(r[8]),
        status=int(r[9]),
        error_code=r[10],
        latency_ms=float(r[11]),
    )


def _affected(status: str) -> int:
    """The row count of a command tag (``DELETE 3``, ``UPDATE 1``)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _call_key(r: asyncpg.Record) -> tuple[Any, Any]:
    return r[8], r[0]  # occurred_at, id as stored: the keyset cursor


# $n placeholders, aware datetimes, text without NUL, LIMIT NULL for all.
_SQL = Dialect(numbered=True, time=_utc, text=_clean, no_limit=None)


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully if the server answers; otherwise drop the connections at once."""
    try:
        await asyncio.wait_for(pool.close(), timeout=5.0)
    except _FAILURES:
        _log.debug("closing the ledger pool failed; terminating it", exc_info=True)
        pool.terminate()
