"""The append-only journal: durability format, torn lines, truncation."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from metering_middleware.ledger import Journal, LedgerWriter, Outcome, OutcomeCount, SqliteStore

from .support import make_record, make_records

COUNT = OutcomeCount(datetime(2026, 1, 1, tzinfo=UTC), "a", "ocr", "X", Outcome.FREE, "Err", 2)


async def test_append_and_replay_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    first, second = make_records(3), [make_record(request_id=None, account="账户")]

    await journal.append(first, [COUNT])
    await journal.append(second)

    assert await journal.replay() == ([*first, *second], [COUNT])
    assert journal.size() > 0


async def test_replay_of_a_missing_journal_is_empty(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "none.jsonl")

    assert await journal.replay() == ([], [])
    assert journal.size() == 0


async def test_truncate_empties_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    await journal.append(make_records(2), [COUNT])

    await journal.truncate()

    assert journal.size() == 0
    assert await journal.replay() == ([], [])


async def test_a_torn_last_line_is_ignored_and_closed_by_the_next_append(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    kept = make_records(2)
    await journal.append(kept)
    with (tmp_path / "j.jsonl").open("ab") as f:
        f.write(b'{"r":{"id":"torn","request_id":nu')  # a crash in the middle of an append

    assert await journal.replay() == (kept, [])

    later = make_records(1)
    await journal.append(later)
    assert await journal.replay() == ([*kept, *later], [])


async def test_a_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    records = make_records(2)
    await journal.append(records)
    path = tmp_path / "j.jsonl"
    path.write_bytes(path.read_bytes().rstrip(b"\n"))

    assert await journal.replay() == (records, [])


async def test_damaged_lines_in_the_middle_are_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    a, b = make_records(1), make_records(1)
    await journal.append(a)
    with (tmp_path / "j.jsonl").open("ab") as f:
        f.write(b'not json\n{"x":1}\n[1]\n{"r":{"id":5}}\n\xff\xfe\n\n')
    await journal.append(b)

    assert await journal.replay() == ([*a, *b], [])


async def test_replay_from_an_offset(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    old, new = make_records(2), make_records(1)
    await journal.append(old, [COUNT])
    size = journal.size()
    await journal.replay()
    await journal.append(new)

    assert journal.replayed_to == size
    assert await journal.replay(size) == (new, [])


async def test_append_fails_when_the_directory_is_gone(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "gone" / "j.jsonl")

    with pytest.raises(FileNotFoundError):
        await journal.append(make_records(1))


async def test_an_empty_append_writes_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")

    await journal.append([], [])

    assert not (tmp_path / "j.jsonl").exists()


async def test_a_large_journal_replays_in_bounded_memory_exactly_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    records = make_records(30_000)
    for start in range(0, len(records), 1000):  # an outage's worth of batches
        await journal.append(records[start : start + 1000], [])
    size = journal.size()
    assert size > 8_000_000
    async with SqliteStore(tmp_path / "l.db", synchronous="NORMAL") as store:
        writer = LedgerWriter(store, journal=journal)
        gc.collect()
        tracemalloc.start()
        try:
            await writer.start()  # replays the journal left by the "earlier run"
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await writer.stop()
        ids = [r.id for r in await store.calls()]
    print(f"journal {size:,} bytes, replay peak {peak:,} bytes")
    assert peak < size / 3, f"replay peak {peak:,} bytes for a {size:,}-byte journal"
    assert sorted(ids) == sorted(r.id for r in records)  # every record, exactly once
    assert journal.size() == 0
