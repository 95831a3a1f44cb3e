"""Ledger ingest from FOUR processes: PostgreSQL against SQLite, strict and batched.

Run: ``.venv/bin/python bench/pg_ingest_bench.py [--records 20000] [--rounds 5]
[--pg-url postgresql://...] [--json out.json]`` (``--smoke``: a tiny run that only
proves every part works; its numbers mean nothing).

What one run is: four writer processes (``--processes``) started together (a
barrier), each a ``LedgerWriter`` on its own store over the SAME ledger, each with 64
concurrent submitters making what a gateway's charged call makes (a record, its
per-minute counter and its signature nonce) until it has submitted ``--records``:

- ``strict``: each submitter awaits its record's commit before the next call (the
  gateway's strict mode: group commit of whatever arrived meanwhile);
- ``batched``: submitters do not wait (the writer commits every ``flush_interval``).

Records/s is all four processes' records over the wall time from the barrier until
the last process has everything committed (its writer stopped); every run then checks
that the ledger holds exactly processes x records rows (a bench that lost a record
stops with an error).

SQLite is four processes on one file (``synchronous=FULL``, WAL), as several gateway
processes on one machine share it (docs/operations.md): they take turns at its write
lock. PostgreSQL is four processes on one database, ``synchronous_commit = on``; with
no ``--pg-url`` the bench starts a throw-away cluster (tests/support/postgres.py) with
``fsync = on`` (the tests' clusters run with it off). Both on the same machine's disk.

Rounds are interleaved (every round runs every variant, the order rotating) so that
drift in the machine's speed falls on all of them; the report gives each variant's
median records/s with its range, and the PostgreSQL/SQLite ratio per mode as the
median of the per-round ratios with their range.
Not collected by pytest: this measures, it does not assert (tests/benchmarks runs
``--smoke``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the project's tests/ and the package
SUBMITTERS = 64
MODES = ("strict", "batched")
BACKENDS = ("sqlite", "postgresql")


# -- one writer process ------------------------------------------------------------------


async def _child() -> None:
    """A writer process: runs one ingest per command line on stdin (JSON ``[url, mode,
    tag, records]``), between "ready" and the parent's "go"; started once per bench, so
    its imports are paid once, not per run."""
    while command := await asyncio.to_thread(sys.stdin.readline):
        url, mode, tag, records = json.loads(command)
        print(json.dumps(await _ingest(url, mode, tag, records)), flush=True)


async def _ingest(url: str, mode: str, tag: str, records: int) -> dict[str, Any]:
    from metering_middleware.ledger import CallRecord, ClaimedNonce, LedgerWriter
    from metering_middleware.ledger.records import Outcome
    from metering_middleware.ledger.urls import open_store

    store = open_store(url)
    await store.open()
    writer = LedgerWriter(store, journal=None, mode=mode)  # type: ignore[arg-type]
    await writer.start()
    now = datetime.now(UTC)
    expires = time.time() + 900
    made = iter(range(records))
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)

    async def submitter() -> None:
        for i in made:  # the next call, like request handlers taking arrivals
            account = f"acct-{i % 50}"
            record = CallRecord(
                f"{tag}-{i:09d}", f"req-{tag}-{i}", account, f"LTAI{i % 50}", "facebody",
                "DetectFace", "2019-12-30", "facebody.DetectFace", now, 200, None, 12.5,
            )  # fmt: skip
            writer.hold_nonce(ClaimedNonce(account, record.access_key_id, record.id, expires))
            writer.count(account, "facebody", "DetectFace", Outcome.CHARGED, "", now)
            done = writer.submit(record)
            if mode == "strict":
                await done
            else:
                await asyncio.sleep(0)  # the next request's turn; nothing waits on the ledger

    await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
    await writer.stop()  # batched: the last flush commits here
    await store.close()
    return {"end": time.time(), "commits": getattr(store, "writes", None)}


# -- the parent: rounds, variants, report ------------------------------------------------


class _Writers:
    """The writer processes, started once; each run is a command to all of them."""

    def __init__(self, processes: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(processes)
        ]

    def _send(self, proc: subprocess.Popen[str], line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    def _read(self, proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line:
            raise SystemExit(f"a writer process failed (exit {proc.wait()})")
        return line

    def run(self, url: str, mode: str, records: int, serial: int) -> dict[str, Any]:
        for n, proc in enumerate(self.procs):
            self._send(proc, json.dumps([url, mode, f"r{serial}p{n}", records]))
        for proc in self.procs:
            if (line := self._read(proc)) != "ready":
                raise SystemExit(f"a writer process did not start: {line!r}")
        start = time.time()
        for proc in self.procs:
            self._send(proc, "go")
        reports = [json.loads(self._read(proc)) for proc in self.procs]
        wall = max(r["end"] for r in reports) - start
        commits = [r["commits"] for r in reports if r["commits"] is not None]
        return {
            "records_s": len(self.procs) * records / wall,
            "wall_s": wall,
            "commits": sum(commits) if commits else None,
        }

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _count_rows(backend: str, url: str) -> int:
    if backend == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///").split("?")[0]) as conn:
            return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(url.split("?")[0])
        try:
            return int(await conn.fetchval("SELECT count(*) FROM calls"))
        finally:
            await conn.close()

    return asyncio.run(count())


class _Ledgers:
    """A fresh ledger per run: an SQLite file in a temporary folder, or a new database."""

    def __init__(self, folder: Path, pg_url: str | None) -> None:
        self.folder = folder
        self.serial = 0
        self.cluster: Any = None
        self.pg_url = pg_url
        if pg_url is None:
            from tests.support.postgres import PostgresCluster, find_pg_bin

            bin_dir = find_pg_bin()
            if bin_dir is None:
                raise SystemExit("no PostgreSQL binaries: pass --pg-url")
            self.cluster = PostgresCluster(folder / "cluster", bin_dir)
            self.cluster.init()
            with open(self.cluster.data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write("# the bench: durable commits, as in production\n")
                conf.write("fsync = on\nfull_page_writes = on\nsynchronous_commit = on\n")
            self.cluster.start()

    def new(self, backend: str) -> str:
        self.serial += 1
        if backend == "sqlite":
            return f"sqlite:///{self.folder / f'l{self.serial}.sqlite'}?busy_timeout_ms=30000"
        if self.cluster is not None:
            return str(self.cluster.url(self.cluster.new_database("bench")))
        assert self.pg_url is not None
        return self._new_database(self.pg_url)

    def _new_database(self, url: str) -> str:
        import asyncpg

        name = f"bench_{os.getpid()}_{self.serial}"

        async def create() -> None:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        base, _, query = url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.2f} ({min(values):,.2f}-{max(values):,.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="per process")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg-url", help="a database the bench may create databases beside")
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
    parser.add_argument("--smoke", action="store_true", help="tiny: proves it runs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child())
        return
    if args.smoke:
        args.records, args.rounds = 200, 1
    variants = [(b, m) for m in MODES for b in BACKENDS]
    runs: dict[str, list[dict[str, Any]]] = {f"{b}+{m}": [] for b, m in variants}
    with tempfile.TemporaryDirectory(prefix="pg-ingest-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o755)  # the cluster's postgres user must reach its folder
        ledgers = _Ledgers(folder, args.pg_url)
        writers = _Writers(args.processes)
        try:
            for n in range(args.rounds):
                order = variants[n % len(variants) :] + variants[: n % len(variants)]
                for backend, mode in order:
                    url = ledgers.new(backend)
                    result = writers.run(url, mode, args.records, ledgers.serial)
                    rows = _count_rows(backend, url)
                    if rows != args.processes * args.records:
                        raise SystemExit(f"{backend}+{mode}: {rows} rows, not "
                                         f"{args.processes * args.records}")  # fmt: skip
                    result["rows"] = rows
                    runs[f"{backend}+{mode}"].append(result)
                print(
                    f"round {n + 1}: "
                    + " | ".join(f"{v} {r[-1]['records_s']:>9,.0f}/s" for v, r in runs.items()),
                    flush=True,
                )
        finally:
            writers.close()
            ledgers.close()
    print(f"{args.processes} processes x {args.records} records, {args.rounds} rounds:")
    for variant, results in runs.items():
        print(f"  {variant:<20} records/s {_spread([r['records_s'] for r in results])}")
    for mode in MODES:
        ratios = [
            p["records_s"] / s["records_s"]
            for p, s in zip(runs[f"postgresql+{mode}"], runs[f"sqlite+{mode}"], strict=True)
        ]
        print(f"  postgresql / sqlite, {mode}: {_spread(ratios)}")
    if args.json:
        args.json.write_text(json.dumps({"processes": args.processes, "records": args.records,
                                         "runs": runs}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
