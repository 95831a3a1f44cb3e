"""Gateway processes for tests that kill them or read their memory."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx

__all__ = ["serve_gateway", "wait_listening"]


async def wait_listening(
    url: str, proc: asyncio.subprocess.Process, *, path: str = "/healthz", tries: int = 300
) -> None:
    """Return once ``url + path`` answers 200; fail if ``proc`` exits or never answers."""
    async with httpx.AsyncClient(timeout=1.0) as client:
        for _ in range(tries):
            if proc.returncode is not None:
                raise AssertionError(f"{url} exited with {proc.returncode}")
            try:
                if (await client.get(url + path)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not start")


ROOT = str(Path(__file__).resolve().parents[2])


async def serve_gateway(
    port: int, upstream: str, ledger_url: str, **settings: str
) -> asyncio.subprocess.Process:
    """``metering-gateway serve`` as its own process, configured by environment, once ready.

    ``settings`` are more variables (``METERING_MODE="strict"``); the caller kills it.
    """
    env = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "GATEWAY_PORT": str(port),
        "GATEWAY_UPSTREAM": upstream,
        "METERING_LEDGER_URL": ledger_url,
        # These processes are about the ledger and the proxy, not money: their accounts
        # have no balance, which the gateway's default (enforce_balance) would refuse.
        "METERING_ENFORCE_BALANCE": "false",
        **settings,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "example_gateway", "serve", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_listening(f"http://127.0.0.1:{port}", proc, path="/readyz")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc
