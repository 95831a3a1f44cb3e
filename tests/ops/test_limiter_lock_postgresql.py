"""One ``memory://`` limiter per PostgreSQL ledger: a second process is refused at start
in one line naming ``redis://``; a dead holder (``kill -9``) frees the lock; a holder
whose connection is cut takes the lock again."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.ops.pg_limiter_lock import LimiterLockHeld, PostgresLimiterLock
from tests.support.postgres import PostgresCluster

ROOT = str(Path(__file__).resolve().parents[2])

# A gateway's runtime in a process of its own: "started" once it holds the lock, then it
# runs until its stdin closes (or it is killed).
HOLDER = """
import asyncio, sys
from metering_middleware import MeteringConfig, MeteringRuntime

async def main() -> None:
    config = MeteringConfig(ledger_url=sys.argv[1], journal_path=sys.argv[2])
    async with MeteringRuntime(config):
        print("started", flush=True)
        await asyncio.to_thread(sys.stdin.read)

asyncio.run(main())
"""


def _env(**settings: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("METERING_", "GATEWAY_"))}
    return {**clean, "PYTHONPATH": ROOT, **settings}


async def _holder(url: str, journal: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, url, str(journal), env=_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.decode().strip() == "started"
    return proc


def _serve(url: str, journal: Path) -> subprocess.CompletedProcess[str]:
    """``metering-gateway serve`` on the PostgreSQL ledger, configured by environment."""
    return subprocess.run(
        [sys.executable, "-m", "example_gateway", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(
            METERING_LEDGER_URL=url,
            METERING_JOURNAL_PATH=str(journal),
            METERING_SETTLE_INTERVAL="0",  # not on PostgreSQL yet (docs/postgresql.md)
            METERING_ENFORCE_BALANCE="false",
            GATEWAY_PORT="0",
            GATEWAY_UPSTREAM="http://127.0.0.1:1",
        ),
    )


async def _ledger(pg_cluster: PostgresCluster) -> str:
    url = pg_cluster.url(pg_cluster.new_database())
    async with MeteringRuntime(MeteringConfig(ledger_url=url, enforce_qps=False)):
        pass  # creates the ledger
    return url


async def test_a_second_process_on_a_memory_limiters_postgresql_ledger_is_told_to_use_redis(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    url = await _ledger(pg_cluster)
    holder = await _holder(url, tmp_path / "one.journal")
    try:
        done = await asyncio.to_thread(_serve, url, tmp_path / "two.journal")
        # One line, no traceback, exit 1: the lock's holder, and the fix.
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert re.fullmatch(
            r"metering-gateway: another gateway process \(metering-limiter pid "
            rf"{holder.pid} on \S+\) already limits calls with memory:// on this ledger "
            r"\(postgresql://.*, advisory lock -?\d+\); a second one would double every QPS "
            r"limit: use limiter_url = redis://host:port/db",
            last,
        ), last
        assert pg_cluster.password not in done.stderr
        # Killed, not stopped: the server ends its session, and the lock with it.
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        for _ in range(100):  # the server notices the closed connection at once, or soon
            try:
                async with MeteringRuntime(MeteringConfig(ledger_url=url)):
                    break
            except LimiterLockHeld:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("a killed holder's lock was never freed")
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_the_lock_is_per_ledger_and_freed_by_a_clean_stop(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    url, other = await _ledger(pg_cluster), await _ledger(pg_cluster)
    first = MeteringRuntime(MeteringConfig(ledger_url=url, journal_path=str(tmp_path / "a")))
    async with first:
        second = MeteringRuntime(MeteringConfig(ledger_url=url, journal_path=str(tmp_path / "b")))
        with pytest.raises(LimiterLockHeld, match="use limiter_url = redis://"):
            await second.start()
        assert not second.started
        # Another ledger (another database) has a lock of its own.
        async with MeteringRuntime(MeteringConfig(ledger_url=other)):
            pass
        # Redis shares the limits between processes: no lock taken.
        redis = MeteringConfig(ledger_url=url, limiter_url="redis://127.0.0.1:1/0")
        assert MeteringRuntime(redis)._limiter_lock is None
    async with MeteringRuntime(MeteringConfig(ledger_url=url, journal_path=str(tmp_path / "b"))):
        pass  # the first one stopped: free


async def test_a_holder_whose_connection_is_cut_takes_the_lock_again(
    pg_cluster: PostgresCluster,
) -> None:
    url = await _ledger(pg_cluster)
    lock = PostgresLimiterLock(url, retry_interval=0.05)
    await lock.acquire()
    admin = await asyncpg.connect(url)
    try:
        query = (
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        before = await admin.fetchval(query)
        assert before is not None and lock.held
        await admin.execute("SELECT pg_terminate_backend($1)", before)
        for _ in range(400):
            after = await admin.fetchval(query)
            if after is not None and after != before and lock.held:
                break
            await asyncio.sleep(0.05)
        assert after is not None and after != before, "the lock was not taken again"
        rival = PostgresLimiterLock(url)
        with pytest.raises(LimiterLockHeld):
            await rival.acquire()
        await lock.release()
        await rival.acquire()  # released: another may take it
        await rival.release()
    finally:
        await admin.close()
