"""Batched mode under ``kill -9``: what is lost, measured against the stated bound.

A batched gateway answers 200 before the record is committed. Killed, it loses the
records not yet committed: those submitted since the last commit that finished began,
i.e. the open batch (at most ``flush_interval`` old) plus a commit in flight (its own
duration, and its batch's ``flush_interval`` before that). So every lost call arrived
within ``flush_interval + one commit's duration`` (+ the writer's wake-up) before the
kill. The test kills a real gateway process under steady load and checks exactly that,
with the commit durations the gateway itself measured. A call's record is submitted as
its answer ends, so the client's receipt of the 200 stands for the submission (the
margin covers the last bytes' trip and a busy event loop's late timer).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import httpx
import pytest

from example_gateway.serving import free_port
from tests.support.processes import wait_listening

from .signed import v3_headers

WORKER = str(Path(__file__).with_name("batched_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])
KEY, SECRET = "LTAIbatchedkill00001", "batched-kill-secret-0123456789"
MARGIN = 0.05  # seconds: submission -> the client's receipt, and a busy loop's late timer



def _committed(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:  # reads the WAL the killed process left
        return {r[0] for r in conn.execute("SELECT request_id FROM calls")}


@pytest.mark.parametrize("flush_interval", [0.05, 0.5])
async def test_kill_9_in_batched_mode_loses_only_what_the_bound_says(
    tmp_path: Path, flush_interval: float
) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    mock_port, port = free_port(), free_port()
    db, commits = tmp_path / "ledger.sqlite", tmp_path / "commits.log"
    mock = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "example_gateway", "mock", "--port", str(mock_port), env=env
    )
    cfg = {
        "ledger": str(db),
        "commits": str(commits),
        "upstream": f"http://127.0.0.1:{mock_port}",
        "port": port,
        "flush_interval": flush_interval,
        "key": KEY,
        "secret": SECRET,
    }
    gateway = await asyncio.create_subprocess_exec(sys.executable, WORKER, json.dumps(cfg), env=env)
    url = f"http://127.0.0.1:{port}"
    answered: list[tuple[float, float, str]] = []  # (sent, received, RequestId) of each 200
    killed_at = 0.0
    try:
        await wait_listening(url, gateway)
        await wait_listening(f"http://127.0.0.1:{mock_port}", mock)
        body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=5.0) as client:

            async def one_client() -> None:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        answer = await client.post(
                            url, content=body, headers=v3_headers(KEY, SECRET, body)
                        )
                    except httpx.TransportError:
                        return  # the gateway is gone
                    if answer.status_code == 200:
                        answered.append((sent, time.monotonic(), answer.json()["RequestId"]))

            clients = [asyncio.ensure_future(one_client()) for _ in range(8)]
            await asyncio.sleep(1.0 + 2 * flush_interval)  # steady load, several commits
            killed_at = time.monotonic()
            gateway.send_signal(signal.SIGKILL)
            await gateway.wait()
            stop.set()
            await asyncio.gather(*clients)
    finally:
        if gateway.returncode is None:
            gateway.kill()
            await gateway.wait()
        mock.kill()
        await mock.wait()

    durations = [
        float(end) - float(start)
        for start, end, _ in (line.split() for line in commits.read_text().splitlines())
    ]
    assert len(durations) >= 3
    committed = _committed(db)
    lost = [(sent, got) for sent, got, rid in answered if rid not in committed]
    bound = flush_interval + max(durations) + MARGIN
    ages = sorted(killed_at - got for _, got in lost)
    sent_ages = sorted(killed_at - sent for sent, _ in lost)
    print(  # shown with -s: the measured numbers
        f"flush_interval={flush_interval}s: {len(answered)} answered, {len(lost)} lost; "
        f"oldest lost answered {max(ages, default=0) * 1000:.0f} ms (sent "
        f"{max(sent_ages, default=0) * 1000:.0f} ms) before the kill; {len(durations)} "
        f"commits, longest {max(durations) * 1000:.1f} ms; bound {bound * 1000:.0f} ms"
    )
    assert all(age <= bound for age in ages), (ages, bound)
