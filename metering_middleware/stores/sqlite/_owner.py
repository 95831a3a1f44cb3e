"""One thread that owns a store's SQLite connection and runs all its database work.

Why a thread of our own, and not aiosqlite or an executor (measured in
``bench/sqlite_owner_bench.py``, numbers in bench/RESULTS.md "SQLite owner thread"):

- aiosqlite's public API is one thread hand-off per statement: a group commit is five
  (BEGIN, three ``executemany``, COMMIT), and each hand-off costs more CPU than the
  inserts of a small batch;
- its private ``Connection._execute`` runs a whole transaction in one hand-off, but is
  private; and its thread owns only the connection, so opening, migrating, checking the
  file's identity (``os.stat``) and checkpointing ran elsewhere (a second worker thread,
  or the event loop itself);
- a one-worker ``ThreadPoolExecutor`` (``loop.run_in_executor``) is the same idea with a
  ``concurrent.futures.Future`` chained to an asyncio one: more work per call for nothing.

This is aiosqlite's own mechanism (a ``SimpleQueue`` read by one thread, results handed
back with ``loop.call_soon_threadsafe``) without its per-statement API: a call is a plain
function run in the thread, a whole transaction or a whole read. Calls run one at a
time in submission order, so no reader runs inside a writer's transaction, and a caller
cancelled while its call runs does not reorder anything: the call completes in the thread
and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

__all__ = ["OwnerThread"]

_T = TypeVar("_T")
_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"] | None


class OwnerThread:
    """A started thread running submitted calls in order until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self._jobs: SimpleQueue[_Job] = SimpleQueue()
        self._stopping = False
        # A daemon: a store never closed must not keep the interpreter from exiting
        # (SQLite's commits are atomic; a call cut off at exit is one never confirmed).
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return not self._stopping

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in the thread, after every call submitted before it."""
        if self._stopping:
            raise RuntimeError("the store's SQLite thread is stopped")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, args, future))
        return await future

    async def stop(self, last: Callable[[], object] | None = None) -> None:
        """Run ``last`` (closing the connection) after everything queued, then end."""
        if self._stopping:
            return
        if last is not None:
            try:
                await self.call(last)
            finally:
                self._stopping = True
                self._jobs.put(None)
        else:
            self._stopping = True
            self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, future = job
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, whatever it is
                _hand_back(future, _set_exception, exc)
            else:
                _hand_back(future, _set_result, result)


def _hand_back(future: asyncio.Future[Any], setter: Callable[..., None], value: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        future.get_loop().call_soon_threadsafe(setter, future, value)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
