"""``memory://``: an exact sliding log per (account, API), in one gateway process.

The log holds the admission times of the last window (at most N of them, N <= ~100),
so the check is exact: admit at ``t`` iff fewer than N admissions lie in
``(t - window, t]``. Times are integer microseconds, as in the Redis script, so both
backends draw the window's edge at the same place. They are the clock's monotonic
reading: a window is an interval, so a wall clock stepped back (NTP, an operator) can
neither refuse calls until it catches up nor, stepped forward, free a full window. Only
``Decision.at`` is wall time.

An API with an upstream budget B (``budget.py``) has one more log, shared by every
account: a call is admitted iff both the account's log holds fewer than N and the API's
holds fewer than B; then both take it, else neither (no await in between: atomic).

One process only: two processes with separate logs would each admit N. ``start``
takes an exclusive ``flock`` on a lock file beside the ledger and refuses to start
when another process holds it (use ``redis://`` for several processes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections import deque
from collections.abc import Hashable, Iterable, Mapping

from .._compiled import mypyc_attr
from ..clock import Clock
from ..nonces import MemoryNonceStore
from .base import (
    WINDOW_SECONDS,
    AdmitStatus,
    Decision,
    DecisionCounts,
    LimiterError,
    NonceClaim,
    check_admit_args,
)
from .budget import UpstreamBudgets

__all__ = ["MemoryLimiter", "SlidingLogs"]

_US = 1_000_000
_WINDOW_US = int(WINDOW_SECONDS * _US)
#: Logs idle this long (microseconds) are dropped by the next sweep.
_SWEEP_EVERY_US = 10 * _US
#: Result codes, as in ``lua/admit.lua``.
_THROTTLED, _ADMITTED, _OVER_BUDGET = 0, 1, 3


class SlidingLogs:
    """Admission logs keyed by anything hashable; each call is atomic (no await inside).

    ``admit`` returns ``(status, count, reset_at, retry_at, now)``, times in
    microseconds: status 1 admitted, 0 throttled, 3 over the budget; ``count``
    admissions of ``key`` in the window after the decision, ``reset_at`` when the
    oldest of them leaves it, ``retry_at`` (refused) when a slot frees.
    """

    __slots__ = ("_logs", "_max_window", "_swept_at")

    def __init__(self) -> None:
        # Newest at the right; a deque per key costs ~600 bytes plus 28 per entry.
        self._logs: dict[Hashable, deque[int]] = {}
        self._swept_at = 0
        self._max_window = 0

    def __len__(self) -> int:
        return len(self._logs)

    def admit(
        self, key: Hashable, limit: int, window_us: int, now_us: int
    ) -> tuple[int, int, int, int, int]:
        if window_us > self._max_window:
            self._max_window = window_us
        if now_us - self._swept_at >= _SWEEP_EVERY_US:
            self._sweep(now_us)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = deque()
        elif log:
            # A clock stepped back must not reorder the log (its order is the invariant).
            if log[-1] > now_us:
                now_us = log[-1]
            cutoff = now_us - window_us
            while log and log[0] <= cutoff:
                log.popleft()
        count = len(log)
        if count < limit:
            log.append(now_us)
            return _ADMITTED, count + 1, log[0] + window_us, 0, now_us
        # Throttled: count - limit + 1 admissions must leave; the last of them is this one.
        return _THROTTLED, count, log[0] + window_us, log[count - limit] + window_us, now_us

    def admit_with_budget(
        self,
        key: Hashable,
        limit: int,
        window_us: int,
        budget_key: Hashable,
        budget: int,
        budget_window_us: int,
        now_us: int,
    ) -> tuple[int, int, int, int, int]:
        """``admit`` on ``key`` and on the shared ``budget_key`` together: both logs take
        the admission, or neither. The account's own limit is checked first, so a call
        over it is ``throttled`` whatever the budget says."""
        widest = max(window_us, budget_window_us)
        if widest > self._max_window:
            self._max_window = widest
        if now_us - self._swept_at >= _SWEEP_EVERY_US:
            self._sweep(now_us)
        logs = self._logs
        log = logs.get(key)
        if log is None:
            log = logs[key] = deque()
        shared = logs.get(budget_key)
        if shared is None:
            shared = logs[budget_key] = deque()
        # One "now" for both logs, never before either's newest entry (order invariant).
        if log and log[-1] > now_us:
            now_us = log[-1]
        if shared and shared[-1] > now_us:
            now_us = shared[-1]
        cutoff = now_us - window_us
        while log and log[0] <= cutoff:
            log.popleft()
        cutoff = now_us - budget_window_us
        while shared and shared[0] <= cutoff:
            shared.popleft()
        count = len(log)
        if count >= limit:
            return _THROTTLED, count, log[0] + window_us, log[count - limit] + window_us, now_us
        used = len(shared)
        if used >= budget:
            reset_at = log[0] + window_us if log else now_us
            retry_at = shared[used - budget] + budget_window_us
            return _OVER_BUDGET, count, reset_at, retry_at, now_us
        log.append(now_us)
        shared.append(now_us)
        return _ADMITTED, count + 1, log[0] + window_us, 0, now_us

    def _sweep(self, now_us: int) -> None:
        self._swept_at = now_us
        cutoff = now_us - self._max_window
        idle = [k for k, log in self._logs.items() if not log or log[-1] <= cutoff]
        for k in idle:
            del self._logs[k]


_STATUS = {
    _ADMITTED: AdmitStatus.ADMITTED,
    _THROTTLED: AdmitStatus.THROTTLED,
    _OVER_BUDGET: AdmitStatus.UPSTREAM_BUDGET,
}


def _decision(
    result: tuple[int, int, int, int, int],
    limit: int,
    window: float,
    at: float,
    *,
    degraded: bool = False,
) -> Decision:
    status, count, reset_at, retry_at, now_us = result
    admitted = status == _ADMITTED
    return Decision(
        status=_STATUS[status],
        limit=limit,
        remaining=max(0, limit - count),
        reset=(reset_at - now_us) / _US,
        retry_after=0.0 if admitted else (retry_at - now_us) / _US,
        at=at,
        degraded=degraded,
        window=window,
    )


# A subclass may override ``admit`` (tests do, to break it), and a compiled class refuses
# Python subclasses unless told.
@mypyc_attr(allow_interpreted_subclasses=True)
class MemoryLimiter:
    """The ``memory://`` backend. Nonces go to ``nonces`` (shared with the verifier if
    it still claims them; give it a ``DeferredNonceStore`` then). ``budgets``: the
    operator's upstream QPS per API (``upstream_qps``), shared by every account."""

    __slots__ = (
        "_allow_explicit",
        "_budgets",
        "_clock",
        "_lock_fd",
        "_lock_path",
        "_logs",
        "decisions",
        "nonces",
    )

    def __init__(
        self,
        clock: Clock,
        *,
        nonces: MemoryNonceStore | None = None,
        lock_path: str | None = None,
        allow_explicit_time: bool = False,
        budgets: UpstreamBudgets | Mapping[str, int] | None = None,
    ) -> None:
        self._clock = clock
        if budgets is not None and not isinstance(budgets, UpstreamBudgets):
            budgets = UpstreamBudgets(budgets)
        self._budgets = budgets or None  # none configured: the one-log path, unchanged
        self.nonces = nonces if nonces is not None else MemoryNonceStore(clock)
        self._lock_path = lock_path
        self._lock_fd: int | None = None
        self._allow_explicit = allow_explicit_time
        self._logs = SlidingLogs()
        #: Decisions of ``admit`` by result (a metric; ``admit_local`` is its caller's).
        self.decisions = DecisionCounts()

    async def start(self) -> None:
        if self._lock_path is None or self._lock_fd is not None:
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LimiterError(
                f"another gateway process (pid {holder}) already limits calls with "
                f"memory:// on this ledger (lock {self._lock_path}); a second one would "
                "double every QPS limit: use limiter_url = redis://host:port/db"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    async def close(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    async def admit(
        self,
        account: str,
        category: str,
        action: str,
        limit: int,
        *,
        nonce: NonceClaim | None = None,
        now: float | None = None,
    ) -> Decision:
        return self.admit_now(account, category, action, limit, nonce=nonce, now=now)

    def admit_now(
        self,
        account: str,
        category: str,
        action: str,
        limit: int,
        *,
        nonce: NonceClaim | None = None,
        now: float | None = None,
    ) -> Decision:
        """``admit`` without the coroutine (nothing here suspends): the meter's fast path."""
        if limit < 1 or now is not None:
            check_admit_args(limit, now, self._allow_explicit)
        t = self._clock.time() if now is None else now  # what the decision says (wall)
        mono = self._clock.monotonic() if now is None else now  # where the window lies
        # The nonce claim and the log check stay atomic: nothing in between suspends.
        if nonce is not None and not self.nonces.claim_now(
            nonce.access_key_id, nonce.nonce, nonce.expires_at
        ):
            return self.decisions.add(Decision(AdmitStatus.NONCE_REUSED, limit, None, 0.0, 0.0, t))
        key = (account, category, action)
        budgets = self._budgets
        budget = budgets.budget(category, action) if budgets is not None else None
        if budget is None:
            result = self._logs.admit(key, limit, _WINDOW_US, round(mono * _US))
        else:
            # The budget's log is keyed (category, action): a 2-tuple, never equal to an
            # account's 3-tuple, whatever the account is called.
            result = self._logs.admit_with_budget(
                key, limit, _WINDOW_US, (category, action), budget, _WINDOW_US, round(mono * _US)
            )
        return self.decisions.add(_decision(result, limit, WINDOW_SECONDS, t))

    async def seed_nonces(self, claims: Iterable[tuple[str, NonceClaim]]) -> int:
        """Hold ``(account, claim)`` nonces claimed before a restart; returns how many
        were new. The account does not matter here (nonces are per AccessKey)."""
        return self.nonces.seed((c.access_key_id, c.nonce, c.expires_at) for _, c in claims)

    def admit_local(
        self,
        key: Hashable,
        limit: int,
        window: float,
        budget: tuple[Hashable, int, float] | None = None,
    ) -> Decision:
        """A degraded decision on this process's log, now (the Redis ``local`` policy);
        ``budget``: (key, this process's share, its window) of the API's budget."""
        now_us = round(self._clock.monotonic() * _US)
        if budget is None:
            result = self._logs.admit(key, limit, round(window * _US), now_us)
        else:
            budget_key, share, budget_window = budget
            result = self._logs.admit_with_budget(
                key,
                limit,
                round(window * _US),
                budget_key,
                share,
                round(budget_window * _US),
                now_us,
            )
        return _decision(result, limit, window, self._clock.time(), degraded=True)
