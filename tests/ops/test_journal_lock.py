"""One writer per journal: a second gateway process on the same journal file is refused
at start (it would lose batches), and gets in once the first has stopped."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.ops.journal_lock import JournalInUse


def _runtime(db: Path, journal: Path | None = None) -> MeteringRuntime:
    return MeteringRuntime(
        MeteringConfig(
            ledger_url=f"sqlite:///{db}",
            enforce_qps=False,
            journal_path=None if journal is None else str(journal),
        )
    )


async def test_a_second_runtime_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    first = _runtime(db)
    await first.start()
    try:
        second = _runtime(db)  # same ledger, same default journal (<ledger>.journal)
        with pytest.raises(JournalInUse, match="own journal_path") as refused:
            await second.start()
        assert "ledger.db.journal" in str(refused.value)
        assert not second.started

        own = _runtime(db, tmp_path / "worker-2.journal")  # its own journal: fine
        await own.start()
        await own.stop()
    finally:
        await first.stop()
    again = _runtime(db)  # the first stopped: its journal is free
    await again.start()
    await again.stop()


HOLDER = """
import asyncio, sys
from metering_middleware import MeteringConfig, MeteringRuntime

async def main() -> None:
    runtime = MeteringRuntime(MeteringConfig(ledger_url=sys.argv[1], enforce_qps=False))
    await runtime.start()
    print("started", flush=True)
    sys.stdin.readline()
    await runtime.stop()

asyncio.run(main())
"""


def test_another_process_on_the_journal_is_named_by_pid(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "started"
        with pytest.raises(JournalInUse, match=f"pid {holder.pid}"):
            asyncio.run(_runtime(tmp_path / "ledger.db").start())
    finally:
        holder.communicate("stop\n", timeout=30)
    assert holder.returncode == 0
    asyncio.run(_start_and_stop(_runtime(tmp_path / "ledger.db")))


async def _start_and_stop(runtime: MeteringRuntime) -> None:
    await runtime.start()
    await runtime.stop()
