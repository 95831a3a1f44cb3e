"""Recording notices from the request path without ever holding up a call.

``NoticeRecorder.emit(notice)`` only puts the notice on a bounded queue (no I/O, never
raises); a task of its own writes what is queued to the ledger file in a worker thread,
one transaction per batch, through :func:`.records.record_notice` (so the notice is
recorded once, with its webhook delivery owed). A full queue or a failing write drops
the notice with a log line: what the request path reports (the spend guard's "cap
reached") is an estimate that settlement confirms, and settlement's detector records the
same notice under the same id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from decimal import Decimal
from os import PathLike

from ..clock import Clock
from ..ledger.migrate import connect_existing
from .model import Notice, cap_notice
from .records import record_notice

__all__ = ["NoticeRecorder"]

log = logging.getLogger("metering_middleware.notices")


class NoticeRecorder:
    """Writes emitted notices to the ledger at ``ledger_file``, off the event loop."""

    def __init__(
        self,
        ledger_file: str | PathLike[str],
        clock: Clock,
        *,
        max_pending: int = 1000,
        batch: int = 100,
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        self._path = ledger_file
        self._clock = clock
        self._queue: asyncio.Queue[Notice] = asyncio.Queue(max_pending)
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._on_recorded = on_recorded  # e.g. wake the webhook sender
        self.recorded = 0
        self.dropped = 0

    def emit(self, notice: Notice) -> bool:
        """Queue ``notice`` to be recorded; False (and a warning) if it had to be dropped.

        Call it on the event loop's thread. It does no I/O and never raises."""
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("notice queue full: dropped id=%s (settlement re-detects it)", notice.id)
            return False
        except Exception:  # never into a call
            self.dropped += 1
            log.exception("notice not queued: id=%s", notice.id)
            return False
        return True

    def cap_reached(self, account: str, month: str, *, cap: Decimal, spend: Decimal) -> bool:
        """The spend guard's hook: ``account`` reached its ``cap`` for billing ``month``
        (YYYY-MM) by its estimated ``spend``. Same id as settlement's notice of it."""
        try:
            notice = cap_notice(
                account, month, self._clock.now(), cap=cap, spend=spend, source="guard"
            )
        except Exception:  # never into a call
            log.exception("cap notice not built for account=%s month=%s", account, month)
            return False
        return self.emit(notice)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="metering-notices")

    async def stop(self) -> None:
        """Record what is queued, then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        await self.flush()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def flush(self) -> None:
        """Wait until every notice emitted so far is written (or dropped)."""
        await self._queue.join()

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                new = await asyncio.to_thread(self._write, batch)
                self.recorded += new
                if new and self._on_recorded is not None:
                    self._on_recorded()
            except Exception:
                self.dropped += len(batch)
                log.exception(
                    "could not record %d notice(s) (%s); settlement re-detects them",
                    len(batch),
                    ", ".join(n.id for n in batch),
                )
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _write(self, batch: list[Notice]) -> int:
        conn = connect_existing(self._path, timeout=5.0)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock.now()
                new = sum(record_notice(conn, n, now) for n in batch)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return new
        finally:
            conn.close()
