"""The LedgerStore contract, run against every store (memory, SQLite and PostgreSQL)."""

from __future__ import annotations

import operator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from metering_middleware.clock import BEIJING
from metering_middleware.ledger import (
    CallSummary,
    ClaimedNonce,
    CredentialRow,
    LedgerStore,
    Outcome,
    OutcomeCount,
)

from .support import T0, make_record

MINUTE = T0.replace(second=0, microsecond=0)
#: Signature timestamps are whole seconds, so nonce expiries are too (stored in ms).
WHOLE_SECOND = T0.replace(microsecond=0).timestamp()


def _count(
    minute: datetime = MINUTE,
    *,
    account: str = "acct-a",
    outcome: Outcome = Outcome.CHARGED,
    detail: str = "",
    count: int = 1,
) -> OutcomeCount:
    return OutcomeCount(minute, account, "facebody", "DetectFace", outcome, detail, count)


async def test_records_round_trip_exactly(store: LedgerStore) -> None:
    beijing_time = datetime(2026, 1, 15, 16, 30, 12, 999999, tzinfo=BEIJING)
    records = [
        make_record(occurred_at=T0 + timedelta(microseconds=1), latency_ms=0.1 + 0.2),
        make_record(
            occurred_at=beijing_time,
            request_id=None,
            status=404,
            error_code="InvalidImage.NotFoundFace",
        ),
        make_record(occurred_at=T0, account="acct-ü", item="识别"),
    ]
    await store.write(records, [])

    got = await store.calls()

    expected = sorted(records, key=lambda r: (r.occurred_at, r.id))
    assert got == expected
    assert [r.occurred_at.tzinfo for r in got] == [UTC, UTC, UTC]
    assert got[-1].occurred_at == datetime(2026, 1, 15, 8, 30, 12, 999999, tzinfo=UTC)
    assert got[1].latency_ms == 0.1 + 0.2  # floats are stored exactly


async def test_calls_are_ordered_by_time_then_id(store: LedgerStore) -> None:
    same_time = [make_record(id=f"id-{c}", occurred_at=T0) for c in "cab"]
    earlier = make_record(id="id-z", occurred_at=T0 - timedelta(microseconds=1))
    await store.write([*same_time, earlier], [])

    assert [r.id for r in await store.calls()] == ["id-z", "id-a", "id-b", "id-c"]


async def test_calls_filters(store: LedgerStore) -> None:
    a1 = make_record(account="a", occurred_at=T0)
    a2 = make_record(account="a", occurred_at=T0 + timedelta(seconds=1))
    a3 = make_record(account="a", occurred_at=T0 + timedelta(seconds=2))
    b1 = make_record(account="b", occurred_at=T0 + timedelta(seconds=1))
    await store.write([a1, a2, a3, b1], [])

    assert await store.calls(account="a") == [a1, a2, a3]
    # since inclusive, until exclusive
    window = await store.calls(since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=2))
    assert {r.id for r in window} == {a2.id, b1.id}
    assert await store.calls(account="a", limit=2) == [a1, a2]
    assert await store.calls(limit=0) == []
    assert await store.calls(account="nobody") == []


async def test_rewriting_the_same_ids_is_idempotent(store: LedgerStore) -> None:
    first = make_record()
    second = make_record()
    await store.write([first, second], [])
    # A replay after a crash: same ids (even with different content) change nothing.
    await store.write([replace(first, status=500), second, replace(second, account="x")], [])

    assert await store.calls() == [first, second]


async def test_duplicate_ids_within_one_write_keep_the_first(store: LedgerStore) -> None:
    record = make_record()
    await store.write([record, replace(record, status=418)], [])

    assert await store.calls() == [record]


async def test_counts_add_up(store: LedgerStore) -> None:
    refused = _count(outcome=Outcome.REFUSED, detail="bad_signature", count=2)
    await store.write([], [_count(count=3), refused])
    await store.write([make_record()], [_count(count=4), _count(account="b", count=1)])
    await store.write([], [refused])

    counts = await store.outcome_counts()

    assert counts == [
        _count(count=7),
        _count(outcome=Outcome.REFUSED, detail="bad_signature", count=4),
        _count(account="b", count=1),
    ]


async def test_counts_filters_and_minutes(store: LedgerStore) -> None:
    later = MINUTE + timedelta(minutes=1)
    in_beijing = later.astimezone(BEIJING)  # same minute, another zone
    await store.write([], [_count(MINUTE, count=1), _count(in_beijing, count=2)])
    await store.write([], [_count(later, account="b", count=5)])

    assert await store.outcome_counts(since=later) == [
        _count(later, count=2),
        _count(later, account="b", count=5),
    ]
    assert await store.outcome_counts(until=later) == [_count(MINUTE, count=1)]
    assert await store.outcome_counts(account="b") == [_count(later, account="b", count=5)]
    assert all(c.minute.tzinfo is UTC for c in await store.outcome_counts())


async def test_summary(store: LedgerStore) -> None:
    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    await store.write(
        [
            make_record(account="a", occurred_at=t2),
            make_record(account="a", occurred_at=t1),
            make_record(account="a", occurred_at=t3, item="DetectFace", action="Other"),
            make_record(
                account="b", occurred_at=t3, category="ocr", action="RecognizeX", item="RecognizeX"
            ),
        ],
        [],
    )

    assert await store.summary() == [
        CallSummary("a", "facebody", "DetectFace", "DetectFace", 2, t1, t2),
        CallSummary("a", "facebody", "Other", "DetectFace", 1, t3, t3),
        CallSummary("b", "ocr", "RecognizeX", "RecognizeX", 1, t3, t3),
    ]
    assert await store.summary(account="b", since=t3) == [
        CallSummary("b", "ocr", "RecognizeX", "RecognizeX", 1, t3, t3)
    ]
    assert await store.summary(until=t2) == [
        CallSummary("a", "facebody", "DetectFace", "DetectFace", 1, t1, t1)
    ]


