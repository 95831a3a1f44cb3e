"""Ledger writer throughput against a plain ``executemany`` of the same rows.

Run: ``.venv/bin/python tests/ledger/bench_writer.py [--records 100000] [--rounds 5]``

Each round (interleaved, so drift hits both alike) writes N records to a fresh
WAL file with synchronous=FULL:

- ``writer``: LedgerWriter strict (group commit), 64 concurrent submitters, each
  awaiting its record's commit before submitting the next;
- ``writer+nonce``: the same, each call also holding its signature nonce first
  (``hold_nonce``, as the runtime does at admission): one more row per call in
  the same transaction;
- ``plain``: sqlite3 ``executemany`` of the same rows in transactions of 1000
  rows (the best case of the performance notes), no asyncio;
- ``plain-64``: the same in transactions of 64 rows, the batch size 64
  submitters can reach (each has one record in flight): this separates the
  writer's own overhead from the cost of committing smaller batches.

It also times ``submit()`` alone (batched mode, nothing committed meanwhile).
Not collected by pytest: this measures, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from metering_middleware.ledger import (
    CallRecord,
    ClaimedNonce,
    LedgerWriter,
    MemoryStore,
    SqliteStore,
)
from metering_middleware.ledger.codec import format_time, record_to_row
from metering_middleware.ledger.migrate import migrate_file
from metering_middleware.stores.sqlite.ledger import _INSERT_CALL

SUBMITTERS = 64


def make_records(n: int) -> list[CallRecord]:
    t0 = datetime(2026, 1, 15, tzinfo=UTC)
    return [
        CallRecord(
            id=f"01BENCH{i:019d}",
            request_id=f"req-{i}",
            account=f"acct-{i % 50}",
            access_key_id=f"LTAI-{i % 50}",
            category="facebody",
            action="DetectFace",
            version="2019-12-30",
            item="DetectFace",
            occurred_at=t0 + timedelta(microseconds=i),
            status=200,
            error_code=None,
            latency_ms=12.5,
        )
        for i in range(n)
    ]


async def run_writer(
    path: Path, records: list[CallRecord], *, nonces: bool = False
) -> tuple[float, float, int]:
    async with SqliteStore(path, synchronous="FULL") as store:
        writer = LedgerWriter(store, journal=None, mode="strict")
        await writer.start()
        arrivals = iter(records)
        expires = time.time() + 900

        async def submitter() -> None:
            # Each takes the next arrival, like request handlers: a batch then holds
            # records made close together in time, as in a real gateway.
            for record in arrivals:
                if nonces:
                    writer.hold_nonce(
                        ClaimedNonce(record.account, record.access_key_id, record.id, expires)
                    )
                await writer.submit(record)

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await writer.stop()
        return wall, cpu, store.writes


def run_plain(path: Path, records: list[CallRecord], batch: int) -> tuple[float, float]:
    migrate_file(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    wall, cpu = time.perf_counter(), time.process_time()
    recorded_at = format_time(datetime.now(UTC))
    for start in range(0, len(records), batch):
        rows = [record_to_row(r, recorded_at) for r in records[start : start + batch]]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT_CALL, rows)
        conn.execute("COMMIT")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    conn.close()
    return wall, cpu


async def time_submit(records: list[CallRecord]) -> float:
    writer = LedgerWriter(MemoryStore(), journal=None, mode="batched", flush_interval=3600)
    await writer.start()
    start = time.perf_counter()
    for record in records:
        writer.submit(record)
    elapsed = time.perf_counter() - start
    await writer.stop()
    return elapsed / len(records) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    records = make_records(args.records)
    rates: dict[str, list[float]] = {
        "writer": [],
        "writer+nonce": [],
        "plain": [],
        "plain-64": [],
    }
    cpu: dict[str, list[float]] = {name: [] for name in rates}
    commits: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            wall, used, made = asyncio.run(run_writer(Path(tmp, f"w{n}.db"), records))
            results = {"writer": (wall, used)}
            commits.append(made)
            wall, used, _ = asyncio.run(run_writer(Path(tmp, f"n{n}.db"), records, nonces=True))
            results["writer+nonce"] = (wall, used)
            results["plain"] = run_plain(Path(tmp, f"p{n}.db"), records, 1000)
            results["plain-64"] = run_plain(Path(tmp, f"q{n}.db"), records, SUBMITTERS)
            for name, (wall, used) in results.items():
                rates[name].append(len(records) / wall)
                cpu[name].append(used / len(records) * 1e6)
            print(
                f"round {n + 1}: "
                + " | ".join(
                    f"{name} {rates[name][-1]:>8,.0f} rows/s, cpu {cpu[name][-1]:4.1f} us/row"
                    for name in rates
                )
                + f" | writer commits {made}"
            )
    median = {name: statistics.median(values) for name, values in rates.items()}
    submit_us = asyncio.run(time_submit(records))
    print(
        f"median rows/s: writer {median['writer']:,.0f}, "
        f"writer+nonce {median['writer+nonce']:,.0f}, plain {median['plain']:,.0f}, "
        f"plain-64 {median['plain-64']:,.0f}; "
        f"writer/plain {median['writer'] / median['plain']:.2f}, "
        f"writer/plain-64 {median['writer'] / median['plain-64']:.2f}; "
        f"rows per writer commit {len(records) / statistics.median(commits):.0f}; "
        f"submit() {submit_us:.2f} us"
    )


if __name__ == "__main__":
    main()
