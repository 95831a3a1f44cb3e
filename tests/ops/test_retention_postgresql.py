"""Retention on a PostgreSQL ledger (a real cluster): the same passes as on SQLite, row
for row and report for report; calls never deleted; a pruned nonce set still refuses a
replay within its window; a nonce claimed again while a prune waits for it stays; the
CLI and the gateway's background task on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.clock import ManualClock
from metering_middleware.ledger.records import CallRecord, ClaimedNonce, Outcome, OutcomeCount
from metering_middleware.ledger.store import LedgerStore
from metering_middleware.ledger.urls import open_store, redact_url
from metering_middleware.ops import (
    PostgresTarget,
    PruneReport,
    RetentionPolicy,
    prune_ledger_file,
    prune_postgres,
)
from tests.e2e.conftest import add_account
from tests.e2e.signed import v3_headers
from tests.e2e.test_replay_restart import BODY, call_through
from tests.support.postgres import PostgresCluster

from .conftest import cli

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
# 2026-02-01 00:00 UTC+8: the previous billing month starts here, as seen from NOW.
FEB_START = datetime(2026, 1, 31, 16, 0, tzinfo=UTC)


def _call(n: int, when: datetime) -> CallRecord:
    return CallRecord(
        f"rec-{n:04d}", f"REQ-{n}", "acme", "LTAIacme", "facebody", "DetectFace",
        "2019-12-30", "facebody.DetectFace", when, 200, None, 12.5,
    )  # fmt: skip


def _counter(minute: datetime, action: str = "DetectFace", n: int = 1) -> OutcomeCount:
    return OutcomeCount(minute, "acme", "facebody", action, Outcome.CHARGED, "", n)


def _nonce(name: str, expires: datetime) -> ClaimedNonce:
    return ClaimedNonce("acme", "LTAIacme", name, expires.timestamp())


async def _fill(store: LedgerStore, now: datetime) -> None:
    """The same working data on either store: old and kept counters, expired and live
    nonces, and records as old as the oldest counters."""
    old = [datetime(2025, 11, 1, 0, m, tzinfo=UTC) for m in range(7)]
    kept = [FEB_START, FEB_START + timedelta(minutes=1), now - timedelta(minutes=1)]
    counts = [_counter(m) for m in old + kept] + [_counter(old[0], "CompareFace", 3)]
    expired = [_nonce(f"x{s}", now - timedelta(seconds=s)) for s in (0, 1, 900, 86400)]
    live = [_nonce(f"l{s}", now + timedelta(seconds=s)) for s in (1, 900)]
    calls = [_call(i, old[0] + timedelta(days=i)) for i in range(5)]  # Nov 2025 onwards
    await store.write(calls, counts, expired + live)


async def _pg_rows(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        minutes = await conn.fetch("SELECT minute FROM outcome_counts ORDER BY 1, action")
        expiries = await conn.fetch("SELECT expires_ms FROM nonces ORDER BY 1")
        calls = await conn.fetch("SELECT id FROM calls ORDER BY 1")
        return {
            "minutes": [r[0] for r in minutes],
            "expiries": [r[0] for r in expiries],
            "calls": [r[0] for r in calls],
        }
    finally:
        await conn.close()


def _sqlite_rows(db: Path) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        minutes = conn.execute("SELECT minute FROM outcome_counts ORDER BY 1, action").fetchall()
        return {
            "minutes": [datetime.fromisoformat(m) for (m,) in minutes],
            "expiries": [e for (e,) in conn.execute("SELECT expires_ms FROM nonces ORDER BY 1")],
            "calls": [i for (i,) in conn.execute("SELECT id FROM calls ORDER BY 1")],
        }


async def _opened(url: str) -> LedgerStore:
    store = open_store(url, create=True)
    await store.open()
    return store


async def test_a_postgresql_pass_is_the_sqlite_pass(pg_url: str, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    for url in (pg_url, f"sqlite:///{db}"):
        store = await _opened(url)
        try:
            await _fill(store, NOW)
        finally:
            await store.close()
    target = PostgresTarget(pg_url)
    policy = RetentionPolicy(counter_days=1, batch=3)
    before = await _pg_rows(pg_url)
    assert before == _sqlite_rows(db)

    dry = await prune_postgres(target, NOW, policy, dry_run=True)
    assert dry == prune_ledger_file(db, NOW, policy, dry_run=True)
    assert (dry.nonces, dry.counters, dry.transactions, dry.dry_run) == (4, 8, 0, True)
    assert await _pg_rows(pg_url) == before  # a dry run deletes nothing

    done = await prune_postgres(target, NOW, policy)
    assert done == prune_ledger_file(db, NOW, policy)
    # At most 3 rows per transaction: 4 nonces in 2, 8 counters in 3.
    assert done == PruneReport(4, 8, FEB_START, False, 5)
    after = await _pg_rows(pg_url)
    assert after == _sqlite_rows(db)
    assert after["minutes"] == [
        FEB_START,
        FEB_START + timedelta(minutes=1),
        NOW - timedelta(minutes=1),
    ]
    assert after["expiries"] == [
        int((NOW + timedelta(seconds=s)).timestamp() * 1000) for s in (1, 900)
    ]
    # Records as old as the deleted counters: every one kept (bills are made from them).
    assert after["calls"] == before["calls"] and len(after["calls"]) == 5

    again = await prune_postgres(target, NOW, policy)
    assert (again.nonces, again.counters, again.transactions) == (0, 0, 2)
    # Counters are kept forever by default, expired nonces never.
    kept = await prune_postgres(target, NOW + timedelta(days=3650), RetentionPolicy())
    assert (kept.counters, kept.counter_cutoff, kept.nonces) == (0, None, 2)


async def test_a_nonce_claimed_again_while_a_prune_waits_for_it_stays(pg_url: str) -> None:
    store = await _opened(pg_url)
    try:
        await store.write([], [], [_nonce("again", NOW - timedelta(seconds=5))])
    finally:
        await store.close()
    later = int((NOW + timedelta(seconds=900)).timestamp() * 1000)
    writer = await asyncpg.connect(pg_url)
    try:
        # A writer claims the expired nonce again (a new signature reusing it) and holds
        # the row until it commits; the prune's delete waits for that row meanwhile.
        tx = writer.transaction()
        await tx.start()
        await writer.execute("UPDATE nonces SET expires_ms = $1 WHERE nonce = 'again'", later)
        prune = asyncio.create_task(prune_postgres(PostgresTarget(pg_url), NOW, RetentionPolicy()))
        watcher = await asyncpg.connect(pg_url)
        try:
            for _ in range(500):  # until the prune is seen waiting for the row lock
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name = 'metering-ops'"
                )
                if waiting or prune.done():
                    break
                await asyncio.sleep(0.01)
        finally:
            await watcher.close()
        assert waiting == 1, "the prune should wait for the writer's row"
        await tx.commit()
        report = await asyncio.wait_for(prune, 30)
    finally:
        await writer.close()
    # The delete re-checked the row it waited for: no longer expired, not deleted.
    assert report.nonces == 0
    assert (await _pg_rows(pg_url))["expiries"] == [later]


async def test_a_pruned_nonce_set_still_refuses_a_replay_within_its_window(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, secret = await add_account(pg_url, "acme")
    config = MeteringConfig(ledger_url=pg_url, journal_path=str(tmp_path / "j"), mode="strict")
    captured = v3_headers(key, secret, BODY)
    first = await call_through(config, captured)
    assert first.status_code == 200
    store = await _opened(pg_url)  # and nonces long expired beside the live one
    try:
        old = datetime.now(UTC) - timedelta(hours=2)
        await store.write([], [], [_nonce(f"old-{i}", old) for i in range(5)])
    finally:
        await store.close()

    run = await asyncio.to_thread(
        cli, capsys, "prune", "--db", pg_url, "--batch", "2", "--format", "json"
    )
    assert run.code == 0, run.err
    assert json.loads(run.out)[0] == {
        "kind": "nonces",
        "rows": 5,
        "before": None,
        "action": "deleted",
    }
    assert len((await _pg_rows(pg_url))["expiries"]) == 1  # the captured call's, live

    # A gateway started after the prune restores the live nonce: the replay is refused.
    replay = await call_through(config, captured)
    assert replay.status_code == 400 and replay.json()["Code"] == "SignatureNonceUsed"
    assert (await _pg_rows(pg_url))["calls"] and len((await _pg_rows(pg_url))["calls"]) == 1


async def test_metering_prune_on_postgresql(
    pg_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_cluster.url(pg_cluster.new_database())
    now = datetime.now(UTC)
    store = await _opened(url)
    try:
        await store.write(
            [_call(1, now - timedelta(days=400))],
            [_counter(now - timedelta(days=400)), _counter(now - timedelta(minutes=3))],
            [_nonce("gone", now - timedelta(hours=1)), _nonce("kept", now + timedelta(hours=1))],
        )
    finally:
        await store.close()

    dry = await asyncio.to_thread(
        cli, capsys, "prune", "--dry-run", "--counter-days", "100", "--db", url, "--format", "json"
    )
    assert dry.code == 0, dry.err
    assert [(r["kind"], r["rows"], r["action"]) for r in json.loads(dry.out)] == [
        ("nonces", 1, "would delete"),
        ("counters", 1, "would delete"),
    ]
    real = await asyncio.to_thread(
        cli, capsys, "prune", "--counter-days", "100", "--batch", "1", "--db", url
    )
    assert real.code == 0, real.err
    assert "deleted 1 expired nonce(s) and 1 counter row(s)" in real.err
    rows = await _pg_rows(url)
    assert (len(rows["expiries"]), len(rows["minutes"]), len(rows["calls"])) == (1, 1, 1)
    assert pg_cluster.password not in dry.out + dry.err + real.out + real.err

    empty = await asyncio.to_thread(
        cli, capsys, "prune", "--db", pg_cluster.url(pg_cluster.new_database())
    )
    assert empty.code == 1 and "no ledger in" in empty.err and empty.err.count("\n") == 1
    wrong = await asyncio.to_thread(
        cli, capsys, "prune", "--db", pg_cluster.url("postgres", password="not-it")
    )
    assert wrong.code == 1 and wrong.err.count("\n") == 1 and "not-it" not in wrong.err
    assert redact_url(url) != url  # (what the messages show instead)


async def test_the_runtime_prunes_a_postgresql_ledger_in_the_background(
    pg_url: str, tmp_path: Path
) -> None:
    store = await _opened(pg_url)
    try:
        await store.write(
            [_call(1, datetime(2025, 6, 1, tzinfo=UTC))],
            [_counter(datetime(2025, 6, 1, tzinfo=UTC))],
            [_nonce("gone", NOW - timedelta(seconds=10))],
        )
    finally:
        await store.close()
    clock = ManualClock(NOW)
    config = MeteringConfig(
        ledger_url=pg_url,
        journal_path=str(tmp_path / "j"),
        enforce_qps=False,
        retention_interval=3600,
        counter_retention_days=40,
    )
    runtime = MeteringRuntime(config, clock=clock)
    assert runtime.retention is not None

    async with runtime:
        await runtime.retention.wait_for_passes(1)  # the first pass is due at start
        rows = await _pg_rows(pg_url)
        assert (rows["expiries"], rows["minutes"], len(rows["calls"])) == ([], [], 1)
        store = await _opened(pg_url)
        try:
            await store.write([], [], [_nonce("later", NOW + timedelta(seconds=30))])
        finally:
            await store.close()
        clock.advance(3600)
        runtime.retention.wake()
        await runtime.retention.wait_for_passes(2)
        assert (await _pg_rows(pg_url))["expiries"] == []  # expired by the moved clock
        registry = CollectorRegistry()
        registry.register(runtime.metrics)
        text = generate_latest(registry).decode()
        # The first pass took "gone"; "later" went to it or to the writer's own pruning.
        nonces = runtime.retention.stats.nonces
        assert nonces in (1, 2)
        assert f'metering_retention_deleted_total{{kind="nonces"}} {nonces:.1f}' in text
        assert 'metering_retention_deleted_total{kind="counters"} 1.0' in text
        assert 'metering_retention_runs_total{result="done"} 2.0' in text
    assert len((await _pg_rows(pg_url))["calls"]) == 1
