"""Where the ledger writer's batches go: the store, else the journal, else memory.

The writer (``writer.py``) decides when a batch is cut; this module makes it
durable and brings the store back after a failure. See ``writer.py`` for the
failure policy as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..clock import Clock
from ..logs import fields
from .codec import CountKey
from .journal import Journal
from .records import CallRecord, ClaimedNonce, OutcomeCount
from .store import LedgerStore

__all__ = ["Batch", "BatchFuture", "BatchSink", "LedgerUnavailable", "fail", "merge", "resolve"]


class LedgerUnavailable(Exception):
    """Neither the store nor the journal could make a batch durable.

    The records are kept in memory and retried; the writer stops ``accepting``.
    """


class BatchFuture:
    """One commit's outcome, told to every caller in the batch through its own future.

    Each caller gets a plain ``asyncio.Future`` (:meth:`waiter`) that keeps the whole
    Future contract: ``cancel()`` cancels that caller's future alone (a client that went
    away, a ``wait_for`` that timed out) and returns True, while the commit goes ahead
    for everybody else. One shared future could not be both: cancelling it would cancel
    the batch for all its callers, and refusing to be cancelled breaks ``cancel()``.
    """

    __slots__ = ("_done", "_loop", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: list[asyncio.Future[None]] = []
        self._done = False

    def waiter(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(future)
        return future

    def done(self) -> bool:
        return self._done

    def set_result(self) -> None:
        self._done = True
        for future in self._waiters:
            if not future.done():
                future.set_result(None)

    def set_exception(self, message: str) -> None:
        self._done = True
        for future in self._waiters:
            if not future.done():
                future.set_exception(LedgerUnavailable(message))
                future.exception()  # marks it retrieved: batched callers may never await it


@dataclass(slots=True)
class Batch:
    records: list[CallRecord]
    counts: list[OutcomeCount]
    future: BatchFuture | None
    #: Signature nonces claimed by calls since the last batch (committed with it).
    nonces: list[ClaimedNonce] = field(default_factory=list)


class BatchSink:
    """Owns the store on behalf of the writer task, and the state of its failures."""

    def __init__(
        self,
        store: LedgerStore,
        journal: Journal | None,
        *,
        retry_interval: float,
        replay_chunk: int,
        clock: Clock,
        log: logging.Logger,
    ) -> None:
        self._store = store
        self._journal = journal
        self._retry_interval = retry_interval
        self._replay_chunk = replay_chunk
        self._clock = clock
        self._log = log
        self.held: list[Batch] = []  # failed batches, only in memory
        self.store_down = False
        self._down_reason = ""  # logged when it changes, not on every retry
        self.journal_dirty = False  # the journal may hold records the store lacks
        self._journal_applied = 0  # bytes of the journal already replayed (truncate failed)
        self.next_retry = 0.0
        self.n = dict.fromkeys(
            ("committed", "journaled", "replayed", "commits", "store_failures", "journal_failures"),
            0,
        )

    @property
    def needs_recovery(self) -> bool:
        return self.store_down or bool(self.held) or self.journal_dirty

    @property
    def held_records(self) -> int:
        return sum(len(b.records) for b in self.held)

    async def persist(self, batch: Batch) -> None:
        """Make ``batch`` durable: in the store, else the journal, else hold it.

        Whatever happens, the batch ends up committed, journaled or held, and its
        future resolved or failed: it has left the writer's open batch, so nothing
        else would ever settle it. An unexpected error (a bug, a cancellation)
        holds it for retry, fails its callers, and is raised for the writer to log.
        """
        try:
            await self._persist(batch)
        except BaseException:
            if not (batch.future is not None and batch.future.done()) and batch not in self.held:
                fail(batch.future, "ledger write failed unexpectedly")
                self.held.append(batch)
            raise

    async def _persist(self, batch: Batch) -> None:
        if not self.store_down:
            try:
                await _write(self._store, batch.records, batch.counts, batch.nonces)
            except Exception as exc:
                self._store_failed(exc)
            else:
                self.n["committed"] += len(batch.records)
                self.n["commits"] += 1
                resolve(batch.future)
                return
        await self._journal_or_hold([batch])

    async def _journal_or_hold(self, new: list[Batch]) -> None:
        """Journal the held batches and ``new``; hold them if the journal fails too."""
        if self._journal is not None:
            batches = self.held + new
            records = [r for b in batches for r in b.records]
            nonces = [n for b in batches for n in b.nonces]
            try:
                await self._journal.append(
                    records, merge([c for b in batches for c in b.counts]), nonces
                )
            except Exception as exc:
                self.n["journal_failures"] += 1
                if not self.held:
                    self._log.error(
                        "ledger journal %s failed too (%s): holding records in memory, "
                        "refusing new calls",
                        self._journal.path,
                        exc,
                        extra=fields("ledger.journal_failed", reason=str(exc), outcome="holding"),
                    )
            else:
                self.n["journaled"] += len(records)
                self.journal_dirty = True
                for b in batches:
                    resolve(b.future)
                if self.held:
                    self._log.warning(
                        "ledger journal writable again: accepting calls",
                        extra=fields("ledger.journal_recovered", outcome="accepting"),
                    )
                    self.held = []
                return
        elif not self.held:
            self._log.error(
                "ledger store failed and there is no journal: refusing new calls",
                extra=fields("ledger.store_failed", outcome="refusing"),
            )
        for b in new:
            fail(b.future)
        self.held.extend(new)

    def _store_failed(self, exc: BaseException) -> None:
        self.n["store_failures"] += 1
        if not self.store_down:
            self.store_down = True
            self._down_reason = str(exc)
            self.next_retry = self._clock.monotonic() + self._retry_interval
            self._log.warning(
                "ledger store failed (%s): journaling until it recovers",
                exc,
                extra=fields("ledger.store_failed", reason=str(exc), outcome="journaling"),
            )

    async def recover(self) -> None:
        """Bring the store back, then give it the held records and the journal."""
        self.next_retry = self._clock.monotonic() + self._retry_interval
        was_down = self.store_down
        if was_down:
            try:
                await self._revive_store()
            except Exception as exc:
                if str(exc) != self._down_reason:  # e.g. gone, then another file put there
                    self._down_reason = str(exc)
                    self._log.warning(
                        "ledger store still down: %s",
                        exc,
                        extra=fields("ledger.store_failed", reason=str(exc), outcome="down"),
                    )
                else:
                    self._log.debug("ledger store still down: %s", exc)
                if self.held:
                    await self._journal_or_hold([])
                return
        if self.held:
            held = self.held
            records = [r for b in held for r in b.records]
            nonces = [n for b in held for n in b.nonces]
            try:
                await _write(
                    self._store, records, merge([c for b in held for c in b.counts]), nonces
                )
            except Exception as exc:
                self._store_failed(exc)
                await self._journal_or_hold([])
                return
            self.held = []
            self.n["committed"] += len(records)
            self.n["commits"] += 1
            self._log.warning(
                "ledger store took %d held records: accepting calls",
                len(records),
                extra=fields("ledger.held_committed", records=len(records), outcome="accepting"),
            )
        if self.journal_dirty and self._journal is not None and not await self._replay():
            return
        self.store_down = False
        if was_down:
            self._log.warning(
                "ledger store recovered", extra=fields("ledger.store_recovered", outcome="up")
            )

    async def _revive_store(self) -> None:
        try:
            await self._store.check()
        except Exception:
            reopen = getattr(self._store, "reopen", None)
            if reopen is None:
                raise
            await reopen()
            await self._store.check()

    async def _replay(self) -> bool:
        """Replay the journal into the store and truncate it; False if the store failed.

        Streamed: records go to the store a chunk at a time (each chunk idempotent by
        id), so memory is bounded by the chunk, not by the journal. The counters, which
        are not idempotent, are summed by key on the way and added in one last write,
        all at once or not at all.
        """
        assert self._journal is not None
        if not await self._replay_nonces():
            return False
        counts: dict[CountKey, int] = {}
        replayed = 0
        # From where an earlier replay stopped if its truncate failed: those records
        # are committed, and replaying their counters again would count them twice.
        chunks = self._journal.chunks(self._journal_applied, size=self._replay_chunk)
        try:
            async with contextlib.aclosing(chunks):
                while True:
                    try:
                        records, chunk_counts = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except OSError as exc:  # the store is fine; keep the journal, retry later
                        self._log.error(
                            "cannot read ledger journal %s: %s",
                            self._journal.path,
                            exc,
                            extra=fields("ledger.journal_failed", reason=str(exc)),
                        )
                        return True
                    for c in chunk_counts:
                        key = (c.minute, c.account, c.category, c.action, c.outcome, c.detail)
                        counts[key] = counts.get(key, 0) + c.count
                    if records:
                        await self._store.write(records, ())
                        self.n["commits"] += 1
                        replayed += len(records)
            if counts:
                await self._store.write((), [OutcomeCount(*k, count=n) for k, n in counts.items()])
                self.n["commits"] += 1
        except Exception as exc:
            self._store_failed(exc)
            return False
        if replayed:
            self.n["committed"] += replayed
            self.n["replayed"] += replayed
            self._log.warning(
                "ledger journal replayed: %d records",
                replayed,
                extra=fields("ledger.journal_replayed", records=replayed),
            )
        self._journal_applied = self._journal.replayed_to
        try:
            await self._journal.truncate()
        except OSError as exc:
            self._log.error(
                "cannot truncate ledger journal %s: %s",
                self._journal.path,
                exc,
                extra=fields("ledger.journal_failed", reason=str(exc)),
            )
            return True
        self.journal_dirty = False
        self._journal_applied = 0
        return True

    async def _replay_nonces(self) -> bool:
        """The journal's live nonces into the store, before its records: a record in the
        store always has its nonce there too. False if the store failed."""
        assert self._journal is not None
        try:
            nonces = await self._journal.replay_nonces(self._clock.time(), self._journal_applied)
        except OSError:
            return True  # _replay reads the file next and reports it
        if nonces:
            try:
                await self._store.write((), (), nonces)
            except Exception as exc:
                self._store_failed(exc)
                return False
            self.n["commits"] += 1
        return True

    async def prune_nonces(self, limit: int) -> int:
        """Drop up to ``limit`` expired nonces from the store; 0 while it is down."""
        if self.store_down:
            return 0
        try:
            return await self._store.prune_nonces(self._clock.time(), limit)
        except Exception as exc:  # not a record: nothing to journal, next time will do
            self._log.debug("pruning expired nonces failed: %s", exc)
            return 0


async def _write(
    store: LedgerStore,
    records: Sequence[CallRecord],
    counts: Sequence[OutcomeCount],
    nonces: Sequence[ClaimedNonce],
) -> None:
    # A batch without nonces makes the call it always made, so a store (or a test's
    # wrapper of one) written before nonces were stored still takes it.
    if nonces:
        await store.write(records, counts, nonces)
    else:
        await store.write(records, counts)


def merge(counts: Sequence[OutcomeCount]) -> list[OutcomeCount]:
    if len(counts) < 2:
        return list(counts)
    summed: dict[CountKey, int] = {}
    for c in counts:
        key = (c.minute, c.account, c.category, c.action, c.outcome, c.detail)
        summed[key] = summed.get(key, 0) + c.count
    return [OutcomeCount(*key, count=n) for key, n in summed.items()]


def resolve(future: BatchFuture | None) -> None:
    if future is not None and not future.done():
        future.set_result()


def fail(future: BatchFuture | None, message: str = "ledger store and journal both failed") -> None:
    if future is not None and not future.done():
        future.set_exception(message)
