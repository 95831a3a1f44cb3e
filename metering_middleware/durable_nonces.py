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

What a crash can lose: a nonce is durable when its batch is. A chargeable call's
nonce is committed no later than its record, so a call whose record survived
always has its nonce back after the restart: a replayed signature is never
charged twice. In strict mode that covers every call a client got a complete
answer to. Nonces of calls not (yet) recorded wait for the next batch, or at
most the writer's counter delay (``count_interval``, 1 s, in strict mode; the
flush interval in batched mode): a kill within that time may let such a call be
replayed once, and the replay is the first charge of that signature.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, runtime_checkable

from .ledger import ClaimedNonce, LedgerStore, LedgerWriter
from .limiter import AdmitStatus, Decision, Limiter, NonceClaim
from .nonces import NonceStore

__all__ = [
    "DurableNonceLimiter",
    "DurableNonceStore",
    "NonceSeeding",
    "restore_nonces",
]

log = logging.getLogger("metering_middleware")

#: Decisions made after the backend claimed the nonce (a throttled call burned it too).
_CLAIMED = (AdmitStatus.ADMITTED, AdmitStatus.THROTTLED)


@runtime_checkable
class NonceSeeding(Protocol):
    """A limiter (or nonce store adapter) that takes nonces claimed before a restart."""

    async def seed_nonces(self, claims: Iterable[tuple[str, NonceClaim]]) -> int: ...


class DurableNonceLimiter:
    """A ``Limiter`` whose nonce claims are also kept in the ledger."""

    __slots__ = ("_writer", "inner")

    def __init__(self, inner: Limiter, writer: LedgerWriter) -> None:
        self.inner = inner
        self._writer = writer

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
        if nonce is not None and decision.status in _CLAIMED:
            self._writer.hold_nonce(
                ClaimedNonce(account, nonce.access_key_id, nonce.nonce, nonce.expires_at)
            )
        return decision

    async def seed_nonces(self, claims: Iterable[tuple[str, NonceClaim]]) -> int:
        inner = self.inner
        if isinstance(inner, NonceSeeding):
            return await inner.seed_nonces(claims)
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
    return read, added
