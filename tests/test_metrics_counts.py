"""The counts behind the new metrics, where they are kept: the limiter's failure policies,
the journal's pending records, the settler's busy and failed passes, the standing reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from metering_middleware import spend_guard
from metering_middleware.catalog import default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.ledger import SqliteStore
from metering_middleware.ledger.journal import Journal
from metering_middleware.limiter import MemoryLimiter, NonceClaim
from metering_middleware.limiter.redis import RedisLimiter
from metering_middleware.metrics import STANDING_REASONS, MeteringMetrics
from metering_middleware.rating import SqliteRatingStore, settle
from metering_middleware.settler import BackgroundSettler
from tests.limiter.redis_server import free_port
from tests.rating.helpers import call

T0 = datetime(2026, 3, 2, 6, tzinfo=UTC)


def test_standing_reasons_are_the_spend_guards() -> None:
    assert set(STANDING_REASONS) == {
        spend_guard.OVERDUE_REASON,
        spend_guard.SUSPENDED_REASON,
        spend_guard.HELD_REASON,
        spend_guard.SPEND_GUARD_REASON,
        spend_guard.CAP_REASON,
    }


def test_standing_refusals_are_derived_from_the_call_counter() -> None:
    metrics = MeteringMetrics()
    metrics.count("facebody", "DetectFace", "refused", "overdue")
    metrics.count("ocr", "RecognizeLicensePlate", "refused", "overdue")
    metrics.count("facebody", "DetectFace", "refused", "cap")
    metrics.count("facebody", "DetectFace", "refused", "bad_signature")  # not a standing one
    metrics.count("facebody", "DetectFace", "free", "overdue")  # an upstream code, not ours
    families = {f.name: f for f in metrics.collect()}
    got = {s.labels["reason"]: s.value for s in families["metering_standing_refusals"].samples}
    assert got == {"overdue": 2, "cap": 1, "suspended": 0, "held": 0, "spend_guard": 0}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("open", {"fail_open": 3}),
        ("closed", {"fail_closed": 3}),
        ("local", {"local_admitted": 2, "local_throttled": 1}),
    ],
)
async def test_limiter_decisions_under_each_failure_policy(
    policy: str, expected: dict[str, int]
) -> None:
    dead = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", ManualClock(), failure_policy=policy)
    await dead.start()
    try:
        for _ in range(3):
            await dead.admit("acct", "facebody", "DetectFace", 2)
    finally:
        await dead.close()
    assert dead.decisions.counts == expected


async def test_memory_limiter_decisions() -> None:
    lim = MemoryLimiter(ManualClock())
    claim = NonceClaim("LTAIkey", "n1", 1e12)
    assert (await lim.admit("a", "facebody", "DetectFace", 1, nonce=claim)).admitted
    await lim.admit("a", "facebody", "DetectFace", 1)  # over 1 QPS
    await lim.admit("a", "facebody", "DetectFace", 5, nonce=claim)  # the nonce again
    assert lim.decisions.counts == {"admitted": 1, "throttled": 1, "nonce_reused": 1}


async def test_journal_counts_records_until_emptied(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    catalog = default_catalog()
    assert (journal.size(), journal.records) == (0, 0)
    await journal.append([call(catalog, "a", T0), call(catalog, "b", T0)])
    await journal.append([call(catalog, "c", T0)])
    assert journal.records == 3 and journal.size() > 0
    await journal.truncate()
    assert (journal.size(), journal.records) == (0, 0)


async def test_a_busy_pass_reads_the_other_settlers_horizon(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    catalog = default_catalog()
    clock = ManualClock(T0)
    async with SqliteStore(db, clock=clock) as ledger:
        await ledger.write([call(catalog, "a", T0)], [])
    clock.advance(120)
    async with SqliteRatingStore(db) as store:  # another settler, which keeps its lock
        await settle(store, catalog, clock, owner="other", keep_lock=True)
    settler = BackgroundSettler(str(db), catalog, clock, interval=60)
    assert await settler.settle_now() is None
    stats = settler.stats
    assert (stats.passes, stats.busy, stats.failures) == (0, 1, 0)
    assert stats.horizon == T0 + timedelta(seconds=60)  # the other's: now - 60 s lag
    assert sum(stats.durations) == 0  # a skipped pass is not a settlement's duration


async def test_a_failed_pass_is_counted_and_timed(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    settler = BackgroundSettler(
        str(tmp_path / "missing.sqlite"), default_catalog(), clock, interval=60
    )
    assert await settler.settle_now() is None
    stats = settler.stats
    assert (stats.passes, stats.busy, stats.failures, stats.horizon) == (0, 0, 1, None)
    assert sum(stats.durations) == 1
