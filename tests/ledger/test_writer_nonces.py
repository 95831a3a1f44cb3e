"""Claimed nonces through the writer: with their call's batch, journaled, replayed, pruned."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from metering_middleware.clock import ManualClock
from metering_middleware.ledger import (
    CallRecord,
    ClaimedNonce,
    Journal,
    LedgerWriter,
    MemoryStore,
    OutcomeCount,
    SqliteStore,
    StoreError,
)

from .support import T0, make_records

NOW = T0.replace(microsecond=0).timestamp()  # signature times are whole seconds


def _nonce(name: str, expires_in: float = 900.0) -> ClaimedNonce:
    return ClaimedNonce("acct-a", "LTAI1", name, NOW + expires_in)


async def _live(store: MemoryStore | SqliteStore, now: float = NOW) -> list[str]:
    return sorted([n.nonce async for page in store.live_nonces(now) for n in page])


class _WriteLog(MemoryStore):
    """A memory store that remembers what each committed write held."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[int, int]] = []  # (records, nonces) per committed write

    async def write(
        self,
        records: Sequence[CallRecord],
        counts: Sequence[OutcomeCount],
        nonces: Sequence[ClaimedNonce] = (),
    ) -> None:
        await super().write(records, counts, nonces)
        self.log.append((len(records), len(nonces)))


async def test_a_nonce_commits_in_the_transaction_of_its_calls_record(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SqliteStore(path) as store:
        async with LedgerWriter(store, journal=None, mode="strict", clock=ManualClock(T0)) as w:
            w.hold_nonce(_nonce("n-1"))  # claimed at admission
            [record] = make_records(1)
            future = w.submit(record)  # charged later: the record joins the same batch

            def on_committed(_: object) -> None:
                # At the moment the record is durable, so is its nonce (one transaction).
                with sqlite3.connect(path) as conn:
                    seen.append(conn.execute("SELECT nonce FROM nonces").fetchall())

            seen: list[list[tuple[str]]] = []
            future.add_done_callback(on_committed)
            await future
            assert store.writes == 1
        assert seen == [[("n-1",)]]


async def test_a_nonce_alone_waits_for_a_batch_or_the_counter_delay() -> None:
    clock = ManualClock(T0)
    store = _WriteLog()
    async with LedgerWriter(
        store, journal=None, mode="strict", count_interval=1.0, clock=clock
    ) as writer:
        writer.hold_nonce(_nonce("free-call"))  # a call that is not charged: no record
        await writer.tick()
        assert store.log == []  # no commit of its own right away (that would double fsyncs)
        clock.advance(1.0)
        await writer.tick()
        assert store.log == [(0, 1)]
        # Under load it rides for free: nonces claimed meanwhile go with the next record.
        writer.hold_nonce(_nonce("a"))
        writer.hold_nonce(_nonce("b"))
        await writer.submit(make_records(1)[0])
        assert store.log == [(0, 1), (1, 2)]
    assert await _live(store) == ["a", "b", "free-call"]


async def test_stop_commits_the_nonces_still_pending() -> None:
    store = MemoryStore()
    clock = ManualClock(T0)
    async with LedgerWriter(
        store, journal=None, mode="batched", flush_interval=3600, clock=clock
    ) as writer:
        writer.hold_nonce(_nonce("pending"))
    assert await _live(store) == ["pending"]


async def test_nonces_are_journaled_with_their_batch_and_replayed_before_its_records(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    store = _WriteLog()
    store.fail_with = StoreError("down")
    clock = ManualClock(T0)
    async with LedgerWriter(store, journal=journal, clock=clock) as writer:
        writer.hold_nonce(_nonce("n-1"))
        writer.hold_nonce(_nonce("gone", expires_in=5))  # expired by the time of the replay
        await writer.submit(make_records(1)[0])  # durable: in the journal
        assert writer.stats.journaled == 1
        assert journal.size() > 0
        clock.advance(10)
        store.fail_with = None
        assert await writer.retry_now()
    # The live nonce went in first, on its own; then the record; the expired one stayed out.
    assert store.log == [(0, 1), (1, 0)]
    assert await _live(store, NOW) == ["n-1"]
    assert journal.size() == 0


async def test_journal_nonce_lines_round_trip_and_are_not_damage(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    nonces = [_nonce("n-1"), ClaimedNonce("", "LTAI2", "n-ü", NOW + 0.001)]
    records = make_records(2)
    await journal.append(records[:1], [], nonces)
    await journal.append(records[1:])
    assert await journal.replay() == (records, [])
    assert await journal.replay_nonces(NOW) == nonces
    assert await journal.replay_nonces(NOW + 0.001) == nonces[:1]  # expired: left out


async def test_the_writer_prunes_expired_nonces_in_bounded_passes() -> None:
    clock = ManualClock(T0)
    store = MemoryStore()
    await store.write([], [], [_nonce(f"old-{i}", expires_in=-1) for i in range(3)])
    await store.write([], [], [_nonce("live")])
    async with LedgerWriter(store, journal=None, clock=clock) as writer:
        await writer.tick()  # the first pass prunes what an earlier run left expired
        assert await _live(store, 0) == ["live"]
        writer.hold_nonce(_nonce("soon", expires_in=30))
        await writer.flush_now()
        clock.advance(59)
        await writer.tick()
        assert await _live(store, 0) == ["live", "soon"]  # expired, but not due yet
        clock.advance(1)  # a minute after the last prune
        await writer.tick()
        assert await _live(store, 0) == ["live"]