async def test_credentials(store: LedgerStore) -> None:
    created = datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=8)))
    k1 = CredentialRow("LTAI-2", "acct-a", "plain:s2", True, created)
    k2 = CredentialRow("LTAI-1", "acct-a", "fernet:tok", True, created)
    k3 = CredentialRow("LTAI-0", "acct-b", "plain:s0", True, created)
    for row in (k1, k2, k3):
        await store.add_credential(row)
    with pytest.raises(ValueError, match="LTAI-1"):
        await store.add_credential(replace(k2, account="other"))

    listed = await store.list_credentials()
    assert [c.access_key_id for c in listed] == ["LTAI-1", "LTAI-2", "LTAI-0"]
    assert listed[0] == k2
    assert listed[0].created_at.tzinfo is UTC
    assert await store.list_credentials(account="acct-b") == [k3]

    off1, off2 = T0, T0 + timedelta(hours=1)
    assert await store.set_credential_enabled("LTAI-1", False, off1)
    assert await store.set_credential_enabled("LTAI-1", False, off2)  # keeps the first time
    assert (await store.list_credentials(account="acct-a"))[0] == replace(
        k2, enabled=False, disabled_at=off1
    )
    assert await store.set_credential_enabled("LTAI-1", True, off2)
    assert (await store.list_credentials(account="acct-a"))[0] == k2
    assert not await store.set_credential_enabled("LTAI-nope", False, off1)


async def test_empty_write_is_a_no_op(store: LedgerStore) -> None:
    await store.write([], [])

    assert await store.calls() == []
    assert await store.outcome_counts() == []


async def test_naive_datetimes_are_refused(store: LedgerStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        await store.calls(since=datetime(2026, 1, 1))


async def test_check_passes_on_a_healthy_store(store: LedgerStore) -> None:
    await store.check()


# -- claimed signature nonces --------------------------------------------------------------


async def _live(store: LedgerStore, now: float, chunk: int = 10_000) -> list[ClaimedNonce]:
    return [n async for page in store.live_nonces(now, chunk=chunk) for n in page]


async def test_nonces_commit_with_records_and_read_back_while_live(store: LedgerStore) -> None:
    now = WHOLE_SECOND
    held = [
        ClaimedNonce("acct-a", "LTAI1", "n-1", now + 900.25),
        ClaimedNonce("", "LTAI1", "n-2", now + 60),  # claimed without an account
        ClaimedNonce("acct-b", "LTAI2", "n-1", now + 1800.001),  # per AccessKey (ms)
    ]
    await store.write([make_record()], [], held)
    assert len(await store.calls()) == 1
    by_key = operator.attrgetter("access_key_id", "nonce")
    assert sorted(await _live(store, now), key=by_key) == sorted(held, key=by_key)
    # Expiry is exclusive: at its expiry a nonce is free again, so it is not live.
    assert sorted(await _live(store, now + 60), key=by_key) == [held[0], held[2]]
    assert await _live(store, now + 1800.001) == []


async def test_live_nonces_come_in_pages_that_cover_every_one(store: LedgerStore) -> None:
    now = WHOLE_SECOND
    held = [ClaimedNonce("a", f"LTAI{i % 3}", f"n-{i:03d}", now + 100 + i) for i in range(25)]
    await store.write([], [], held)
    pages = [page async for page in store.live_nonces(now, chunk=10)]
    assert [len(p) for p in pages] == [10, 10, 5]
    by_key = operator.attrgetter("access_key_id", "nonce")
    assert sorted((n for p in pages for n in p), key=by_key) == sorted(held, key=by_key)


async def test_a_nonce_held_twice_is_live_until_its_later_expiry(store: LedgerStore) -> None:
    # A journal replayed twice, or a nonce claimed again after it expired: a store may
    # keep both rows; a reader seeds each, and the later expiry is what holds.
    now = WHOLE_SECOND
    await store.write([], [], [ClaimedNonce("a", "LTAI1", "n", now + 100)])
    await store.write([], [], [ClaimedNonce("a", "LTAI1", "n", now + 50)])
    assert max(n.expires_at for n in await _live(store, now)) == now + 100
    assert [n.expires_at for n in await _live(store, now + 50)] == [now + 100]
    await store.write([], [], [ClaimedNonce("a", "LTAI1", "n", now + 200)])
    assert [n.expires_at for n in await _live(store, now + 100)] == [now + 200]


async def test_prune_drops_expired_nonces_earliest_first_and_bounded(store: LedgerStore) -> None:
    now = WHOLE_SECOND
    expired = [ClaimedNonce("a", "LTAI1", f"old-{i}", now - 10 + i) for i in range(5)]
    live = [ClaimedNonce("a", "LTAI1", "live", now + 10)]
    await store.write([], [], expired + live)
    assert await store.prune_nonces(now, 2) == 2
    assert await store.prune_nonces(now, 100) == 3
    assert await store.prune_nonces(now, 100) == 0
    assert await _live(store, now - 100) == live  # only the live one is left
