"""Gateway processes for tests that kill them or read their memory."""

from __future__ import annotations

import asyncio

import httpx

__all__ = ["wait_listening"]


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
