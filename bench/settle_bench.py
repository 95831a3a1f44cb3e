"""Benchmark: settlement of a real SQLite ledger (default 1,000,000 records, 1,000 accounts).

Measured in one run, on the same file:

1. baseline: ``SELECT account, item, COUNT(*) FROM calls GROUP BY account, item`` (median
   of 3, page cache warm);
2. the full settle of every record (time; peak RSS above what the process held before);
3. an incremental settle of 10,000 new records on top (the usual case: they continue
   each account's saved state), and one with 100 late records in the open month (each
   re-rates its account from the month's checkpoint).

Records span January and February 2026 (UTC+8 edges included), each account uses 1-4
items interleaved at random, plans are mixed as in ``deduction_bench.py`` (single and
general plans, some expiring mid-range or refunded, many running out; a few QPS
subscriptions). Records are inserted with ``executemany`` (not through the gateway), in
slices so generating them never holds the whole ledger in memory. Settlement runs at
2026-03-01T12:00Z: January is closed, February open.

    .venv/bin/python bench/settle_bench.py [--calls N] [--accounts N] [--new N]
                                           [--results bench/RESULTS.md]

``--results`` appends the "## Settlement" section to that file (one write).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import resource
import sqlite3
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from synthetic import SPAN, START, make_plans

from metering_middleware.catalog import BillableItem, Catalog, default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.ledger.codec import format_time
from metering_middleware.ledger.migrate import migrate_file
from metering_middleware.rating import (
    SettleReport,
    SqliteRatingStore,
    settle,
)
from metering_middleware.rating._rows import plan_row

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
SLICES = 10
INSERT = (
    "INSERT INTO calls (id, request_id, account, access_key_id, category, action, version,"
    " item, occurred_at, status, error_code, latency_ms, recorded_at)"
    " VALUES (?, NULL, ?, 'AK', ?, ?, ?, ?, ?, 200, NULL, 1.0, ?)"
)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(
    path: Path, calls: int, accounts: int, catalog: Catalog, seed: int
) -> tuple[list[str], dict[str, list[BillableItem]]]:
    rnd = random.Random(seed)
    billable = [it for it in catalog.items if not it.free]
    names = [f"acct-{i:05d}" for i in range(accounts)]
    uses = {name: rnd.sample(billable, rnd.randint(1, 4)) for name in names}
    migrate_file(path, synchronous="NORMAL")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    plans = make_plans(names, uses, calls // accounts, rnd)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO rating_plans (id, account, kind, categories, action, qps, points, start_at,"
        " end_at, ordered_at, price_paid, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [plan_row(replace(p, refunded_at=None), START) for p in plans],
    )
    conn.executemany(
        "INSERT INTO rating_refunds (plan_id, refunded_at, amount, recorded_at)"
        " VALUES (?, ?, NULL, ?)",
        [(p.id, format_time(p.refunded_at), format_time(START)) for p in plans if p.refunded_at],
    )
    conn.execute("COMMIT")
    span_us = int(SPAN.total_seconds() * 1_000_000)
    per_slice = calls // SLICES
    k = 0
    for s in range(SLICES):  # one slice of time at a time: sorted overall, little memory
        lo, hi = s * span_us // SLICES, (s + 1) * span_us // SLICES
        offsets = sorted(rnd.randrange(lo, hi) for _ in range(per_slice))
        rows = []
        for offset in offsets:
            name = names[rnd.randrange(accounts)]
            it = rnd.choice(uses[name])
            when = START + timedelta(microseconds=offset)
            rows.append(
                (
                    f"{k:026d}",
                    name,
                    it.category,
                    it.action,
                    it.version,
                    it.item,
                    format_time(when),
                    format_time(when + timedelta(seconds=1)),
                )
            )
            k += 1
        conn.execute("BEGIN")
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
    conn.close()
    return names, uses


def add_records(
    path: Path,
    names: list[str],
    uses: dict[str, list[BillableItem]],
    times: list[datetime],
    arrival: datetime,
    prefix: str,
    rnd: random.Random,
) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    rows = []
    for i, when in enumerate(times):
        name = rnd.choice(names)
        it = rnd.choice(uses[name])
        rows.append(
            (
                f"{prefix}{i:024d}",
                name,
                it.category,
                it.action,
                it.version,
                it.item,
                format_time(when),
                format_time(arrival),
            )
        )
    conn.execute("BEGIN")
    conn.executemany(INSERT, rows)
    conn.execute("COMMIT")
    conn.close()


def group_by(path: Path) -> float:
    conn = sqlite3.connect(path)
    t = time.perf_counter()
    rows = conn.execute(
        "SELECT account, item, COUNT(*) FROM calls GROUP BY account, item"
    ).fetchall()
    elapsed = time.perf_counter() - t
    conn.close()
    assert rows
    return elapsed


async def timed_settle(
    store: SqliteRatingStore, catalog: Catalog, clock: ManualClock
) -> tuple[float, float, SettleReport]:
    t, c = time.perf_counter(), time.process_time()
    report = await settle(store, catalog, clock)
    return time.perf_counter() - t, time.process_time() - c, report


async def run(args: argparse.Namespace) -> str:
    catalog = default_catalog()
    tmp = tempfile.TemporaryDirectory()
    path = Path(tmp.name) / "ledger.sqlite"
    t = time.perf_counter()
    names, uses = build(path, args.calls, args.accounts, catalog, args.seed)
    print(
        f"ledger: {args.calls:,} records, {args.accounts:,} accounts, built in "
        f"{time.perf_counter() - t:.1f} s ({path.stat().st_size / 2**20:,.0f} MiB)"
    )

    group_by(path)  # warm the page cache for both contestants
    scans = [group_by(path) for _ in range(3)]
    scan = statistics.median(scans)
    print(f"GROUP BY scan: median {scan:.2f} s ({', '.join(f'{x:.2f}' for x in scans)})")

    clock = ManualClock(NOW)
    async with SqliteRatingStore(path) as store:
        before = rss_mib()
        full, full_cpu, report = await timed_settle(store, catalog, clock)
        peak = rss_mib()
        print(
            f"full settle: {full:.2f} s (CPU {full_cpu:.2f} s), {report.records:,} records, "
            f"{full / scan:.1f}x the scan; peak RSS {peak:,.0f} MiB "
            f"(+{peak - before:,.0f} MiB over the {before:,.0f} MiB before)"
        )

        rnd = random.Random(args.seed + 1)
        incrs: list[tuple[float, float, SettleReport]] = []
        for r in range(3):  # three rounds of new records, one after the other: the median
            horizon = clock.now() - timedelta(seconds=60)
            new_times = sorted(
                horizon + timedelta(microseconds=rnd.randrange(600_000_000))
                for _ in range(args.new)
            )
            arrival = horizon + timedelta(minutes=10)
            add_records(path, names, uses, new_times, arrival, f"n{r}", rnd)
            clock.set(arrival + timedelta(minutes=2))
            incrs.append(await timed_settle(store, catalog, clock))
        incr, incr_cpu, incr_report = sorted(incrs, key=lambda x: x[0])[1]
        print(
            f"incremental settle of {incr_report.records:,} new records: median {incr:.3f} s "
            f"(CPU {incr_cpu:.3f} s; {', '.join(f'{x[0]:.3f}' for x in incrs)}), "
            f"{incr / full:.4f} of the full settle"
        )

        late_times = [START + timedelta(days=45, seconds=rnd.randrange(86_400)) for _ in range(100)]
        add_records(path, names, uses, late_times, clock.now(), "l", rnd)
        clock.advance(120)
        late, late_cpu, late_report = await timed_settle(store, catalog, clock)
        print(
            f"100 late records (February, open): {late:.2f} s (CPU {late_cpu:.2f} s), "
            f"{len(late_report.rerated)} accounts re-rated, {late_report.records:,} records "
            f"re-deducted, {late / full:.3f} of the full settle"
        )
    tmp.cleanup()

    ok_full = "met" if full <= 20 * scan else "MISSED"
    ok_incr = "met" if incr <= full / 20 else "MISSED"
    return f"""
