"""A gateway process stand-in for the multi-process tests: ``python worker.py '<json>'``.

Modes:

- ``loop``: build a RedisLimiter whose process clock is offset by ``offset`` seconds,
  print ``ready``, wait for a line on stdin, then run ``clients`` concurrent admission
  loops on one (account, API) for ``duration`` seconds; print the decision log as JSON
  (``[[at_us, status], ...]``, ``at`` being Redis's time).
- ``budget``: like ``loop``, but each client is one of ``accounts`` (cycled), each
  account has its own limit (``limits``), the API has the upstream budget ``budget``,
  and the log is ``[[at_us, status, account], ...]``.
- ``nonce``: admit once with the given nonce; print the status.
- ``hold-lock``: start a MemoryLimiter on ``lock_path``, print ``locked``, and hold the
  lock until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from metering_middleware.clock import SystemClock
from metering_middleware.limiter import MemoryLimiter, NonceClaim
from metering_middleware.limiter.redis import RedisLimiter


class OffsetClock(SystemClock):
    """A gateway whose wall clock is ``offset`` seconds off."""

    __slots__ = ("offset",)

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


async def _stdin_line() -> str:
    return await asyncio.to_thread(sys.stdin.readline)


async def loop(cfg: dict[str, Any]) -> None:
    limiter = RedisLimiter(
        cfg["url"],
        OffsetClock(cfg["offset"]),
        key_prefix=cfg["prefix"],
        failure_policy="closed",  # a fallback decision would show up as "unavailable"
        socket_timeout=5.0,
        connect_timeout=5.0,
    )
    await limiter.start()
    # Open the connections before the start line, so no client waits on a handshake.
    await asyncio.gather(*(limiter.client.ping() for _ in range(cfg["clients"])))
    print("ready", flush=True)
    await _stdin_line()
    log: list[tuple[int, str]] = []
    deadline = time.monotonic() + cfg["duration"]

    async def client() -> None:
        while time.monotonic() < deadline:
            d = await limiter.admit("acct", "facebody", "DetectFace", cfg["limit"])
            log.append((round(d.at * 1_000_000), d.status.value))

    await asyncio.gather(*(client() for _ in range(cfg["clients"])))
    await limiter.close()
    print(json.dumps(log), flush=True)


async def budget(cfg: dict[str, Any]) -> None:
    limiter = RedisLimiter(
        cfg["url"],
        SystemClock(),
        key_prefix=cfg["prefix"],
        failure_policy="closed",
        socket_timeout=5.0,
        connect_timeout=5.0,
        budgets={"facebody.DetectFace": cfg["budget"]},
    )
    await limiter.start()
    await asyncio.gather(*(limiter.client.ping() for _ in range(cfg["clients"])))
    print("ready", flush=True)
    await _stdin_line()
    log: list[tuple[int, str, str]] = []
    deadline = time.monotonic() + cfg["duration"]
    accounts: list[str] = cfg["accounts"]

    async def client(account: str) -> None:
        while time.monotonic() < deadline:
            d = await limiter.admit(account, "facebody", "DetectFace", cfg["limits"][account])
            log.append((round(d.at * 1_000_000), d.status.value, account))

    await asyncio.gather(*(client(accounts[i % len(accounts)]) for i in range(cfg["clients"])))
    await limiter.close()
    print(json.dumps(log), flush=True)


async def nonce(cfg: dict[str, Any]) -> None:
    limiter = RedisLimiter(cfg["url"], SystemClock(), key_prefix=cfg["prefix"])
    await limiter.start()
    claim = NonceClaim(cfg["access_key_id"], cfg["nonce"], cfg["expires_at"])
    d = await limiter.admit("acct", "facebody", "DetectFace", 5, nonce=claim)
    await limiter.close()
    print(d.status.value, flush=True)


async def hold_lock(cfg: dict[str, Any]) -> None:
    limiter = MemoryLimiter(SystemClock(), lock_path=cfg["lock_path"])
    await limiter.start()
    print("locked", flush=True)
    await _stdin_line()
    await limiter.close()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    mode = {"loop": loop, "budget": budget, "nonce": nonce, "hold-lock": hold_lock}[cfg["mode"]]
    asyncio.run(mode(cfg))


if __name__ == "__main__":
    main()
