"""One example-gateway process for the multi-process tests: ``python gateway_worker.py '<json>'``.

It serves the real example gateway (signature checks, limiter, ledger) under uvicorn on
the given port, with a Redis limiter wrapped to keep the limiter's own decision log:
one JSON line ``[redis_time_us, status, account]`` per admission decision, appended to
``log`` with one ``write`` as the decision returns (so a ``kill -9`` loses at most the
decisions in flight, never a line already written).

Settings (JSON keys): ``ledger``, ``redis``, ``upstream``, ``port``, ``limit`` (every
category's default QPS), ``log``; the AccessKeys either as ``key``/``secret`` (account
``acme``, added by the worker to its own ledger) or as ``accounts`` (``[[account, key,
secret], ...]``, added by the test beforehand: several workers on one shared ledger);
optional ``mode`` (default batched), ``journal`` (this process's journal file),
``upstream_qps`` (the operator's budget), ``socket_timeout`` (the Redis round trip,
default the library's), ``retention_interval``, ``settle_interval``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import uvicorn

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from metering_middleware import MeteringConfig, MeteringRuntime, SystemClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger.urls import open_store
from metering_middleware.limiter import Decision, Limiter, LimiterSettings, NonceClaim, open_limiter
from metering_middleware.limiter.budget import checked_budgets
from tests.support.catalogs import roomy_catalog


class LoggingLimiter:
    """The real limiter, with every decision written down (test instrumentation only)."""

    def __init__(self, inner: Limiter, log_path: str) -> None:
        self.inner = inner
        self._fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()
        os.close(self._fd)

    async def admit(
        self,
        account: str,
        category: str,
        action: str,
        limit: int,
        *,
        nonce: NonceClaim | None = None,
        now: float | None = None,
    ) -> Decision:
        decision = await self.inner.admit(account, category, action, limit, nonce=nonce, now=now)
        line = [round(decision.at * 1_000_000), decision.status.value, account]
        # A few bytes to the page cache: the test's log, not the library's request path.
        os.write(self._fd, (json.dumps(line) + "\n").encode())
        return decision


def read_decisions(path: str | os.PathLike[str]) -> list[tuple[int, str, str]]:
    """A worker's decision log: (Redis time in µs, status, account), in its order."""
    with open(path, encoding="utf-8") as fh:
        return [(int(t), str(s), str(a)) for t, s, a in map(json.loads, fh)]


async def _add_key(url: str, account: str, key: str, secret: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        manager = CredentialManager(store, SecretBox(None), SystemClock())
        await manager.add(account, secret, access_key_id=key)
    finally:
        await store.close()


def main() -> None:
    cfg: dict[str, Any] = json.loads(sys.argv[1])
    if "key" in cfg:
        asyncio.run(_add_key(cfg["ledger"], "acme", cfg["key"], cfg["secret"]))
    clock = SystemClock()
    catalog = roomy_catalog(cfg["limit"])
    defaults = LimiterSettings()
    settings = LimiterSettings(
        url=cfg["redis"],
        failure_policy="closed",  # type: ignore[arg-type]
        socket_timeout=cfg.get("socket_timeout", defaults.socket_timeout),
        connect_timeout=cfg.get("socket_timeout", defaults.connect_timeout),
        upstream_qps=checked_budgets(cfg.get("upstream_qps", {}), catalog),
    )
    limiter = LoggingLimiter(open_limiter(settings, clock), cfg["log"])
    config = MeteringConfig(
        ledger_url=cfg["ledger"],
        limiter_url=cfg["redis"],
        mode=cfg.get("mode", "batched"),
        journal_path=cfg.get("journal"),
        retention_interval=cfg.get("retention_interval", 0),
        settle_interval=cfg.get("settle_interval", 0),
    )
    runtime = MeteringRuntime(config, clock=clock, catalog=catalog, limiter=limiter)
    app = create_gateway_app(GatewayConfig(upstream=cfg["upstream"]), runtime)
    uvicorn.run(app, host="127.0.0.1", port=cfg["port"], log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
