"""Settlement inside the gateway: passes on a timer, off the event loop, one settler at a time."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from example_gateway.config import load_config
from metering_middleware import ConfigError, ManualClock, MeteringConfig, MeteringRuntime
from metering_middleware.catalog import default_catalog
from metering_middleware.rating import Month
from metering_middleware.settler import BackgroundSettler
from tests.rating.helpers import calls_between, utc
from tests.rating.settle_support import Harness

CATALOG = default_catalog()
START = utc(2026, 3, 2, 6)


async def _ledger_with_calls(path: Path, n: int) -> Harness:
    h = Harness(path, CATALOG, START)
    async with h:
        await h.arrive(calls_between(CATALOG, n, START, timedelta(seconds=1)))
    h.clock.advance(3600)  # well past the settlement lag
    return h


async def test_a_pass_settles_what_is_new_and_then_nothing(tmp_path: Path) -> None:
    h = await _ledger_with_calls(tmp_path / "l.db", 15)
    settler = BackgroundSettler(str(h.path), CATALOG, h.clock, interval=3600)
    first = await settler.settle_now()
    assert first is not None and first.records == 15
    again = await settler.settle_now()
    assert again is not None and again.records == 0
    assert (settler.stats.passes, settler.stats.busy, settler.stats.failures) == (2, 0, 0)
    async with h:
        bill = await h.bill("acct", Month(2026, 3))
    assert sum(line.calls for line in bill.lines) == 15  # the CLI's bill sees the pass


class ThreadClock(ManualClock):
    """Remembers which threads read it: the settlement pass reads ``now()``."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.readers: set[int] = set()

    def now(self) -> datetime:
        self.readers.add(threading.get_ident())
        return super().now()


async def test_the_pass_runs_off_the_event_loop(tmp_path: Path) -> None:
    h = await _ledger_with_calls(tmp_path / "l.db", 3)
    clock = ThreadClock(h.clock.now())
    settler = BackgroundSettler(str(h.path), CATALOG, clock, interval=3600)
    report = await settler.settle_now()
    assert report is not None and report.records == 3
    assert clock.readers and threading.get_ident() not in clock.readers


async def test_a_settler_skips_its_turn_while_another_holds_the_lock(tmp_path: Path) -> None:
    h = await _ledger_with_calls(tmp_path / "l.db", 4)
    settler = BackgroundSettler(str(h.path), CATALOG, h.clock, interval=3600)
    async with h:
        assert await h.rating.acquire_lock("another-gateway", h.clock.now(), timedelta(minutes=5))
        assert await settler.settle_now() is None
        assert settler.stats.busy == 1 and settler.stats.passes == 0
        await h.rating.release_lock("another-gateway")
    report = await settler.settle_now()
    assert report is not None and report.records == 4


async def test_the_runtime_settles_every_interval_and_stops_cleanly(tmp_path: Path) -> None:
    h = await _ledger_with_calls(tmp_path / "l.db", 5)
    config = MeteringConfig(ledger_url=f"sqlite:///{h.path}", settle_interval=0.01)
    runtime = MeteringRuntime(config, clock=h.clock, catalog=CATALOG)
    async with runtime:
        assert runtime.settler is not None
        for _ in range(2000):  # a hang detector, not a speed check
            if runtime.settler.stats.passes >= 2:
                break
            await asyncio.sleep(0.01)
        stats = runtime.settler.stats
        assert stats.passes >= 2 and stats.failures == 0
    async with h:
        bill = await h.bill("acct", Month(2026, 3))
    assert sum(line.calls for line in bill.lines) == 5


def test_settle_interval_is_validated_and_needs_an_sqlite_ledger() -> None:
    with pytest.raises(ConfigError, match="settle_interval"):
        MeteringConfig(settle_interval=-1)
    with pytest.raises(ConfigError, match="settle_interval"):
        MeteringRuntime(MeteringConfig(ledger_url="memory://", settle_interval=60))
    assert MeteringRuntime(MeteringConfig(ledger_url="memory://")).settler is None


def test_the_example_gateway_settles_every_minute_unless_told_otherwise(tmp_path: Path) -> None:
    _, metering = load_config(None, environ={})
    assert metering.settle_interval == 60.0
    config = tmp_path / "gateway.toml"
    config.write_text("[metering]\nsettle_interval = 0\n")
    assert load_config(config, environ={})[1].settle_interval == 0
    assert load_config(None, environ={"METERING_SETTLE_INTERVAL": "5"})[1].settle_interval == 5
