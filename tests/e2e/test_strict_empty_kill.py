"""Strict mode under ``kill -9``: an answer with no body is complete at its head.

A real gateway process (``metering-gateway serve``, strict) in front of an
upstream answering ``200`` with ``Content-Length: 0``. While another process
holds the ledger's write lock, the commit cannot finish; the gateway is killed
with SIGKILL. Every head a client received must belong to a record that is in
the ledger (or its journal, replayed at the next start): on the code before the
fix the head went out before the commit, and the call was lost.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
from pathlib import Path

import httpx
from starlette.types import Receive, Scope, Send

from example_gateway.serving import free_port
from metering_middleware import MeteringConfig, MeteringRuntime
from tests.support.processes import serve_gateway
from tests.support.servers import run_server

from .conftest import add_account
from .signed import v3_headers

BODY = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
_ids = itertools.count(1)


async def empty_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """VIAPI-like, except that its 200 carries no body (the id is in a header)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-length", b"0"), (b"x-acs-request-id", f"empty-{next(_ids)}".encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _call(client: httpx.AsyncClient, url: str, key: str, secret: str) -> str | None:
    """The RequestId of a received 200 head, or None if no head arrived."""
    try:
        response = await client.post(url, content=BODY, headers=v3_headers(key, secret, BODY))
    except httpx.TransportError:
        return None
    assert response.status_code == 200, response.text
    return response.headers["x-acs-request-id"]


def _ledger_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT request_id FROM calls")}


async def test_no_empty_answer_reaches_a_client_before_its_commit_under_kill_9(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}?busy_timeout_ms=3000"
    key, secret = await add_account(url, "acme")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with run_server(empty_upstream) as upstream:
        proc = await serve_gateway(
            port, upstream, url, METERING_MODE="strict", METERING_ENFORCE_QPS="false"
        )
        try:
            async with httpx.AsyncClient(timeout=1.5) as client:
                # Unlocked: the head arrives, after its commit.
                first = await _call(client, base, key, secret)
                assert first is not None and first in _ledger_ids(db)
                # Locked: the commit waits for the lock, and so must the head.
                locker = sqlite3.connect(db, isolation_level=None)
                locker.execute("BEGIN EXCLUSIVE")
                during = await asyncio.gather(*(_call(client, base, key, secret) for _ in range(3)))
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                locker.execute("ROLLBACK")
                locker.close()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    # The next start replays whatever the killed process journaled.
    async with MeteringRuntime(MeteringConfig(ledger_url=url)):
        pass
    seen = {request_id for request_id in during if request_id is not None}
    assert seen <= _ledger_ids(db), "a client holds a complete answer the ledger lost"
    assert seen == set(), "the heads must wait for the commit the lock blocks"
