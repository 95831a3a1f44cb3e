"""Signature nonces already used, so a captured request cannot be replayed.

Alibaba keeps a nonce for the span its timestamp is accepted in: a request
signed at ``t`` is valid until ``t + 15 min``, so its nonce is held until then
and no longer. Keys are ``(AccessKeyId, nonce)``: nonces are per key.

A restart must not forget them: the runtime keeps every claimed nonce in the
ledger beside the records (``metering_middleware.durable_nonces``) and seeds the
store in use with the live ones at start (``MemoryNonceStore.seed``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Protocol

from .clock import Clock

__all__ = ["MemoryNonceStore", "NonceStore"]


class NonceStore(Protocol):
    async def claim(self, access_key_id: str, nonce: str, expires_at: float) -> bool:
        """Hold ``nonce`` until ``expires_at`` (epoch seconds).

        True if it was free (now held); False if it is already held and not expired.
        """
        ...


class MemoryNonceStore:
    """In-process nonces for a single gateway node.

    Expiry is a min-heap by ``expires_at`` beside a dict for membership: each
    claim first pops what has expired, so the cost is amortised O(log n) and no
    sweeper task is needed.

    At ``max_entries`` live nonces the earliest-expiring one is dropped to make
    room and counted in ``evicted``. Refusing instead would let a flood of
    genuine signed calls lock every caller out; evicting only reopens a replay
    window for the nonce closest to expiring anyway. Size the bound above the
    peak rate x 30 minutes (the longest a nonce is held: timestamp 15 min
    ahead, plus 15), at roughly 200 bytes a nonce. Several nodes need a shared
    store (Redis), or a replay could land on a node that never saw the nonce.
    """

    __slots__ = ("_clock", "_heap", "_held", "_max", "evicted")

    def __init__(self, clock: Clock, *, max_entries: int = 1_000_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._max = max_entries
        self._held: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str]] = []
        #: Nonces dropped before their expiry because the store was full.
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._held)

    async def claim(self, access_key_id: str, nonce: str, expires_at: float) -> bool:
        return self.claim_now(access_key_id, nonce, expires_at)

    def claim_now(self, access_key_id: str, nonce: str, expires_at: float) -> bool:
        """``claim`` without the coroutine: the check and the insert are atomic."""
        now = self._clock.time()
        self._expire(now)
        if (access_key_id, nonce) in self._held:
            return False
        if expires_at > now:  # else outside its window: nothing could replay it
            self._hold(access_key_id, nonce, expires_at)
        return True

    def seed(self, claimed: Iterable[tuple[str, str, float]]) -> int:
        """Hold ``(access_key_id, nonce, expires_at)`` nonces claimed before a restart.

        Idempotent (a nonce held already stays as it is); returns how many were new.
        """
        now = self._clock.time()
        self._expire(now)
        held = self._held
        added = 0
        for access_key_id, nonce, expires_at in claimed:
            if expires_at > now and (access_key_id, nonce) not in held:
                self._hold(access_key_id, nonce, expires_at)
                added += 1
        return added

    def _expire(self, now: float) -> None:
        heap = self._heap
        held = self._held
        while heap and heap[0][0] <= now:
            _, key_id, old = heapq.heappop(heap)
            del held[key_id, old]

    def _hold(self, access_key_id: str, nonce: str, expires_at: float) -> None:
        heap = self._heap
        held = self._held
        key = (access_key_id, nonce)
        if len(held) >= self._max:
            _, key_id, old = heapq.heappop(heap)
            del held[key_id, old]
            self.evicted += 1
        held[key] = expires_at
        heapq.heappush(heap, (expires_at, access_key_id, nonce))
