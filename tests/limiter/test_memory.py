"""What only the memory backend does: its lock file, and forgetting idle logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from metering_middleware.clock import ManualClock
from metering_middleware.limiter import LimiterError, MemoryLimiter
from metering_middleware.limiter.memory import SlidingLogs


async def test_second_limiter_on_one_lock_file_is_refused(tmp_path: Path) -> None:
    lock = str(tmp_path / "ledger.sqlite.limiter.lock")
    first = MemoryLimiter(ManualClock(), lock_path=lock)
    await first.start()
    await first.start()  # idempotent
    second = MemoryLimiter(ManualClock(), lock_path=lock)
    with pytest.raises(LimiterError, match="memory://"):
        await second.start()
    await first.close()
    await first.close()
    await second.start()  # released on close
    await second.close()


async def test_no_lock_path_no_lock() -> None:
    a, b = MemoryLimiter(ManualClock()), MemoryLimiter(ManualClock())
    await a.start()
    await b.start()
    await a.close()
    await b.close()


def test_idle_logs_are_swept() -> None:
    logs = SlidingLogs()
    t = 1_767_225_600_000_000
    for i in range(100):
        logs.admit(("acct", str(i)), 2, 1_000_000, t)
    assert len(logs) == 100
    logs.admit(("acct", "0"), 2, 1_000_000, t + 10_000_000)  # ten seconds on: a sweep
    assert len(logs) == 1


def test_a_clock_stepping_back_keeps_the_log_ordered() -> None:
    logs = SlidingLogs()
    assert logs.admit("k", 2, 1_000_000, 5_000_000)[0]
    # The clock jumped back 0.5 s: decided as of the newest admission, never earlier.
    admitted, count, _, _, now = logs.admit("k", 2, 1_000_000, 4_500_000)
    assert admitted and count == 2 and now == 5_000_000
    assert not logs.admit("k", 2, 1_000_000, 5_999_999)[0]
    assert logs.admit("k", 2, 1_000_000, 6_000_000)[0]
