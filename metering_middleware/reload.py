"""Background reloads of a request-path snapshot (AccessKeys, entitlements).

The request path never queries a store: it reads a snapshot, and this object
reloads that snapshot behind it:

- one reload at a time; every caller that waits for one shares it;
- at most one attempt per ``interval`` (measured on the injected clock), so a
  flood of misses cannot hammer the store;
- a failed reload is logged, the old snapshot stays, the next attempt comes an
  interval later.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from .clock import Clock

__all__ = ["BackgroundReload"]

log = logging.getLogger("metering_middleware")


class BackgroundReload:
    __slots__ = ("_attempted_at", "_clock", "_inflight", "_interval", "_load", "_what")

    def __init__(
        self, load: Callable[[], Awaitable[None]], clock: Clock, interval: float, what: str
    ) -> None:
        if interval <= 0:
            raise ValueError("refresh_interval must be positive")
        self._load = load
        self._clock = clock
        self._interval = interval
        self._what = what
        self._attempted_at = -math.inf
        self._inflight: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        return self._inflight is not None

    def due(self) -> bool:
        """True when the last attempt is at least an interval old."""
        return self._clock.monotonic() - self._attempted_at >= self._interval

    def start(self) -> asyncio.Future[None]:
        """Start a reload now (callers check ``running`` first)."""
        self._attempted_at = self._clock.monotonic()
        task = asyncio.ensure_future(self._load())
        task.add_done_callback(self._finished)
        self._inflight = task
        return task

    def start_if_due(self) -> None:
        """Stale-while-reload: start one behind the caller if due and none is running."""
        if self._inflight is None and self.due():
            self.start()

    async def wait(self) -> None:
        """Join the running reload, or start one; raise what it raised."""
        await asyncio.shield(self._inflight or self.start())

    async def join(self) -> None:
        """Wait for a background reload, if one is running (tests, shutdown); never raises."""
        if self._inflight is not None:
            await asyncio.wait([self._inflight])

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._inflight = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("%s reload failed, keeping the previous snapshot: %r", self._what, exc)
