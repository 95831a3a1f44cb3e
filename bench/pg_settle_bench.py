"""Benchmark: a full settle on PostgreSQL against a plain GROUP BY of the same rows.

Issue 11's figure: N records (default 1,000,000) over 1,000 accounts and two months with
the mixed plans of ``settle_bench.py`` (``synthetic.make_plans``), in a real PostgreSQL
ledger; measured in one run, on the same database:

1. baseline: ``SELECT account, item, count(*) FROM calls GROUP BY account, item``
   (median of 3, buffers warm);
2. the full settle of every record through ``PostgresRatingStore`` (wall and CPU time);

and the ratio. Records are copied in with ``COPY`` (not through the gateway), plans bought
through the store. Settlement runs at 2026-03-01T12:00Z: January closed, February open.

    .venv/bin/python bench/pg_settle_bench.py [--url postgresql://...] [--records N]
        [--accounts N] [--json out.json] [--results bench/RESULTS.md]

Without ``--url`` a throw-away cluster is started in a temporary folder
(``tests/support/postgres.py``: initdb + pg_ctl, ``fsync=off``), so only ratios mean
anything then. The database at ``--url`` must be empty (the bench migrates it). Do not run
it on a loaded machine: the numbers are for a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from synthetic import SPAN, START, make_plans

from metering_middleware.catalog import BillableItem, Catalog, default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.rating import SettleReport, settle
from metering_middleware.stores.postgresql import PostgresStore
from metering_middleware.stores.postgresql.rating import PostgresRatingStore

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
SLICES = 10
COLUMNS = (
    "id", "request_id", "account", "access_key_id", "category", "action", "version",
    "item", "occurred_at", "status", "error_code", "latency_ms", "recorded_at",
)  # fmt: skip


async def build(url: str, records: int, accounts: int, catalog: Catalog, seed: int) -> None:
    rnd = random.Random(seed)
    billable = [it for it in catalog.items if not it.free]
    names = [f"acct-{i:05d}" for i in range(accounts)]
    uses: dict[str, list[BillableItem]] = {
        name: rnd.sample(billable, rnd.randint(1, 4)) for name in names
    }
    async with PostgresStore.from_url(url), PostgresRatingStore.from_url(url) as store:
        for p in make_plans(names, uses, max(records // accounts, 1), rnd):
            await store.add_plan(p, START)  # the purchase (its refund is a row of its own)
            if p.refunded_at is not None:
                await store.add_refund(p.id, p.refunded_at, START, None)
    conn = await asyncpg.connect(url)
    try:
        span_us = int(SPAN.total_seconds() * 1_000_000)
        per_slice = records // SLICES
        k = 0
        for s in range(SLICES):  # one slice of time at a time: sorted, little memory
            lo, hi = s * span_us // SLICES, (s + 1) * span_us // SLICES
            count = per_slice if s < SLICES - 1 else records - per_slice * (SLICES - 1)
            rows: list[tuple[Any, ...]] = []
            for offset in sorted(rnd.randrange(lo, hi) for _ in range(count)):
                name = names[rnd.randrange(accounts)]
                it = rnd.choice(uses[name])
                when = START + timedelta(microseconds=offset)
                rows.append(
                    (f"{k:026d}", None, name, "AK", it.category, it.action, it.version,
                     it.item, when, 200, None, 1.0, when + timedelta(seconds=1))
                )  # fmt: skip
                k += 1
            await conn.copy_records_to_table("calls", records=rows, columns=COLUMNS)
        await conn.execute("ANALYZE calls")
    finally:
        await conn.close()


async def group_by(url: str) -> float:
    conn = await asyncpg.connect(url)
    try:
        t = time.perf_counter()
        rows = await conn.fetch("SELECT account, item, count(*) FROM calls GROUP BY account, item")
        elapsed = time.perf_counter() - t
    finally:
        await conn.close()
    assert rows
    return elapsed


async def timed_settle(url: str, catalog: Catalog) -> tuple[float, float, SettleReport]:
    # A full settle reads a month in one statement: no 10 s statement limit here.
    long = f"{url}{'&' if '?' in url else '?'}command_timeout=3600"
    async with PostgresRatingStore.from_url(long) as store:
        t, c = time.perf_counter(), time.process_time()
        report = await settle(store, catalog, ManualClock(NOW))
        return time.perf_counter() - t, time.process_time() - c, report


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    catalog = default_catalog()
    t = time.perf_counter()
    await build(url, args.records, args.accounts, catalog, args.seed)
    print(f"ledger: {args.records:,} records, {args.accounts:,} accounts, built in "
          f"{time.perf_counter() - t:.1f} s")  # fmt: skip
    await group_by(url)  # warm the buffers for both contestants
    scans = [await group_by(url) for _ in range(3)]
    scan = statistics.median(scans)
    print(f"GROUP BY: median {scan:.3f} s ({', '.join(f'{x:.3f}' for x in scans)})")
    full, cpu, report = await timed_settle(url, catalog)
    print(
        f"full settle: {full:.2f} s (CPU {cpu:.2f} s), {report.records:,} records, "
        f"{full / scan:.1f}x the GROUP BY"
    )
    return {
        "records": args.records,
        "accounts": args.accounts,
        "settled": report.records,
        "group_by_s": scan,
        "settle_s": full,
        "settle_cpu_s": cpu,
        "ratio": full / scan,
    }


def section(result: dict[str, Any], server: str) -> str:
    return f"""
## Settlement on PostgreSQL

`bench/pg_settle_bench.py` on {platform.machine()} ({platform.python_implementation()} \
{platform.python_version()}, PostgreSQL {server}): {result["records"]:,} records over \
{result["accounts"]:,} accounts and two months with mixed plans, settled at \
2026-03-01T12:00Z through `PostgresRatingStore`; both numbers from one run.

| measurement | time | ratio |
| --- | --- | --- |
| baseline: `SELECT account, item, count(*) ... GROUP BY` (median of 3, warm) | \
{result["group_by_s"]:.3f} s | 1 |
| full settle ({result["settled"]:,} records; CPU {result["settle_cpu_s"]:.2f} s) | \
{result["settle_s"]:.2f} s | {result["ratio"]:.1f}x the GROUP BY |
"""


async def server_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="an empty PostgreSQL database (default: a throw-away one)")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    parser.add_argument("--results", type=Path, help="append the section to this file")
    args = parser.parse_args()
    if args.records < SLICES or args.accounts < 1:
        parser.error(f"--records must be at least {SLICES}, --accounts at least 1")
    folder = None
    cluster = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tests/
        from tests.support.postgres import PostgresCluster, find_pg_bin

        bin_dir = find_pg_bin()
        if bin_dir is None:
            parser.error("no PostgreSQL binaries (initdb, pg_ctl) found: pass --url")
        folder = Path(tempfile.mkdtemp(prefix="pg-settle-bench-"))
        folder.chmod(0o755)
        cluster = PostgresCluster(folder / "cluster", bin_dir)
        cluster.init()
        cluster.start()
        url = cluster.url(cluster.new_database("bench"))
    try:
        result = asyncio.run(run(args, url))
        text = section(result, asyncio.run(server_version(url)))
    finally:
        if cluster is not None:
            cluster.stop(immediate=True)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.results is not None:
        with args.results.open("a", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
