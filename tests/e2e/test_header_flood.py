"""Bounded input, bounded memory: huge request heads against a real gateway process.

Heads of 1 MB, 100 MB and four concurrent ones of 10 MB, all signed, reach the
meter through uvicorn (whose httptools parser has no head limit of its own),
are answered 431 ``RequestHeaderFieldsTooLarge``, never reach the upstream, and
the gateway's resident memory comes back down once they are answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx

from example_gateway.mock_upstream import create_mock_upstream
from example_gateway.serving import free_port
from tests.support.processes import wait_listening
from tests.support.servers import run_server

from .conftest import add_account
from .signed import v3_headers

ROOT = str(Path(__file__).resolve().parents[2])
MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def raw_call(port: int, head: bytes) -> tuple[int, dict[str, object]]:
    """One request with ``head`` as its (huge) header block; the status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        status_line = await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1]), json.loads(body)
    finally:
        writer.close()


def big_head(key: str, secret: str, size: int) -> bytes:
    body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
    signed = v3_headers(key, secret, body)
    lines = [f"{k}: {v}" for k, v in signed.items()]
    lines.append(f"content-length: {len(body)}")
    head = "POST / HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\nx-big: "
    return head.encode() + b"a" * size + b"\r\n\r\n" + body


async def test_huge_heads_are_refused_unforwarded_and_memory_returns(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, secret = await add_account(url, "acme")
    port = free_port()
    mock = create_mock_upstream()
    async with run_server(mock) as upstream:
        env = {
            **os.environ,
            "PYTHONPATH": ROOT,
            "GATEWAY_PORT": str(port),
            "GATEWAY_UPSTREAM": upstream,
            "METERING_LEDGER_URL": url,
            "METERING_ENFORCE_QPS": "false",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "example_gateway", "serve", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_listening(base, proc, path="/readyz")
            async with httpx.AsyncClient(timeout=1.0) as client:
                # Warm the path once so the baseline includes what every call loads.
                body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
                ok = await client.post(base, content=body, headers=v3_headers(key, secret, body))
                assert ok.status_code == 200
            served = mock.stats.requests
            before = rss_mb(proc.pid)

            status, answer = await raw_call(port, big_head(key, secret, MB))
            assert (status, answer["Code"]) == (431, "RequestHeaderFieldsTooLarge")
            # One of 100 MB, then four at once (httptools takes ~20 s of CPU to buffer
            # a 100 MB head before the app sees it, so four of those would cost CI minutes).
            for size, n in ((100 * MB, 1), (10 * MB, 4)):
                answers = await asyncio.gather(
                    *(raw_call(port, big_head(key, secret, size)) for _ in range(n))
                )
                assert [(s, a["Code"]) for s, a in answers] == [
                    (431, "RequestHeaderFieldsTooLarge")
                ] * n
            assert mock.stats.requests == served, "an oversized head reached the upstream"
            await asyncio.sleep(0.5)  # let the server drop the finished connections
            after = rss_mb(proc.pid)
            print(f"gateway RSS {before:.0f} MB before, {after:.0f} MB after")  # -s shows it
            assert after - before < 64, f"{after - before:.0f} MB retained after the flood"
        finally:
            proc.kill()
            await proc.wait()
