"""The ledger writer: one task owns the store and commits records in groups.

Callers ``submit()`` records and get a future resolved after their batch's
COMMIT (each caller its own plain future; one outcome per batch settles them
all). The hot path is two list appends; the writer task is woken once per
batch, not per record.

- ``strict``: the writer commits as soon as it is woken and takes everything
  pending. While one commit is in flight new submissions gather into the next
  batch (group commit), so the commit rate adapts to the load by itself.
- ``batched``: a batch is committed ``flush_interval`` after its first record
  (or as soon as it holds ``max_batch`` records). Callers usually do not wait.
  A kill (``kill -9``, power loss with ``synchronous=FULL``) loses the records
  not committed yet: the open batch (at most ``flush_interval`` old) and a
  batch whose commit is in flight, so every lost record was submitted at most
  ``flush_interval`` + one commit's duration (+ the writer task's wake-up on a
  busy event loop) before the kill, not "at most ``flush_interval``". A clean
  ``stop()`` loses nothing.

Outcome counters (``count()``) are summed per minute in memory and go with the
next batch, or on their own at most ``count_interval`` after the first one.

Claimed signature nonces (``hold_nonce()``) ride along the same way: with the
next batch, or on their own after the same delay as counters. A call claims its
nonce at admission, before its record exists, so its nonce is always in the
batch of its record or an earlier one: a committed record always has its nonce
committed (and a journaled one, journaled). Expired nonces are pruned by the
writer task, a bounded number per pass (``prune_nonces`` of the store).

Failure policy (never lose a record, never duplicate one):

1. ``store.write`` fails: the batch is appended to the journal and fsynced, and
   its future resolves (the records are durable). The store is marked down; no
   further batch waits on it. Every ``retry_interval`` the writer checks the
   store (``reopen()`` if it has one: a replaced SQLite file is opened afresh),
   replays the journal into it (ids are idempotent) and truncates the journal.
2. The journal fails too (or there is none): the batch's future fails with
   :class:`LedgerUnavailable`, its records are *held* in memory and retried
   (store first, then journal) every ``retry_interval``, and ``accepting`` is
   False until they are durable again, so the middleware refuses new calls.
3. ``stop()`` flushes what is pending (to the store or the journal) and raises
   ``LedgerUnavailable`` if records are still only in memory. A cancelled
   ``stop()`` does not cancel the writer task (a commit in flight finishes).
4. Anything unexpected (a bug, an exception type nobody planned for, a
   cancellation inside a store or journal call): a batch that has left the
   open batch is held and its callers get ``LedgerUnavailable`` (see
   ``BatchSink.persist``), and the writer goes on. If the writer task itself
   ends for any reason other than ``stop()``, every future still open is
   failed, pending records are held (``stop()`` then raises and logs them),
   and the writer stops ``accepting``: no caller ever waits on a writer that
   is gone.

Decisions use the injected clock; the waits between them are real but short
and woken by events, and :meth:`tick`, :meth:`flush_now` and :meth:`retry_now`
let tests that move a ``ManualClock`` drive the writer without sleeping.

Each caller's future keeps the ``asyncio.Future`` contract: cancelling it
(a client that went away, a ``wait_for`` that timed out) cancels that caller's
wait at once and nothing else; the record stays in its batch and is committed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal

from ..clock import Clock, SystemClock, utc_from_timestamp
from ..logs import fields
from ._sink import Batch, BatchFuture, BatchSink, LedgerUnavailable, fail
from .codec import CountKey, minute_of
from .journal import Journal
from .records import CallRecord, ClaimedNonce, Outcome, OutcomeCount
from .store import LedgerStore

__all__ = ["LedgerUnavailable", "LedgerWriter", "WriterStats"]

_NEW, _RUNNING, _STOPPING, _STOPPED = "new", "running", "stopping", "stopped"
_BROKEN = "broken"  # the task ended unexpectedly: nothing is written any more
_GATHER_PASSES = 8  # at most this many event-loop passes spent growing a strict group
_MAX_WAIT = 1.0  # real seconds between re-reading the clock when nothing wakes the task
_PRUNE_EVERY = 60.0  # seconds between prunes of expired nonces (while nonces are held)
_PRUNE_CHUNK = 5000  # nonces deleted per prune: a short transaction; a full one prunes again


@dataclass(frozen=True, slots=True)
class WriterStats:
    committed: int  # records written to the store (batches, held batches and replays)
    journaled: int  # records appended to the journal
    replayed: int  # records replayed from the journal into the store
    pending: int  # records in memory now: the open batch plus held ones
    held: int  # records held after both the store and the journal failed
    commits: int  # store write transactions
    store_failures: int
    journal_failures: int


class LedgerWriter:
    def __init__(
        self,
        store: LedgerStore,
        *,
        journal: Journal | None,
        mode: Literal["strict", "batched"] = "strict",
        flush_interval: float = 0.05,
        max_batch: int = 1000,
        retry_interval: float = 1.0,
        count_interval: float = 1.0,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if mode not in ("strict", "batched"):
            raise ValueError(f"mode must be 'strict' or 'batched', not {mode!r}")
        if flush_interval <= 0 or retry_interval <= 0 or count_interval <= 0:
            raise ValueError("flush_interval, retry_interval and count_interval must be > 0")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._journal = journal
        self._strict = mode == "strict"
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._count_delay = count_interval if self._strict else min(count_interval, flush_interval)
        self._clock: Clock = clock or SystemClock()
        self._log = logger or logging.getLogger("metering_middleware.ledger")
        self._sink = BatchSink(
            store,
            journal,
            retry_interval=retry_interval,
            replay_chunk=max(max_batch, 1000),
            clock=self._clock,
            log=self._log,
        )
        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._requests: list[tuple[asyncio.Future[bool], bool, bool]] = []
        # The open batch.
        self._pending: list[CallRecord] = []
        self._future: BatchFuture | None = None
        self._first_at = 0.0
        self._counts: dict[CountKey, int] = {}
        self._counts_first_at = 0.0
        #: ``count_at``'s minute: its number (epoch seconds // 60) and its datetime.
        self._minute_n = -1.0
        self._minute = minute_of(datetime.fromtimestamp(0, UTC))
        self._nonces: list[ClaimedNonce] = []
        self._nonces_first_at = 0.0
        # The first pass prunes what an earlier run left expired; later ones follow use.
        self._prune_at = 0.0
        self._prune_wanted = True
        self._failed_passes = 0  # consecutive passes that raised

    # -- the hot path ----------------------------------------------------------------------

    def submit(self, record: CallRecord) -> asyncio.Future[None]:
        """Queue ``record``; the returned future (this caller's own) resolves once durable."""
        batch = self._future
        if batch is None:
            if self._state is not _RUNNING and self._state is not _STOPPING:
                raise RuntimeError(f"ledger writer is {self._state}, not running")
            assert self._loop is not None
            batch = self._future = BatchFuture(self._loop)
            self._first_at = self._clock.monotonic()
            self._wake.set()
        pending = self._pending
        pending.append(record)
        if len(pending) == self._max_batch:
            self._wake.set()
        return batch.waiter()

    def count(
        self,
        account: str,
        category: str,
        action: str,
        outcome: Outcome,
        detail: str,
        when: datetime,
    ) -> None:
        """Add one call to the per-minute outcome counter it belongs to."""
        self._add((minute_of(when), account, category, action, outcome, detail))

    def count_at(
        self,
        account: str,
        category: str,
        action: str,
        outcome: Outcome,
        detail: str,
        t: float,
    ) -> None:
        """``count`` for an instant in epoch seconds (the meter's arrival): the minute's
        datetime is made once a minute, not per call (``datetime.replace`` was ~3 µs)."""
        minute = t // 60
        if minute != self._minute_n:
            self._minute_n = minute
            self._minute = utc_from_timestamp(minute * 60)
        self._add((self._minute, account, category, action, outcome, detail))

    def _add(self, key: CountKey) -> None:
        counts = self._counts
        if not counts:
            if self._state is not _RUNNING and self._state is not _STOPPING:
                raise RuntimeError(f"ledger writer is {self._state}, not running")
            self._counts_first_at = self._clock.monotonic()
            self._wake.set()
        counts[key] = counts.get(key, 0) + 1

    def hold_nonce(self, nonce: ClaimedNonce) -> None:
        """Keep a claimed signature nonce in the store with the next batch (no future)."""
        nonces = self._nonces
        if not nonces:
            if self._state is not _RUNNING and self._state is not _STOPPING:
                raise RuntimeError(f"ledger writer is {self._state}, not running")
            self._nonces_first_at = self._clock.monotonic()
            # Only to set the deadline: a strict record submitted meanwhile takes it along.
            self._wake.set()
        nonces.append(nonce)

    # -- state -----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while batches go to the store (not to the journal or memory)."""
        return self._state is _RUNNING and not self._sink.store_down and not self._sink.held

    @property
    def accepting(self) -> bool:
        """False while records are only in memory: the middleware answers 503 then."""
        return self._state is _RUNNING and not self._sink.held

    @property
    def stats(self) -> WriterStats:
        held = self._sink.held_records
        return WriterStats(pending=len(self._pending) + held, held=held, **self._sink.n)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Replay a non-empty journal left by an earlier run, then start the writer task."""
        if self._state is not _NEW:
            raise RuntimeError(f"ledger writer is {self._state}; a writer starts once")
        self._loop = asyncio.get_running_loop()
        self._state = _RUNNING
        self._prune_at = self._clock.monotonic()
        if self._journal is not None and await self._journal.measure() > 0:
            self._sink.journal_dirty = True
            await self._sink.recover()
        self._task = self._loop.create_task(self._run(), name="ledger-writer")

    async def stop(self) -> None:
        """Commit (or journal) everything pending and stop the writer task."""
        task = self._task
        if task is None or self._state is _STOPPED:
            self._state = _STOPPED
            return
        if self._state is _RUNNING:
            self._state = _STOPPING
            self._wake.set()
        try:
            # Shielded: a cancelled stop() must not cancel a commit in flight.
            await asyncio.shield(task)
        except BaseException:
            if not task.done():
                raise  # stop() itself was cancelled; the task goes on to the end
            # The task failed: it logged why and settled every future on its way out.
        self._state = _STOPPED
        held = self._sink.held_records
        if held:
            self._log.critical(
                "ledger writer stopped with %d records neither committed nor journaled",
                held,
                extra=fields("ledger.records_lost", records=held),
            )
            raise LedgerUnavailable(f"{held} ledger records could not be made durable")

    async def __aenter__(self) -> LedgerWriter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def tick(self) -> None:
        """Run one pass now, deciding by the clock (for tests that move a ManualClock)."""
        await self._request(flush=False, retry=False)

    async def flush_now(self) -> None:
        """Commit (or journal) the open batch and the counters now, whatever the clock says."""
        await self._request(flush=True, retry=False)

    async def retry_now(self) -> bool:
        """Try to recover now if the store is down or records are held; return ``healthy``."""
        return await self._request(flush=False, retry=True)

    async def _request(self, *, flush: bool, retry: bool) -> bool:
        if self._state is not _RUNNING or self._loop is None:
            raise RuntimeError(f"ledger writer is {self._state}, not running")
        done: asyncio.Future[bool] = self._loop.create_future()
        self._requests.append((done, flush, retry))
        self._wake.set()
        return await done

    # -- the writer task -------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._passes()
        except BaseException as exc:
            self._abandon(exc)
            raise

    def _abandon(self, exc: BaseException) -> None:
        """The task is ending other than by ``stop()``: settle every future still open."""
        self._state = _STOPPED if self._state is _STOPPING else _BROKEN
        self._log.critical(
            "ledger writer task ended unexpectedly (%r): refusing records",
            exc,
            extra=fields("ledger.writer_failed", reason=repr(exc), outcome="refusing"),
        )
        self._hold_open_batch("ledger writer stopped unexpectedly")
        for done, _, _ in self._requests:
            if not done.done():
                done.set_result(False)
        self._requests = []

    async def _passes(self) -> None:
        while True:
            requests: list[tuple[asyncio.Future[bool], bool, bool]] = []
            stopping = self._state is _STOPPING
            try:
                await self._wait()
                requests, self._requests = self._requests, []
                stopping = self._state is _STOPPING
                await self._step(
                    force_flush=stopping or any(flush for _, flush, _ in requests),
                    force_retry=stopping or any(retry for _, _, retry in requests),
                )
                self._failed_passes = 0
            except Exception as exc:  # a bug here must not stop the ledger
                await self._pass_failed(exc)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # the writer task itself is cancelled: _run settles the futures
                await self._pass_failed(exc)  # a stray one, raised by a store or journal
            for done, _, _ in requests:
                if not done.done():
                    done.set_result(self.healthy)
            if stopping and not self._pending and not self._counts and not self._nonces:
                return

    async def _wait(self) -> None:
        timeout = self._wait_timeout()
        if timeout != 0.0:
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
        self._wake.clear()
        if self._strict and self._pending and not self._requests and self._state is _RUNNING:
            await self._gather()

    async def _pass_failed(self, exc: BaseException) -> None:
        """An unexpected failure in a pass: nobody may wait on a pass that may never come.

        A batch the pass had already cut is held by ``BatchSink.persist``. When passes
        fail twice in a row, the open batch is held too (its callers get
        ``LedgerUnavailable`` now; its records are retried with the held ones): the
        failure may repeat before any flush. The next pass waits to be woken or up to
        ``_MAX_WAIT``, so a failure that repeats cannot spin the event loop.
        """
        self._failed_passes += 1
        self._log.error(
            "ledger writer pass failed",
            exc_info=exc,
            extra=fields("ledger.writer_failed", reason=repr(exc)),
        )
        if self._failed_passes > 1:
            self._hold_open_batch("ledger writer passes keep failing")
        try:
            async with asyncio.timeout(_MAX_WAIT):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _hold_open_batch(self, message: str) -> None:
        records, batch = self._pending, self._future
        self._pending, self._future = [], None
        counts = [OutcomeCount(*key, count=n) for key, n in self._counts.items()]
        self._counts = {}
        nonces, self._nonces = self._nonces, []
        if records or counts or nonces:
            fail(batch, message)
            self._sink.held.append(Batch(records, counts, batch, nonces))

    async def _gather(self) -> None:
        """Strict: let the calls already under way join the batch before it is cut.

        The first submission wakes the writer at once, and a commit (an fsync) is
        far dearer than a record, so cutting the batch then would commit a group of
        one while the other calls handled in the same event-loop pass submit just
        after it. Each yield lets everything already runnable (and the I/O the loop
        polls meanwhile) run first; it stops as soon as a pass adds nothing, so a lone
        call waits one loop pass, and the group stays bounded.
        """
        pending = self._pending
        for _ in range(_GATHER_PASSES):
            before = len(pending)
            await asyncio.sleep(0)
            if len(pending) == before or len(pending) >= self._max_batch:
                return

    def _wait_timeout(self) -> float | None:
        if self._wake.is_set() or self._requests or self._state is _STOPPING:
            return 0.0
        deadlines: list[float] = []
        if self._pending:
            if self._strict:
                return 0.0
            deadlines.append(self._first_at + self._flush_interval)
        if self._counts:
            deadlines.append(self._counts_first_at + self._count_delay)
        if self._nonces:
            deadlines.append(self._nonces_first_at + self._count_delay)
        if self._prune_wanted:
            deadlines.append(self._prune_at)
        if self._sink.needs_recovery:
            deadlines.append(self._sink.next_retry)
        if not deadlines:
            return None
        return min(max(0.0, min(deadlines) - self._clock.monotonic()), _MAX_WAIT)

    async def _step(self, *, force_flush: bool, force_retry: bool) -> None:
        now = self._clock.monotonic()
        if self._sink.needs_recovery and (force_retry or now >= self._sink.next_retry):
            await self._sink.recover()
        if force_flush or self._batch_due(now):
            await self._flush()
        if self._prune_wanted and now >= self._prune_at:
            await self._prune(now)

    def _batch_due(self, now: float) -> bool:
        if self._pending and (
            self._strict
            or len(self._pending) >= self._max_batch
            or now >= self._first_at + self._flush_interval
        ):
            return True
        if self._nonces and now >= self._nonces_first_at + self._count_delay:
            return True
        return bool(self._counts) and now >= self._counts_first_at + self._count_delay

    async def _flush(self) -> None:
        records, future = self._pending, self._future
        self._pending, self._future = [], None
        counts = [OutcomeCount(*key, count=n) for key, n in self._counts.items()]
        self._counts = {}
        nonces, self._nonces = self._nonces, []
        if records or counts or nonces:
            await self._sink.persist(Batch(records, counts, future, nonces))
            if nonces:
                self._prune_wanted = True

    async def _prune(self, now: float) -> None:
        deleted = await self._sink.prune_nonces(_PRUNE_CHUNK)
        if deleted >= _PRUNE_CHUNK:
            self._prune_at = now  # more are expired: go on next pass, between batches
        else:
            self._prune_at = now + _PRUNE_EVERY
            self._prune_wanted = False
