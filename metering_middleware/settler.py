"""Settlement inside the gateway: one pass every ``settle_interval``, off the event loop.

A pass runs the same ``rating.settle`` as ``metering settle`` (then the notice
detectors, :mod:`.notices.detectors`), in a worker thread
with an event loop and a rating-store connection of its own, so no call waits on
rating: the deduction's CPU work and its SQLite reads never run on the serving
loop. Several gateway processes on one ledger may all run a settler; the
settlement lock lets exactly one settle at a time, and the others' passes find
it taken (``SettleBusy``) and skip their turn. ``metering settle`` works beside
them the same way.

The interval is measured on the event loop's clock (monotonic): a wall clock
stepped back does not stall it. What a pass settles is decided by the injected
clock (its ``now`` minus ``lag``), like the CLI's.
"""

from __future__ import annotations

import asyncio
import logging
import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .catalog import Catalog
from .clock import Clock
from .logs import fields
from .notices.detectors import detect_in_file
from .rating import (
    DEFAULT_GRACE,
    DEFAULT_LAG,
    RatingStore,
    SettleBusy,
    SettleReport,
    SqliteRatingStore,
    settle,
)

__all__ = ["DURATION_BUCKETS", "BackgroundSettler", "SettlerStats"]

log = logging.getLogger("metering_middleware.settler")


#: Upper bounds (seconds) of the settlement-duration histogram's buckets.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, math.inf)


@dataclass(slots=True)
class SettlerStats:
    passes: int = 0  # passes that settled (possibly nothing new)
    busy: int = 0  # passes skipped: another settler held the lock
    failures: int = 0  # passes that raised (logged)
    notices: int = 0  # notices recorded by the detectors after passes
    last: SettleReport | None = None
    #: What is settled (records effective before it), as of the last pass, this process's
    #: or, when it was busy, the one it found in the ledger; None before the first.
    horizon: datetime | None = None
    #: Passes that ran (settled or failed) per DURATION_BUCKETS bucket, and their sum (s).
    durations: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    duration_sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.durations[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds


class BackgroundSettler:
    """Settles the ledger every ``interval`` seconds: the SQLite file at ``ledger_file``,
    or the rating store ``open_store`` makes (one per pass, on the pass's own loop: e.g.
    PostgreSQL's, whose pools are bound to one loop). Notice detection reads the SQLite
    file; it does not run on other stores yet (docs/postgresql.md)."""

    __slots__ = (
        "_catalog",
        "_clock",
        "_grace",
        "_interval",
        "_lag",
        "_lock",
        "_open_store",
        "_pass",
        "_path",
        "_task",
        "stats",
    )

    def __init__(
        self,
        ledger_file: str,
        catalog: Catalog,
        clock: Clock,
        *,
        interval: float,
        lag: timedelta = DEFAULT_LAG,
        grace: timedelta = DEFAULT_GRACE,
        open_store: Callable[[], RatingStore] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("settle_interval must be positive")
        if not ledger_file and open_store is None:
            raise ValueError("a settler needs a ledger file or a rating store")
        self._path = ledger_file
        self._open_store = open_store
        self._catalog = catalog
        self._clock = clock
        self._interval = interval
        self._lag = lag
        self._grace = grace
        self._task: asyncio.Task[None] | None = None
        self._pass: asyncio.Future[SettleReport | None] | None = None
        self._lock = asyncio.Lock()  # one pass at a time in this process
        self.stats = SettlerStats()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._every_interval(), name="metering-settler")

    async def stop(self) -> None:
        """Stop the timer; a pass under way finishes first (its thread cannot be cut)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._pass is not None:
            await asyncio.gather(self._pass, return_exceptions=True)

    async def settle_now(self) -> SettleReport | None:
        """One pass that starts after this call (after the one under way, if any).

        ``None`` if it was skipped (another settler holds the lock) or failed (logged).
        """
        async with self._lock:
            self._pass = asyncio.ensure_future(asyncio.to_thread(self._pass_in_thread))
            # Shielded: a cancelled caller (stop) leaves the thread's pass to finish.
            return await asyncio.shield(self._pass)

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.settle_now()

    def _pass_in_thread(self) -> SettleReport | None:
        # Its own loop and connection: nothing of the serving loop is touched here.
        return asyncio.run(self._one_pass())

    async def _one_pass(self) -> SettleReport | None:
        started = self._clock.monotonic()
        try:
            store = (
                SqliteRatingStore(self._path, create=False)
                if self._open_store is None
                else self._open_store()
            )
            await store.open()
            try:
                report = await settle(
                    store, self._catalog, self._clock, lag=self._lag, grace=self._grace
                )
            except SettleBusy:
                self.stats.busy += 1
                log.debug(
                    "settlement pass skipped: another settler holds the lock",
                    extra=fields("settlement.run", outcome="busy"),
                )
                # The other settler's horizon, so this process's lag metric is true.
                try:
                    marks = await store.progress()
                except Exception:  # only a metric: the pass was skipped all the same
                    log.debug("could not read the settled horizon", exc_info=True)
                    return None
                if marks is not None:
                    self.stats.horizon = marks.horizon
                return None
            finally:
                await store.close()
        except Exception:  # a pass that fails is retried next interval; calls go on
            self.stats.failures += 1
            self.stats.observe(self._clock.monotonic() - started)
            log.exception(
                "settlement pass failed; the next one retries",
                extra=fields("settlement.run", outcome="failed"),
            )
            return None
        self.stats.passes += 1
        self.stats.observe(self._clock.monotonic() - started)
        self.stats.last = report
        if report.horizon is not None:
            self.stats.horizon = report.horizon
        _log_pass(report, self._clock.monotonic() - started)
        if not self._path:  # notices are read from, and recorded in, the SQLite file
            return report
        try:
            # What the pass's results call for (plan points low, expiring, balance low,
            # cap reached); each notice's id makes it happen once however often this runs.
            self.stats.notices += len(detect_in_file(self._path, self._clock.now()))
        except Exception:  # the next pass detects again
            log.exception(
                "notice detection failed after a settlement pass; the next retries",
                extra=fields("settlement.notices_failed", outcome="failed"),
            )
        return report


def _log_pass(report: SettleReport, seconds: float) -> None:
    """One line per settlement pass that settled (INFO), what it did and how long it took."""
    horizon = report.horizon.isoformat() if report.horizon is not None else None
    log.info(
        "settlement pass: records=%d accounts=%d adjustments=%d deferred=%d horizon=%s "
        "seconds=%.3f",
        report.records,
        report.accounts,
        report.adjustments,
        report.deferred,
        horizon,
        seconds,
        extra=fields(
            "settlement.run",
            outcome="settled",
            records=report.records,
            accounts=report.accounts,
            adjustments=report.adjustments,
            deferred=report.deferred,
            rerated=len(report.rerated),
            horizon=horizon,
            seconds=round(seconds, 3),
        ),
    )
