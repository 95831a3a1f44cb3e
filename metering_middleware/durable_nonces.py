"""Claimed signature nonces that outlive a restart.

A nonce store in memory (or a Redis without persistence) forgets every claimed
nonce when it restarts, and a captured signed request is accepted again for
the rest of its signature window. So every nonce a call claims also goes to the
ledger, through the writer, in the batch of that call's record or an earlier
one (``LedgerWriter.hold_nonce``), and ``MeteringRuntime.start`` seeds the
nonce store in use with the live ones before the first call
(:func:`restore_nonces`).

Two wrappers do the recording, one per place a nonce is claimed:

- :class:`DurableNonceLimiter` around the limiter, which claims the nonce in the
  same step as the QPS decision (memory or Redis, or the failure policy's own
  store while Redis is down): every decision that claimed it is recorded;
- :class:`DurableNonceStore` around the verifier's store, when no limiter runs.

A shared backend can also lose its nonces while the gateway runs: a cache-only
Redis that restarts comes back empty, and nonces claimed in-process while Redis
was unreachable were never in it. So the limiter wrapper seeds it again, behind
the calls (never on their path): when the backend says it lost what was seeded
(``nonces_lost``, checked at most once per ``check_interval``), and on the first
shared decision after degraded ones. A replay in the second or so before that
re-seed completes is not seen.

What a crash can lose: a nonce is durable when its batch is. A chargeable call's
nonce is committed no later than its record, so a call whose record survived
always has its nonce back after the restart: a replayed signature is never
charged twice. In strict mode that covers every call a client got a complete
answer to. Nonces of calls not (yet) recorded wait for the next batch, or at
most the writer's counter delay (strict: ``count_interval``, 1 s; batched: the
flush interval, or ``count_interval`` if shorter) plus one commit: a kill within
that time may let such a call be replayed once, and as its record was lost with
its nonce (or it was never charged), the replay is that signature's first charge.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, runtime_checkable

from .clock import Clock
from .ledger import ClaimedNonce, LedgerStore, LedgerWriter
from .limiter import AdmitStatus, Decision, Limiter, NonceClaim
from .limiter.memory import MemoryLimiter
from .nonces import NonceStore
from .reload import BackgroundReload

__all__ = [
    "DurableNonceLimiter",
    "DurableNonceStore",
    "NonceSeeding",
    "NonceWatching",
    "restore_nonces",
]

log = logging.getLogger("metering_middleware")

#: Decisions made after the backend claimed the nonce (a throttled call burned it too).
_CLAIMED = (AdmitStatus.ADMITTED, AdmitStatus.THROTTLED, AdmitStatus.UPSTREAM_BUDGET)


@runtime_checkable
class NonceSeeding(Protocol):
    """A limiter (or nonce store adapter) that takes nonces claimed before a restart."""

    async def seed_nonces(self, claims: Iterable[tuple[str, NonceClaim]]) -> int: ...


@runtime_checkable
class NonceWatching(Protocol):
    """A shared backend that can tell it lost the nonces seeded into it (Redis)."""

    async def nonces_lost(self) -> bool: ...


class DurableNonceLimiter:
    """A ``Limiter`` whose nonce claims are also kept in the ledger.

    With ``reseed`` (and a backend that is :class:`NonceWatching`), the backend is
    seeded again from the ledger when it lost its nonces or comes back from an outage.
    """

    __slots__ = ("_degraded", "_reseed", "_resync", "_watch", "_writer", "inner")

    def __init__(
        self,
        inner: Limiter,
        writer: LedgerWriter,
        *,
        reseed: Callable[[], Awaitable[None]] | None = None,
        clock: Clock | None = None,
        check_interval: float = 1.0,
    ) -> None:
        self.inner = inner
        self._writer = writer
        self._reseed = reseed
        self._watch: BackgroundReload | None = None
        if reseed is not None and clock is not None and isinstance(inner, NonceWatching):
            self._watch = BackgroundReload(self._check, clock, check_interval, "nonce check")
        self._degraded = False  # the last decision was the failure policy's
        self._resync = False  # the backend came back: seed it whatever it says

    async def join(self) -> None:
        """Wait for a running check or re-seed (tests, shutdown); never raises."""
        if self._watch is not None:
            await self._watch.join()

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

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
        decision = await self.inner.admit(account, category, action, limit, nonce=nonce, now=now)
        return self._recorded(decision, account, nonce)

    def admit_now(
        self, account: str, category: str, action: str, limit: int, nonce: NonceClaim
    ) -> Decision:
        """``admit`` at once, for a backend that decides without suspending (``memory://``,
        whose ``admit_now`` it calls): the meter's fast path."""
        inner = self.inner
        assert type(inner) is MemoryLimiter  # exactly: a subclass may override ``admit``
        return self._recorded(inner.admit_now(account, category, action, limit, nonce=nonce),
                              account, nonce)  # fmt: skip

    def _recorded(self, decision: Decision, account: str, nonce: NonceClaim | None) -> Decision:
        if nonce is not None and decision.status in _CLAIMED:
            self._writer.hold_nonce(
                ClaimedNonce(account, nonce.access_key_id, nonce.nonce, nonce.expires_at)
            )
        watch = self._watch
        if watch is not None:
            if decision.degraded:
                self._degraded = True
            elif self._degraded:
                # Shared decisions again: what was claimed without the backend goes to it.
                self._degraded = False
                self._resync = True
            if self._resync and not watch.running:
                watch.start()  # at once, not after the check interval: the gap is open now
            else:
                watch.start_if_due()
        return decision

    async def _check(self) -> None:
        assert self._reseed is not None and isinstance(self.inner, NonceWatching)
        resync, self._resync = self._resync, False
        try:
            if not resync and not await self.inner.nonces_lost():
                return
            log.warning(
                "limiter %s: seeding the ledger's live nonces again",
                "back from an outage" if resync else "lost its nonces (restarted empty?)",
            )
            await self._reseed()
        except Exception:  # behind the calls: log, and the next check tries again
            self._resync = self._resync or resync
            log.exception("seeding the limiter's nonces again failed")

    async def seed_nonces(self, claims: Iterable[tuple[str, NonceClaim]]) -> int:
        inner = self.inner
        if isinstance(inner, NonceSeeding):
            return await inner.seed_nonces(claims)
        if not list(claims):
            return 0
        log.warning(
            "limiter %r cannot take the nonces claimed before this start: replays of "
            "them are refused only by its own memory",
            inner,
        )
        return 0


