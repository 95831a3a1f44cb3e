"""Who runs the SQLite ledger's work: aiosqlite, aiosqlite's ``_execute``, or our own thread.

Run: ``.venv/bin/python bench/sqlite_owner_bench.py [--rounds 5] [--commits 2000]
[--batch 64] [--synchronous NORMAL|FULL] [--loop uvloop|asyncio]``

Four ways to run the ledger's write transaction (the store's own ``_write_transaction``
SQL: nonces, records, counts in one ``BEGIN IMMEDIATE`` ... ``COMMIT``) off the event loop:

- ``public``: aiosqlite's public API, one hand-off per statement (BEGIN, three
  ``executemany``, COMMIT);
- ``_execute``: aiosqlite's private ``Connection._execute``, the whole transaction in
  one hand-off (the ledger store until this change);
- ``owner``: :class:`metering_middleware.stores.sqlite._owner.OwnerThread`, a thread of
  our own owning a plain ``sqlite3`` connection (``SimpleQueue`` in,
  ``call_soon_threadsafe`` out), one hand-off per transaction;
- ``executor``: a one-worker ``ThreadPoolExecutor`` via ``loop.run_in_executor``.

Two measurements per way, each round interleaved (so drift hits all alike; the order
turns each round), each on a
fresh WAL file in a temp dir:

- **group commit**: ``--commits`` transactions of ``--batch`` records (+ as many nonces
  and one count) back to back: records/s and process CPU µs per commit;
- **strict**: ``--commits`` transactions of one record, one after another, each awaited
  (the strict writer's lone call): per-commit latency p50 and p99 in µs.

The default is ``synchronous=NORMAL`` so the hand-offs, not the disk's fsync, are
measured; ``--synchronous FULL`` shows what strict mode pays on this disk.
Not collected by pytest: this measures, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from writer_bench import make_records  # the same records as the writer's bench

from metering_middleware.ledger.codec import count_to_row, nonce_to_row, record_to_row
from metering_middleware.ledger.migrate import connect_existing, migrate_file, rw_uri
from metering_middleware.ledger.records import ClaimedNonce, Outcome, OutcomeCount
from metering_middleware.stores.sqlite._owner import OwnerThread
from metering_middleware.stores.sqlite.ledger import (
    _ADD_COUNT,
    _HOLD_NONCE,
    _INSERT_CALL,
    _write_transaction,
)

WAYS = ("public", "_execute", "owner", "executor")
T0 = datetime(2026, 1, 15, tzinfo=UTC)
Rows = tuple[list[Any], list[Any], list[Any]]


def batches(commits: int, size: int) -> list[Rows]:
    """``commits`` transactions of ``size`` records, their nonces and one count each."""
    recorded = "2026-01-15T00:00:00.000000Z"
    records = make_records(commits * size)
    out: list[Rows] = []
    for c in range(commits):
        chunk = records[c * size : (c + 1) * size]
        rows = [record_to_row(r, recorded) for r in chunk]
        nonces = [nonce_to_row(ClaimedNonce("a", r.access_key_id, r.id, 1e12)) for r in chunk]
        count = OutcomeCount(T0, "acct-0", "facebody", "DetectFace", Outcome.CHARGED, "", size)
        out.append((rows, [count_to_row(count)], nonces))
    return out


Commit = Callable[[Rows], Awaitable[None]]


async def with_way(way: str, path: Path, synchronous: str) -> tuple[Commit, Callable[[], Any]]:
    """A commit function for ``way`` on an open connection, and its closer."""
    pragmas = ("PRAGMA busy_timeout = 2000", f"PRAGMA synchronous = {synchronous}")
    if way in ("public", "_execute"):
        conn = await aiosqlite.connect(rw_uri(path), uri=True, isolation_level=None)
        for pragma in pragmas:
            await conn.execute(pragma)
        if way == "public":

            async def commit(rows: Rows) -> None:
                calls, counts, nonces = rows
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    await conn.executemany(_HOLD_NONCE, nonces)
                    await conn.executemany(_INSERT_CALL, calls)
                    await conn.executemany(_ADD_COUNT, counts)
                    await conn.execute("COMMIT")
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
        else:

            async def commit(rows: Rows) -> None:
                calls, counts, nonces = rows
                run: Callable[..., Awaitable[None]] = conn._execute
                await run(_write_transaction, conn._conn, calls, counts, nonces)

        return commit, conn.close

    def connect() -> Any:
        db = connect_existing(path, timeout=2.0)
        db.isolation_level = None
        for pragma in pragmas:
            db.execute(pragma)
        return db

    if way == "owner":
        owner = OwnerThread("bench-sqlite")
        db = await owner.call(connect)

        async def commit(rows: Rows) -> None:
            await owner.call(_write_transaction, db, *rows)

        async def close() -> None:
            await owner.stop(db.close)

        return commit, close

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-sqlite")
    loop = asyncio.get_running_loop()
    db = await loop.run_in_executor(pool, connect)

    async def commit(rows: Rows) -> None:
        await loop.run_in_executor(pool, _write_transaction, db, *rows)

    async def close() -> None:
        await loop.run_in_executor(pool, db.close)
        pool.shutdown()

    return commit, close


async def measure(way: str, path: Path, work: list[Rows], synchronous: str) -> list[float]:
    """Per-commit wall seconds, and (appended last) total CPU seconds."""
    commit, close = await with_way(way, path, synchronous)
    times: list[float] = []
    try:
        await commit(work[0])  # warm: first page allocations, statement cache
        cpu = time.process_time()
        for rows in work[1:]:
            t = time.perf_counter()
            await commit(rows)
            times.append(time.perf_counter() - t)
        cpu = time.process_time() - cpu
    finally:
        await close()
    return [*times, cpu]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for r in range(args.rounds):
        for way in WAYS[r % len(WAYS) :] + WAYS[: r % len(WAYS)]:  # each way first in turn
            for kind, size in (("group", args.batch), ("strict", 1)):
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "ledger.sqlite"
                    migrate_file(path, busy_timeout_ms=2000, synchronous=args.synchronous)
                    work = batches(args.commits + 1, size)
                    out = await measure(way, path, work, args.synchronous)
                times, cpu = out[:-1], out[-1]
                cpu_us = cpu / len(times) * 1e6
                if kind == "group":  # records/s, CPU µs per commit
                    row = (len(times) * size / sum(times), cpu_us, 0.0)
                else:  # latency p50 and p99 µs, CPU µs per commit
                    row = (pct(times, 0.5) * 1e6, pct(times, 0.99) * 1e6, cpu_us)
                results.setdefault((way, kind), []).append(row)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    print(
        f"\nsynchronous={args.synchronous}, loop={args.loop}, {args.rounds} rounds, "
        f"{args.commits} commits per run, group batch {args.batch}"
    )
    print(
        "| way | group records/s (median) | min-max | group CPU µs/commit | "
        "strict p50 µs (median) | min-max | strict p99 µs | strict CPU µs/commit |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for way in WAYS:
        g, s = results[(way, "group")], results[(way, "strict")]
        rate = [x[0] for x in g]
        p50 = [x[0] for x in s]
        print(
            f"| {way} | {statistics.median(rate):,.0f} | {min(rate):,.0f}-{max(rate):,.0f} "
            f"| {statistics.median(x[1] for x in g):.0f} "
            f"| {statistics.median(p50):.0f} | {min(p50):.0f}-{max(p50):.0f} "
            f"| {statistics.median(x[1] for x in s):.0f} "
            f"| {statistics.median(x[2] for x in s):.0f} |"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--synchronous", choices=("NORMAL", "FULL"), default="NORMAL")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
