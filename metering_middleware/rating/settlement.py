"""Settlement: turn the ledger into bill lines, incrementally, repeatably, one settler at a time.

The model (docs/rating.md has the worked version):

- **Horizon.** A pass settles records that occurred before ``now - lag``; the lag (default
  60 s) must cover the upstream timeout plus the ledger's batched flush delay, so that
  records that occurred before it have normally landed.
- **Marks.** A pass remembers the highest ledger ``seq`` it saw and its horizon: every
  record with ``seq <= seen`` effective before ``horizon`` is settled. The next pass reads
  only what is new: records that occurred since the horizon (by time), and records that
  landed since ``seen`` (by insertion order) but occurred before the horizon: late ones.
- **Deduction order.** Per account, records are deducted by (billed month, effective
  time, occurred_at, id). For most records the billed month is their own and the effective
  time is ``occurred_at``, which is plain (occurred_at, id) order.
- **Late records.** One that sorts after the account's last settled record simply
  continues from the saved state. One that sorts before it re-rates the account from the
  checkpoint (state at the start) of its billing month, and every later month.
- **Adjustments.** A record that *arrived* (``recorded_at``, the ledger's clock at commit)
  after its month closed (``grace``, default 2 days, after the month's end) is billed in the
  earliest month still open at its arrival, as an ``Adjustment``, at its arrival's place in
  that month's order: it displaces nothing settled before it arrived, takes a plan valid at
  its ``occurred_at`` that still has points, else pay-as-you-go at the next tier position of
  its own month and at its own price. Classifying by arrival, not by when a pass happens to
  run, is what makes a bill the same however often settlement runs; the classification is
  stored, so re-rating reproduces it even if ``grace`` changes later.
- **Plans bought or refunded into a settled period** re-rate the account from that month.
- **Lock.** One settler at a time: a lock row with an owner and an expiry, renewed after
  each month; a crashed settler's lock expires. A pass's results are written in one
  transaction that first checks the lock is still its own.

``settle`` and ``rerate`` are deterministic: re-rating a month gives the bill the first
passes gave, and one pass gives what many incremental passes give.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

from ..catalog import Catalog
from ..clock import Clock
from ._reports import SettleProgress, SettleReport
from ._settle_pass import Pass
from .months import Month
from .store import LockLost, RatingStore

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_LAG",
    "DEFAULT_LOCK_TTL",
    "SettleBusy",
    "SettleProgress",
    "SettleReport",
    "rerate",
    "settle",
]

#: Upstream timeout (30 s by default in the example gateway) + the ledger's flush delay,
#: with room to spare.
DEFAULT_LAG = timedelta(seconds=60)
#: A month's bill is final this long after the month ends (billing rules section 7).
DEFAULT_GRACE = timedelta(days=2)
#: A settler that stops renewing its lock for this long is presumed dead.
DEFAULT_LOCK_TTL = timedelta(minutes=15)


class SettleBusy(Exception):
    """Another settler holds the lock."""


async def settle(
    store: RatingStore,
    catalog: Catalog,
    clock: Clock,
    *,
    lag: timedelta = DEFAULT_LAG,
    grace: timedelta = DEFAULT_GRACE,
    account: str | None = None,
    month: Month | None = None,
    progress: Callable[[SettleProgress], None] | None = None,
    owner: str | None = None,
    lock_ttl: timedelta = DEFAULT_LOCK_TTL,
    keep_lock: bool = False,
) -> SettleReport:
    """Settle what is new in the ledger (one account's, with ``account``).

    ``keep_lock``: leave the lock held by ``owner`` after the pass (the caller releases
    it), so what it does next sees exactly what was settled (a refund's quote).

    ``month`` settles no further than that month's end. Raises ``SettleBusy`` if another
    settler holds the lock and ``LockLost`` if it was taken over mid-pass (then nothing was
    written); ``DeductionError``/``PlanError`` for records or plans the catalog cannot rate.
    """
    if lag < timedelta(0) or grace < timedelta(0):
        raise ValueError("lag and grace must not be negative")
    now = clock.now()
    horizon = now - lag
    if month is not None:
        horizon = min(horizon, month.end)
    return await _locked(
        store,
        clock,
        owner,
        lock_ttl,
        lambda me, renew: Pass(
            store,
            catalog,
            now=now,
            horizon=horizon,
            grace=grace,
            account=account,
            rerate_from=None,
            owner=me,
            renew=renew,
            progress=progress,
        ).run(),
        release=not keep_lock,
    )


async def rerate(
    store: RatingStore,
    catalog: Catalog,
    clock: Clock,
    *,
    month: Month,
    account: str | None = None,
    progress: Callable[[SettleProgress], None] | None = None,
    owner: str | None = None,
    lock_ttl: timedelta = DEFAULT_LOCK_TTL,
) -> SettleReport:
    """Re-rate what is settled, from ``month`` on, from the checkpoints; settle nothing new.

    With unchanged plans and catalog this reproduces the bills exactly (adjustments
    included: their classification is stored). Plans bought or refunded since, and a
    changed catalog, are applied.
    """
    return await _locked(
        store,
        clock,
        owner,
        lock_ttl,
        lambda me, renew: Pass(
            store,
            catalog,
            now=clock.now(),
            horizon=None,
            grace=DEFAULT_GRACE,  # unused: re-rating classifies nothing
            account=account,
            rerate_from=month,
            owner=me,
            renew=renew,
            progress=progress,
        ).run(),
    )


async def _locked(
    store: RatingStore,
    clock: Clock,
    owner: str | None,
    ttl: timedelta,
    run: Callable[[str, Callable[[], Awaitable[None]]], Awaitable[SettleReport]],
    *,
    release: bool = True,
) -> SettleReport:
    me = owner or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    if not await store.acquire_lock(me, clock.now(), ttl):
        raise SettleBusy("another settler holds the settlement lock; try again later")

    async def renew() -> None:
        if not await store.acquire_lock(me, clock.now(), ttl):
            raise LockLost("the settlement lock was taken over during the pass")

    try:
        report = await run(me, renew)
    except BaseException:
        await store.release_lock(me)
        raise
    if release:
        await store.release_lock(me)
    return report