class DurableNonceStore:
    """A ``NonceStore`` (the verifier's, without a limiter) that records its claims."""

    __slots__ = ("_writer", "inner")

    def __init__(self, inner: NonceStore, writer: LedgerWriter) -> None:
        self.inner = inner
        self._writer = writer

    async def claim(self, access_key_id: str, nonce: str, expires_at: float) -> bool:
        if not await self.inner.claim(access_key_id, nonce, expires_at):
            return False
        # The verifier does not know the account; restore_nonces looks it up.
        self._writer.hold_nonce(ClaimedNonce("", access_key_id, nonce, expires_at))
        return True

    async def seed_nonces(self, claims: Iterable[tuple[str, NonceClaim]]) -> int:
        seed = getattr(self.inner, "seed", None)
        if seed is None:
            if not list(claims):
                return 0
            log.warning(
                "nonce store %r cannot take the nonces claimed before this start", self.inner
            )
            return 0
        added: int = seed((c.access_key_id, c.nonce, c.expires_at) for _, c in claims)
        return added


async def restore_nonces(
    store: LedgerStore,
    target: NonceSeeding,
    now: float,
    account_of: Callable[[str], Awaitable[str | None]],
) -> tuple[int, int]:
    """Seed ``target`` with the nonces ``store`` holds past ``now`` (epoch seconds).

    ``account_of`` names the account of an AccessKey, for nonces recorded without
    one (Redis keys carry the account). Returns (nonces read, nonces new to the target).
    """
    accounts: dict[str, str] = {}
    read = added = 0
    seeded = False
    async for chunk in store.live_nonces(now):
        claims: list[tuple[str, NonceClaim]] = []
        for n in chunk:
            account = n.account
            if not account:
                if n.access_key_id not in accounts:
                    accounts[n.access_key_id] = await account_of(n.access_key_id) or ""
                account = accounts[n.access_key_id]
            claims.append((account, NonceClaim(n.access_key_id, n.nonce, n.expires_at)))
        read += len(claims)
        added += await target.seed_nonces(claims)
        seeded = True
    if not seeded:
        await target.seed_nonces([])  # none to seed: the target still learns it was seeded
    return read, added