## Settlement

`bench/settle_bench.py` on {platform.machine()} ({platform.python_implementation()} \
{platform.python_version()}, SQLite {sqlite3.sqlite_version}): {args.calls:,} records over \
{args.accounts:,} accounts and two months with mixed plans, in a real SQLite ledger (WAL), \
settled at 2026-03-01T12:00Z; all numbers from one run.

| measurement | time | ratio |
| --- | --- | --- |
| baseline: `SELECT account, item, COUNT(*) ... GROUP BY` (median of 3, warm) | {scan:.2f} s | 1 |
| full settle ({report.records:,} records; CPU {full_cpu:.2f} s) | {full:.2f} s | {full / scan:.1f}x the scan (target 20x: {ok_full}) |
| incremental settle of {incr_report.records:,} new records (median of 3 rounds) | {incr:.3f} s | {incr / full:.4f} of the full settle (target 0.05: {ok_incr}) |
| 100 late records in the open month ({len(late_report.rerated)} accounts re-rated from checkpoints) | {late:.2f} s | {late / full:.3f} of the full settle |

Peak RSS during the full settle: {peak:,.0f} MiB ({before:,.0f} MiB before it). A pass reads
and deducts one billing month at a time, so memory follows the largest month, not the ledger.
"""  # noqa: E501


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--results", type=Path, help="append the section to this file")
    args = parser.parse_args()
    section = asyncio.run(run(args))
    print(section)
    if args.results is not None:
        with args.results.open("a", encoding="utf-8") as fh:
            fh.write(section)


if __name__ == "__main__":
    main()
