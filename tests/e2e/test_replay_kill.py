"""A captured signed request replayed after ``kill -9`` of the gateway process.

Real gateway processes (``replay_worker.py``: uvicorn, the example app, a real SQLite
ledger), killed with SIGKILL after the client got its answer and started again on the
same ledger. The replay is refused ``SignatureNonceUsed`` and the ledger holds one charge.
With Redis as the limiter, Redis is also killed and started again empty (no
persistence), so only the ledger remembers the nonce.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from example_gateway.mock_upstream import create_mock_upstream
from example_gateway.serving import free_port
from tests.limiter.redis_server import RedisServer
from tests.support.processes import wait_listening
from tests.support.servers import run_server

from .conftest import add_account
from .signed import v3_headers

WORKER = str(Path(__file__).with_name("replay_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])
BODY = b"ImageURL=https%3A%2F%2Fx%2Fpeople.jpg"



@asynccontextmanager
async def gateway_process(cfg: dict[str, Any]) -> AsyncIterator[str]:
    """A gateway process for the life of the block, then ``kill -9``: no clean exit."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, WORKER, json.dumps({**cfg, "port": port}), env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_listening(url, proc)
        yield url
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def charged(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])


async def until_charged(db: Path, n: int) -> None:
    """Batched mode: wait for the writer's commit (the ledger read, no fixed sleep)."""
    for _ in range(500):
        if charged(db) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{n} records never committed")


async def replay_after_kill(
    tmp_path: Path, settings: dict[str, Any], redis: RedisServer | None
) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    captured = v3_headers(key, secret, BODY)
    async with run_server(create_mock_upstream()) as upstream:
        cfg = {"ledger": url, "upstream": upstream, "settings": settings}
        async with httpx.AsyncClient(timeout=10.0) as client:
            async with gateway_process(cfg) as gateway:
                first = await client.post(gateway, content=BODY, headers=captured)
                assert first.status_code == 200
                if settings["mode"] == "batched":
                    await until_charged(db, 1)
            # kill -9 above; and a cache-only Redis that crashes comes back empty.
            if redis is not None:
                redis.kill()
                redis.start()
            async with gateway_process(cfg) as gateway:
                replay = await client.post(gateway, content=BODY, headers=captured)
                fresh = await client.post(
                    gateway, content=BODY, headers=v3_headers(key, secret, BODY)
                )
                if settings["mode"] == "batched":
                    await until_charged(db, 2)
    assert replay.status_code == 400, replay.text
    assert replay.json()["Code"] == "SignatureNonceUsed"
    assert fresh.status_code == 200  # the key itself still works
    assert charged(db) == 2  # the first call and the fresh one: the replay never


async def test_replay_after_kill_9_in_strict_mode_is_refused_and_charged_once(
    tmp_path: Path,
) -> None:
    # Strict: the client's last byte waited for the commit of the record, and the
    # record's transaction holds its nonce. No waiting before the kill.
    await replay_after_kill(tmp_path, {"mode": "strict"}, None)


async def test_replay_after_kill_9_in_batched_mode_once_the_record_committed(
    tmp_path: Path,
) -> None:
    # Batched: the answer leaves before the commit; once the record is committed (at
    # most a flush interval later), its nonce is too.
    await replay_after_kill(tmp_path, {"mode": "batched", "flush_interval": 0.2}, None)


async def test_replay_after_kill_9_of_gateway_and_redis_is_refused(
    tmp_path: Path, redis: RedisServer
) -> None:
    settings = {"mode": "strict", "limiter_url": redis.url}
    await replay_after_kill(tmp_path, settings, redis)


async def test_batched_kill_before_the_flush_loses_call_and_nonce_together(
    tmp_path: Path,
) -> None:
    """What batched mode can lose, exactly: a call answered in the last flush interval
    loses its record and its nonce together, so its replay is accepted, and the ledger
    still holds one charge for that signature (the replay's)."""
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    captured = v3_headers(key, secret, BODY)
    # A long interval: the kill (milliseconds after the answer) comes before any flush;
    # counters would take the batch along after count_interval (1 s) at the latest.
    cfg_settings = {"mode": "batched", "flush_interval": 30.0}
    async with run_server(create_mock_upstream()) as upstream:
        cfg = {"ledger": url, "upstream": upstream, "settings": cfg_settings}
        async with httpx.AsyncClient(timeout=10.0) as client:
            async with gateway_process(cfg) as gateway:
                first = await client.post(gateway, content=BODY, headers=captured)
            assert first.status_code == 200
            assert charged(db) == 0  # killed before its batch: record and nonce lost
            settings = {**cfg_settings, "flush_interval": 0.05}
            async with gateway_process({**cfg, "settings": settings}) as gateway:
                replay = await client.post(gateway, content=BODY, headers=captured)
                await until_charged(db, 1)
    assert replay.status_code == 200
    assert charged(db) == 1
