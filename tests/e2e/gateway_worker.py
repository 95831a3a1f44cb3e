"""One example-gateway process for the multi-process test: ``python gateway_worker.py '<json>'``.

It serves the real example gateway (signature checks, limiter, ledger) under uvicorn on
the given port, with a Redis limiter wrapped to keep the limiter's own decision log
(status and Redis time of every admission decision). On shutdown (SIGTERM) the lifespan
stops the runtime, which closes the limiter, which writes the log as JSON to ``log``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import uvicorn

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from metering_middleware import MeteringConfig, MeteringRuntime, SystemClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger.urls import open_store
from metering_middleware.limiter import Decision, Limiter, LimiterSettings, NonceClaim, open_limiter
from tests.support.catalogs import roomy_catalog


class LoggingLimiter:
    """The real limiter, with every decision written down (test instrumentation only)."""

    def __init__(self, inner: Limiter, log_path: str) -> None:
        self.inner = inner
        self.log_path = log_path
        self.decisions: list[tuple[int, str]] = []

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()
        with open(self.log_path, "w", encoding="utf-8") as fh:
            json.dump(self.decisions, fh)

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
        self.decisions.append((round(decision.at * 1_000_000), decision.status.value))
        return decision


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
    asyncio.run(_add_key(cfg["ledger"], "acme", cfg["key"], cfg["secret"]))
    clock = SystemClock()
    settings = LimiterSettings(url=cfg["redis"], failure_policy="closed")  # type: ignore[arg-type]
    limiter = LoggingLimiter(open_limiter(settings, clock), cfg["log"])
    config = MeteringConfig(ledger_url=cfg["ledger"], limiter_url=cfg["redis"], mode="batched")
    runtime = MeteringRuntime(
        config, clock=clock, catalog=roomy_catalog(cfg["limit"]), limiter=limiter
    )
    app = create_gateway_app(GatewayConfig(upstream=cfg["upstream"]), runtime)
    uvicorn.run(app, host="127.0.0.1", port=cfg["port"], log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
