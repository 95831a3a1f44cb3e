"""Several real gateway processes on one Redis: exactness, clock offsets, nonce replays,
and the memory backend's one-process lock."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from bisect import bisect_right
from pathlib import Path
from typing import Any

import pytest

from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.clock import ManualClock, SystemClock
from metering_middleware.limiter import LimiterError, MemoryLimiter, NonceClaim
from metering_middleware.limiter.redis import RedisLimiter

from .redis_server import RedisServer

WORKER = str(Path(__file__).with_name("worker.py"))
_US = 1_000_000


async def _spawn(cfg: dict[str, Any]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        WORKER,
        json.dumps(cfg),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 26,  # a decision log is one long JSON line
    )


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line:
        raise AssertionError(f"worker exited early with status {await proc.wait()}")
    return line.decode().strip()


async def _run_gateways(
    url: str, *, offsets: list[float], limit: int, clients: int, duration: float
) -> list[list[tuple[int, str]]]:
    """Start one worker per offset, release them together, return their decision logs."""
    prefix = f"p{uuid.uuid4().hex[:10]}:"
    procs = [
        await _spawn(
            {
                "mode": "loop",
                "url": url,
                "prefix": prefix,
                "offset": offset,
                "limit": limit,
                "clients": clients,
                "duration": duration,
            }
        )
        for offset in offsets
    ]
    try:
        for p in procs:
            assert await _line(p) == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        logs = [[(int(t), str(s)) for t, s in json.loads(await _line(p))] for p in procs]
        for p in procs:
            assert await p.wait() == 0
        return logs
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


def _assert_exact(logs: list[list[tuple[int, str]]], limit: int, duration: float) -> None:
    decisions = sorted(d for log in logs for d in log)
    statuses = {s for _, s in decisions}
    assert statuses <= {"admitted", "throttled"}, statuses  # no fallback decision
    admitted = [t for t, s in decisions if s == "admitted"]
    refused = [t for t, s in decisions if s == "throttled"]
    assert all(log for log in logs), "every gateway process decided something"
    assert len(refused) > 10 * len(admitted), "the clients pushed well above the limit"

    def inside(t: int) -> int:  # admissions in (t - 1 s, t]
        return bisect_right(admitted, t) - bisect_right(admitted, t - _US)

    # No one-second window holds more than N admissions (the window ending at each one
    # is enough: a window's count only rises at an admission)...
    assert max(inside(t) for t in admitted) <= limit
    # ...and nothing was refused while capacity was free.
    assert all(inside(t) == limit for t in refused)
    # The limit was used, not just respected: about N a second throughout.
    assert len(admitted) >= limit * (duration - 1)


async def test_four_gateway_processes_64_clients_stay_exact(redis_server: RedisServer) -> None:
    limit, duration = 10, 3.0
    logs = await _run_gateways(
        redis_server.url, offsets=[0.0] * 4, limit=limit, clients=16, duration=duration
    )
    _assert_exact(logs, limit, duration)


async def test_gateway_clocks_offset_by_seconds_stay_exact(redis_server: RedisServer) -> None:
    # Redis's TIME decides, so gateways 7 s slow or 3 s fast change nothing.
    limit, duration = 5, 2.0
    logs = await _run_gateways(
        redis_server.url, offsets=[-7.0, -2.5, 0.0, 3.0], limit=limit, clients=8, duration=duration
    )
    _assert_exact(logs, limit, duration)


async def test_a_nonce_replayed_to_a_second_process_is_refused(redis_server: RedisServer) -> None:
    cfg = {
        "mode": "nonce",
        "url": redis_server.url,
        "prefix": f"n{uuid.uuid4().hex[:10]}:",
        "access_key_id": "LTAIreplay",
        "nonce": uuid.uuid4().hex,
        "expires_at": time.time() + 900,
    }
    first = await _spawn(cfg)
    assert await _line(first) == "admitted"
    assert await first.wait() == 0
    second = await _spawn(cfg)
    assert await _line(second) == "nonce_reused"
    assert await second.wait() == 0
    # And this (third) process sees it too.
    limiter = RedisLimiter(redis_server.url, SystemClock(), key_prefix=str(cfg["prefix"]))
    try:
        claim = NonceClaim("LTAIreplay", str(cfg["nonce"]), time.time() + 900)
        d = await limiter.admit("acct", "facebody", "DetectFace", 5, nonce=claim)
        assert d.status.value == "nonce_reused"
    finally:
        await limiter.close()


async def test_memory_limiter_refuses_a_second_process_on_the_same_ledger(tmp_path: Path) -> None:
    lock = str(tmp_path / "ledger.sqlite.limiter.lock")
    holder = await _spawn({"mode": "hold-lock", "lock_path": lock})
    try:
        assert await _line(holder) == "locked"
        second = MemoryLimiter(ManualClock(), lock_path=lock)
        with pytest.raises(LimiterError, match=r"another gateway process \(pid \d+\).*redis://"):
            await second.start()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert await holder.wait() == 0
    # The first process is gone: its lock went with it.
    third = MemoryLimiter(ManualClock(), lock_path=lock)
    await third.start()
    await third.close()


async def test_the_upstream_budget_holds_across_four_processes(redis_server: RedisServer) -> None:
    # Five accounts entitled to 4 QPS each and one to 2 (22 sold), 10 QPS at Alibaba;
    # four processes, each with clients of every account.
    budget, duration = 10, 3.0
    accounts = [f"tenant-{i}" for i in range(6)]
    limits = {a: 2 if a == "tenant-0" else 4 for a in accounts}
    prefix = f"b{uuid.uuid4().hex[:10]}:"
    cfg = {
        "mode": "budget",
        "url": redis_server.url,
        "prefix": prefix,
        "limits": limits,
        "budget": budget,
        "accounts": accounts,
        "clients": 18,  # three of each account a process: tenant-0 meets its own limit
        "duration": duration,
    }
    procs = [await _spawn(cfg) for _ in range(4)]
    try:
        for p in procs:
            assert await _line(p) == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        logs = [json.loads(await _line(p)) for p in procs]
        for p in procs:
            assert await p.wait() == 0
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    assert all(logs), "every process decided something"
    decisions = sorted((int(t), str(s), str(a)) for log in logs for t, s, a in log)
    assert {s for _, s, _ in decisions} == {"admitted", "throttled", "upstream_budget"}
    admitted = [t for t, s, _ in decisions if s == "admitted"]
    mine = {a: [t for t, s, b in decisions if s == "admitted" and b == a] for a in accounts}

    def inside(times: list[int], t: int) -> int:  # admissions in (t - 1 s, t]
        return bisect_right(times, t) - bisect_right(times, t - _US)

    # The budget: no one-second window holds more than B admissions of all accounts...
    assert max(inside(admitted, t) for t in admitted) <= budget
    # ...a budget refusal only ever came with the budget full...
    assert all(inside(admitted, t) == budget for t, s, _ in decisions if s == "upstream_budget")
    # ...and each account stayed within its own limit, refused by it only when full.
    for account, times in mine.items():
        assert times and max(inside(times, t) for t in times) <= limits[account], account
    for t, s, account in decisions:
        if s == "throttled":
            assert inside(mine[account], t) == limits[account]
    # The budget was used, not just respected.
    assert len(admitted) >= budget * (duration - 1)


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "example_gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        # The file alone configures it: no METERING_/GATEWAY_ variable of the test run.
        env={k: v for k, v in os.environ.items() if not k.startswith(("METERING_", "GATEWAY_"))},
    )


async def test_a_second_gateway_on_a_memory_limiters_ledger_is_told_to_use_redis(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nport = 0\n[metering]\nledger_url = "sqlite:///{ledger}"\n')
    holder = await _spawn({"mode": "hold-lock", "lock_path": f"{ledger}.limiter.lock"})
    try:
        assert await _line(holder) == "locked"
        done = await asyncio.to_thread(_serve, config)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert await holder.wait() == 0
    # One line, no traceback, exit 1: the lock's holder, and the fix.
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"metering-gateway: another gateway process \(pid \d+\) already limits calls with "
        r"memory:// on this ledger .*: use limiter_url = redis://host:port/db",
        last,
    ), last


@pytest.mark.parametrize("setting", ["gateway_processes", "limiter_processes"])
def test_several_processes_configured_on_a_memory_limiter_are_refused(
    tmp_path: Path, setting: str
) -> None:
    # A ledger without a lock file (a database server's) is caught by the setting.
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[metering]\nledger_url = "sqlite:///{tmp_path / "l.sqlite"}"\n{setting} = 3\n'
    )
    done = _serve(config)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"metering-gateway: {setting} = 3, but a memory:// limiter counts calls in one "
        "process only: each would admit every account's full QPS; use limiter_url = "
        "redis://host:port/db to share the limits between processes"
    )
    # Redis shares them: accepted (a Redis that is down at start is not fatal).
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url="memory://", limiter_url="redis://127.0.0.1:1/0", **{setting: 3})
    )
    assert runtime.limiter is not None
