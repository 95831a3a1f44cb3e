"""MemoryNonceStore: held until its own expiry, per AccessKey, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering_middleware.clock import ManualClock
from metering_middleware.nonces import MemoryNonceStore, NonceStore

WINDOW = 900.0


async def test_a_nonce_is_claimed_once_per_key() -> None:
    clock = ManualClock()
    store: NonceStore = MemoryNonceStore(clock)
    until = clock.time() + WINDOW
    assert await store.claim("ak1", "n", until)
    assert not await store.claim("ak1", "n", until)
    assert not await store.claim("ak1", "n", until + 100)  # a later timestamp changes nothing
    assert await store.claim("ak2", "n", until)  # nonces are per AccessKey
    assert await store.claim("ak1", "m", until)


async def test_a_nonce_is_free_again_once_its_own_expiry_passes() -> None:
    clock = ManualClock()
    store = MemoryNonceStore(clock)
    now = clock.time()
    assert await store.claim("ak", "early", now + 60)
    assert await store.claim("ak", "late", now + 600)
    clock.advance(59)
    assert not await store.claim("ak", "early", now + 60)
    clock.advance(1)  # at its expiry: gone
    assert await store.claim("ak", "early", clock.time() + WINDOW)
    assert not await store.claim("ak", "late", now + 600)
    clock.advance(600)
    assert await store.claim("ak", "other", clock.time() + WINDOW)
    assert len(store) == 2  # "early" (re-claimed) and "other"; "late" dropped on the way


async def test_an_already_expired_claim_is_accepted_but_not_kept() -> None:
    clock = ManualClock()
    store = MemoryNonceStore(clock)
    assert await store.claim("ak", "n", clock.time() - 1)
    assert len(store) == 0


async def test_at_the_bound_the_earliest_expiring_nonce_is_evicted_and_counted() -> None:
    clock = ManualClock()
    store = MemoryNonceStore(clock, max_entries=3)
    now = clock.time()
    for nonce, ttl in (("b", 200), ("a", 100), ("c", 300)):
        assert await store.claim("ak", nonce, now + ttl)
    assert store.evicted == 0
    assert await store.claim("ak", "d", now + 400)
    assert (len(store), store.evicted) == (3, 1)
    assert await store.claim("ak", "a", now + 100)  # evicted, so claimable again...
    assert store.evicted == 2  # ...which evicted "b", next to expire
    assert not await store.claim("ak", "c", now + 300)
    assert not await store.claim("ak", "d", now + 400)


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryNonceStore(ManualClock(), max_entries=0)


ops = st.lists(
    st.tuples(
        st.integers(0, 120),  # seconds to advance first
        st.sampled_from(["k1", "k2"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(-10, 300),  # expiry, relative to now
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(ops)
async def test_matches_a_naive_model(steps: list[tuple[int, str, str, int]]) -> None:
    clock = ManualClock()
    store = MemoryNonceStore(clock)
    model: dict[tuple[str, str], float] = {}
    for advance, key_id, nonce, ttl in steps:
        clock.advance(advance)
        now = clock.time()
        held = model.get((key_id, nonce))
        expected = held is None or held <= now
        if expected and ttl > 0:
            model[key_id, nonce] = now + ttl
        assert await store.claim(key_id, nonce, now + ttl) is expected
        assert len(store) == sum(1 for t in model.values() if t > now)


async def test_seeded_nonces_are_held_like_claimed_ones() -> None:
    clock = ManualClock()
    store = MemoryNonceStore(clock)
    now = clock.time()
    assert await store.claim("ak", "live-claimed", now + 60)
    seeded = [("ak", "a", now + 60), ("ak", "live-claimed", now + 60), ("ak", "old", now)]
    assert store.seed(seeded) == 1  # one new; one held already; one already expired
    assert store.seed(seeded) == 0  # idempotent
    assert not await store.claim("ak", "a", now + 900)
    assert await store.claim("ak", "old", now + 900)
    clock.advance(60)  # seeded nonces expire at their own expiry, like claimed ones
    assert await store.claim("ak", "a", clock.time() + 900)
