"""Retention: expired nonces and old counters go in bounded batches, records, money and
the last two billing months never; the gateway's background task on a moved clock."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.clock import ManualClock
from metering_middleware.config import ConfigError
from metering_middleware.ledger.codec import format_time
from metering_middleware.ledger.migrate import migrate_file
from metering_middleware.ops import (
    BackgroundRetention,
    RetentionPolicy,
    counter_cutoff,
    prune_ledger_file,
)
from metering_middleware.reports import usage

from .conftest import cli

WRITER = Path(__file__).with_name("writer_child.py")

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
# 2026-02-01 00:00 UTC+8: the previous billing month starts here, as seen from NOW.
FEB_START = datetime(2026, 1, 31, 16, 0, tzinfo=UTC)


def _ledger(tmp_path: Path) -> Path:
    db = tmp_path / "ledger.db"
    migrate_file(db)
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO credentials VALUES"
        " ('LTAIacme', 'acme', 'plain:s', 1, '2026-01-01T00:00:00.000000Z', NULL)"
    )
    conn.commit()
    conn.close()
    return db


def _add_counters(db: Path, minutes: list[datetime], n: int = 1) -> None:
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO outcome_counts VALUES (?, 'acme', 'facebody', 'DetectFace', 'charged', '', ?)",
        [(format_time(m), n) for m in minutes],
    )
    conn.commit()
    conn.close()


def _add_nonces(db: Path, expiries: list[datetime]) -> None:
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO nonces (access_key_id, nonce, account, expires_ms) VALUES (?, ?, ?, ?)",
        [("LTAIacme", f"n{i}", "acme", int(e.timestamp() * 1000)) for i, e in enumerate(expiries)],
    )
    conn.commit()
    conn.close()


def _add_call(db: Path, when: datetime) -> None:
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO calls (id, request_id, account, access_key_id, category, action, version,"
        " item, occurred_at, status, error_code, latency_ms, recorded_at)"
        " VALUES (?, 'up', 'acme', 'LTAIacme', 'facebody', 'DetectFace', '2019-12-30',"
        " 'DetectFace', ?, 200, NULL, 1.0, ?)",
        (f"rec-{when.timestamp()}", format_time(when), format_time(when)),
    )
    conn.commit()
    conn.close()


def _count(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def test_the_counter_cutoff_never_reaches_into_the_previous_billing_month() -> None:
    assert counter_cutoff(NOW, 0) is None  # kept forever
    assert counter_cutoff(NOW, 1) == FEB_START  # not 2026-03-09: February stays whole
    assert counter_cutoff(NOW, 30) == FEB_START
    assert counter_cutoff(NOW, 90) == datetime(2025, 12, 10, 12, 0, tzinfo=UTC)
    # Just after a billing month turns (00:00 UTC+8 on the 1st), the month before the
    # previous one is the newest that may go.
    turn = datetime(2026, 2, 28, 16, 0, 1, tzinfo=UTC)  # 2026-03-01 00:00:01 UTC+8
    assert counter_cutoff(turn, 1) == FEB_START
    with pytest.raises(ValueError, match="counter_retention_days"):
        RetentionPolicy(counter_days=-1)
    with pytest.raises(ValueError, match="retention_batch"):
        RetentionPolicy(batch=0)


def test_a_pass_deletes_only_expired_nonces_and_counters_before_the_cutoff(
    tmp_path: Path,
) -> None:
    db = _ledger(tmp_path)
    old = [datetime(2025, 11, 1, 0, m, tzinfo=UTC) for m in range(7)]
    kept = [FEB_START, FEB_START + timedelta(minutes=1), NOW - timedelta(minutes=1)]
    _add_counters(db, old + kept)
    _add_nonces(db, [NOW - timedelta(seconds=s) for s in (0, 1, 900, 86400)])
    _add_nonces(db, [NOW + timedelta(seconds=1), NOW + timedelta(seconds=900)])
    _add_call(db, datetime(2025, 11, 1, tzinfo=UTC))  # a record as old as the counters
    policy = RetentionPolicy(counter_days=1, batch=3)

    dry = prune_ledger_file(db, NOW, policy, dry_run=True)

    assert (dry.nonces, dry.counters, dry.transactions) == (4, 7, 0)
    assert _count(db, "outcome_counts") == 10 and _count(db, "nonces") == 6

    done = prune_ledger_file(db, NOW, policy)

    assert (done.nonces, done.counters, done.counter_cutoff) == (4, 7, FEB_START)
    # At most 3 rows per transaction: 4 nonces in 2, 7 counters in 3.
    assert done.transactions == 5
    conn = sqlite3.connect(db)
    left = [m for (m,) in conn.execute("SELECT minute FROM outcome_counts ORDER BY minute")]
    expiries = sorted(e for (e,) in conn.execute("SELECT expires_ms FROM nonces"))
    conn.close()
    assert left == [format_time(m) for m in kept]
    assert expiries == [int((NOW + timedelta(seconds=s)).timestamp() * 1000) for s in (1, 900)]
    assert _count(db, "calls") == 1 and _count(db, "credentials") == 1

    again = prune_ledger_file(db, NOW, policy)
    assert (again.nonces, again.counters) == (0, 0)


def test_counters_are_kept_forever_by_default(tmp_path: Path) -> None:
    db = _ledger(tmp_path)
    _add_counters(db, [datetime(2020, 1, 1, tzinfo=UTC)])

    report = prune_ledger_file(db, NOW, RetentionPolicy())

    assert report.counter_cutoff is None and report.counters == 0
    assert _count(db, "outcome_counts") == 1


async def test_usage_of_this_and_last_billing_month_survives_the_shortest_retention(
    tmp_path: Path,
) -> None:
    db = _ledger(tmp_path)
    january = datetime(2026, 1, 10, 3, 0, tzinfo=UTC)
    february = datetime(2026, 2, 1, 0, 0, tzinfo=UTC)  # 08:00 UTC+8 on Feb 1st
    _add_counters(db, [january, february, NOW - timedelta(minutes=5)], n=4)
    before = await usage(db, "acme", FEB_START, NOW.replace(minute=0), group="category")

    await asyncio.to_thread(prune_ledger_file, db, NOW, RetentionPolicy(counter_days=1))

    after = await usage(db, "acme", FEB_START, NOW.replace(minute=0), group="category")
    assert after.to_json() == before.to_json()
    assert after.totals.to_json()["charged"] == 8
    gone = await usage(db, "acme", datetime(2026, 1, 1, tzinfo=UTC), FEB_START, group="category")
    assert gone.totals.to_json()["charged"] == 0  # what the operator gave up: January


def _runtime_config(db: Path, **settings: object) -> MeteringConfig:
    return MeteringConfig(ledger_url=f"sqlite:///{db}", enforce_qps=False, **settings)  # type: ignore[arg-type]


async def test_the_background_task_runs_when_the_clock_says_so(tmp_path: Path) -> None:
    db = _ledger(tmp_path)
    clock = ManualClock(NOW)
    task = BackgroundRetention(db, RetentionPolicy(counter_days=1), clock, interval=600)

    _add_nonces(db, [NOW - timedelta(seconds=1)])
    first = await task.tick()  # due at once (never started: due from creation)
    assert first is not None and first.nonces == 1
    _add_nonces(db, [NOW + timedelta(seconds=300)])
    assert await task.tick() is None  # not due yet
    clock.advance(599)
    assert await task.tick() is None
    clock.advance(1)
    second = await task.tick()
    assert second is not None and second.nonces == 1  # expired meanwhile by the clock
    assert (task.stats.passes, task.stats.nonces, task.stats.failures) == (2, 2, 0)


async def test_a_failed_pass_is_logged_and_the_next_one_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = _ledger(tmp_path)
    clock = ManualClock(NOW)
    task = BackgroundRetention(db, RetentionPolicy(), clock, interval=60)
    moved = tmp_path / "away.db"
    db.rename(moved)

    with caplog.at_level(logging.ERROR, "metering_middleware.retention"):
        assert await task.tick() is None
    assert task.stats.failures == 1 and "retention pass failed" in caplog.text

    moved.rename(db)
    _add_nonces(db, [NOW - timedelta(seconds=5)])
    clock.advance(60)
    report = await task.tick()
    assert report is not None and report.nonces == 1 and task.stats.passes == 1


async def test_the_runtime_runs_retention_in_the_background_and_stops_it(tmp_path: Path) -> None:
    db = _ledger(tmp_path)
    _add_nonces(db, [NOW - timedelta(seconds=10)])
    _add_counters(db, [datetime(2025, 6, 1, tzinfo=UTC)])
    clock = ManualClock(NOW)
    runtime = MeteringRuntime(
        _runtime_config(db, retention_interval=3600, counter_retention_days=40), clock=clock
    )
    assert runtime.retention is not None

    async with runtime:
        await runtime.retention.wait_for_passes(1)  # the first pass is due at start
        assert _count(db, "nonces") == 0 and _count(db, "outcome_counts") == 0
        _add_nonces(db, [NOW + timedelta(seconds=30)])
        clock.advance(3600)
        runtime.retention.wake()
        await runtime.retention.wait_for_passes(2)
        # A nonce that expired on a quiet gateway (the writer prunes only after batches
        # that held nonces): the background pass took it.
        last = runtime.retention.stats.last
        assert last is not None and last.nonces == 1
        assert _count(db, "nonces") == 0
        stats = runtime.retention.stats
        registry = CollectorRegistry()
        registry.register(runtime.metrics)
        text = generate_latest(registry).decode()
        assert f'metering_retention_deleted_total{{kind="nonces"}} {stats.nonces:.1f}' in text
        assert 'metering_retention_deleted_total{kind="counters"} 1.0' in text
        assert 'metering_retention_runs_total{result="done"} 2.0' in text
    assert runtime.retention.stats.passes == 2  # stopped: no pass after the runtime's stop
    assert runtime.retention.stats.counters == 1


def test_retention_settings_are_checked(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    for bad, text in (
        ({"counter_retention_days": -1}, "counter_retention_days"),
        ({"counter_retention_days": 1.5}, "counter_retention_days"),
        ({"retention_interval": -5}, "retention_interval"),
        ({"retention_interval": float("nan")}, "retention_interval"),
        ({"retention_batch": 0}, "retention_batch"),
    ):
        with pytest.raises(ConfigError, match=text):
            MeteringConfig.from_mapping(bad)
    for name, raw in (
        ("COUNTER_RETENTION_DAYS", "forever"),
        ("RETENTION_INTERVAL", "hourly"),
        ("COUNTER_RETENTION_DAYS", "-3"),
    ):
        with pytest.raises(ConfigError, match=f"(?i){name}"):
            MeteringConfig().with_env({f"METERING_{name}": raw})
    with pytest.raises(ConfigError, match="set retention_interval too"):
        MeteringRuntime(_runtime_config(db, counter_retention_days=30))
    with pytest.raises(ConfigError, match="needs an SQLite or PostgreSQL ledger"):
        MeteringRuntime(
            MeteringConfig(
                ledger_url="memory://",
                enforce_qps=False,
                retention_interval=60,
                counter_retention_days=30,
            )
        )
    # The interval alone (the example gateway's default) on a ledger with nothing to
    # prune is no error: there is simply no task.
    quiet = MeteringConfig(ledger_url="memory://", enforce_qps=False, retention_interval=60)
    assert MeteringRuntime(quiet).retention is None
    config = MeteringConfig().with_env(
        {"METERING_RETENTION_INTERVAL": "600", "METERING_COUNTER_RETENTION_DAYS": "90"}
    )
    assert (config.retention_interval, config.counter_retention_days) == (600.0, 90)
    assert MeteringConfig().retention_interval == 0  # the library prunes nothing itself


def test_the_example_gateway_prunes_hourly_and_keeps_counters_by_default(tmp_path: Path) -> None:
    from example_gateway.config import GATEWAY_RETENTION_INTERVAL, load_config

    _, metering = load_config(None, {})
    assert metering.retention_interval == GATEWAY_RETENTION_INTERVAL == 3600
    assert metering.counter_retention_days == 0
    toml = tmp_path / "gateway.toml"
    toml.write_text("[metering]\nretention_interval = 300\ncounter_retention_days = 400\n")
    _, metering = load_config(toml, {"METERING_COUNTER_RETENTION_DAYS": "120"})
    assert (metering.retention_interval, metering.counter_retention_days) == (300, 120)
    toml.write_text("[metering]\ncounter_retention_days = 'a year'\n")
    with pytest.raises(ConfigError, match="counter_retention_days"):
        load_config(toml, {})


# -- metering prune -------------------------------------------------------------------


def test_prune_dry_run_then_for_real(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _ledger(tmp_path)
    now = datetime.now(UTC)
    _add_nonces(db, [now - timedelta(hours=1), now + timedelta(hours=1)])
    _add_counters(db, [now - timedelta(days=400), now - timedelta(minutes=3)])

    dry = cli(
        capsys, "prune", "--dry-run", "--counter-days", "100", "--db", str(db), "--format", "json"
    )

    assert dry.code == 0, dry.err
    rows = json.loads(dry.out)
    assert [(r["kind"], r["rows"], r["action"]) for r in rows] == [
        ("nonces", 1, "would delete"),
        ("counters", 1, "would delete"),
    ]
    assert _count(db, "nonces") == 2 and _count(db, "outcome_counts") == 2

    real = cli(capsys, "prune", "--counter-days", "100", "--batch", "1", "--db", str(db))
    assert real.code == 0
    assert "deleted 1 expired nonce(s) and 1 counter row(s)" in real.err
    assert _count(db, "nonces") == 1 and _count(db, "outcome_counts") == 1


def test_prune_keeps_counters_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _ledger(tmp_path)
    _add_counters(db, [datetime(2020, 1, 1, tzinfo=UTC)])

    run = cli(capsys, "prune", "--db", str(db), "--format", "csv")
    assert run.code == 0
    assert "counters,0,,kept" in run.out.splitlines()
    assert _count(db, "outcome_counts") == 1

    monkeypatch.setenv("METERING_COUNTER_RETENTION_DAYS", "365")  # the gateway's setting
    assert cli(capsys, "prune", "--db", str(db)).code == 0
    assert _count(db, "outcome_counts") == 0


@pytest.mark.parametrize(
    ("argv", "env", "code", "text"),
    [
        (["--counter-days", "-1"], None, 2, "--counter-days"),
        (["--counter-days", "ten"], None, 2, "--counter-days"),
        (["--batch", "0"], None, 2, "--batch"),
        ([], "soon", 2, "METERING_COUNTER_RETENTION_DAYS"),
        (["--db", "foo://x"], None, 2, "unsupported ledger URL"),
        (["--db", "memory://"], None, 2, "memory://"),
        (["--db", "postgresql://u:pw@127.0.0.1:1/l"], None, 1, "cannot connect to ledger"),
        (["--db", "missing.db"], None, 1, "no ledger file"),
    ],
)
def test_prune_bad_input_is_one_line(
    argv: list[str],
    env: str | None,
    code: int,
    text: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    if env is not None:
        monkeypatch.setenv("METERING_COUNTER_RETENTION_DAYS", env)
    if "--db" not in argv:
        argv = [*argv, "--db", str(_ledger(tmp_path))]

    run = cli(capsys, "prune", *argv)

    assert run.code == code
    assert text in run.err and run.err.count("\n") == 1 and run.out == ""


def test_a_big_prune_leaves_the_write_lock_to_a_committing_writer(tmp_path: Path) -> None:
    """A writer process that waits at most 100 ms for the lock commits while 20,000
    expired nonces go in 41 batches: it never fails for the lock, and commits between
    batches. (Without the pause between batches, back-to-back transactions starve it:
    "database is locked" in 2 of 3 runs here.)"""
    db = _ledger(tmp_path)
    n = int(os.environ.get("T_N", "20000"))
    conn = sqlite3.connect(db)
    conn.executemany(
        "INSERT INTO nonces (access_key_id, nonce, account, expires_ms) VALUES ('k', ?, 'a', ?)",
        [(f"n{i}", 1_000 + i) for i in range(n)],
    )
    conn.commit()
    conn.close()
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), "50", os.environ.get("T_BUSY", "100")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().startswith("committed")  # it runs
        started = time.monotonic()
        report = prune_ledger_file(db, NOW, RetentionPolicy(batch=500))
        ended = time.monotonic()
        child.kill()
        out, err = child.communicate()
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert (report.nonces, report.transactions) == (n, n // 500 + 1)
    assert "Error" not in err, err  # never "database is locked"
    during = [
        float(line.split()[2])
        for line in out.splitlines()
        if line.startswith("committed") and started < float(line.split()[2]) < ended
    ]
    assert len(during) >= 2, "the writer got no commit in between the prune's batches"
