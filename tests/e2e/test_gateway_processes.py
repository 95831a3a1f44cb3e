"""Four example-gateway processes behind one Redis, 64 concurrent HTTP clients.

From the limiter's own decision log (Redis time), no one-second window holds more than
N admissions, and every refusal at t had exactly N admissions in (t - 1 s, t].
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from example_gateway.serving import free_port
from tests.limiter.redis_server import RedisServer
from tests.limiter.test_processes import _assert_exact
from tests.support.processes import wait_listening

from .gateway_worker import read_decisions
from .signed import v3_headers

WORKER = str(Path(__file__).with_name("gateway_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])
KEY, SECRET = "LTAIprocesses0000001", "processes-secret-0123456789"


async def test_four_gateway_processes_over_http_stay_exact(
    tmp_path: Path, redis: RedisServer
) -> None:
    # N = 3: even a slow CI machine pushes far above it (the check wants >10 refusals each).
    limit, duration, clients = 3, 3.0, 64
    env = {**os.environ, "PYTHONPATH": ROOT}
    mock_port = free_port()
    mock = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "example_gateway", "mock", "--port", str(mock_port), env=env
    )
    gateways: list[tuple[asyncio.subprocess.Process, str, Path]] = []
    try:
        for i in range(4):
            port = free_port()
            log = tmp_path / f"decisions-{i}.json"
            cfg = {
                "ledger": f"sqlite:///{tmp_path / f'gw{i}.sqlite'}",
                "redis": redis.url,
                "upstream": f"http://127.0.0.1:{mock_port}",
                "port": port,
                "limit": limit,
                "log": str(log),
                "key": KEY,
                "secret": SECRET,
                # A loaded machine: a slow Redis round trip is not a failed one (the
                # closed policy would answer 503; the limit's exactness is under test).
                "socket_timeout": 3.0,
            }
            proc = await asyncio.create_subprocess_exec(
                sys.executable, WORKER, json.dumps(cfg), env=env
            )
            gateways.append((proc, f"http://127.0.0.1:{port}", log))
        for proc, url, _ in gateways:
            await wait_listening(url, proc)

        urls = itertools.cycle([url for _, url, _ in gateways])
        body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
        deadline = time.monotonic() + duration
        statuses: list[int] = []
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:

            async def one_client() -> None:
                while time.monotonic() < deadline:
                    answer = await client.post(
                        next(urls), content=body, headers=v3_headers(KEY, SECRET, body)
                    )
                    statuses.append(answer.status_code)

            await asyncio.gather(*(one_client() for _ in range(clients)))
    finally:
        for proc, _, _ in gateways:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)  # graceful: the lifespan writes the log
        for proc, _, _ in gateways:
            await asyncio.wait_for(proc.wait(), 30)
        mock.kill()
        await mock.wait()
    assert set(statuses) <= {200, 429}
    logs = [[(t, s) for t, s, _ in read_decisions(log)] for _, _, log in gateways]
    # The gateways' answers and their limiter's log tell the same story.
    assert sum(len(log) for log in logs) == len(statuses)
    assert sum(s == "admitted" for log in logs for _, s in log) == statuses.count(200)
    print(f"{len(statuses)} calls, {statuses.count(200)} admitted")  # shown with -s
    _assert_exact(logs, limit, duration)
