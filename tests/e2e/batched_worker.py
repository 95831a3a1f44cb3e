"""A batched-mode example gateway to kill with SIGKILL: ``python batched_worker.py '<json>'``.

The real example gateway (signature checks, middleware, writer, SQLite) under uvicorn. Its
ledger store is the real ``SqliteStore`` with one addition for the test: every commit's
start and end (``time.monotonic()``, one clock for every process on the machine) is
appended to ``commits`` as it happens, so a process killed at any moment leaves the
duration of every commit it made behind (the page cache keeps what ``write`` took).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import uvicorn

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from metering_middleware import MeteringConfig, MeteringRuntime, SystemClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger import CallRecord, ClaimedNonce, OutcomeCount, SqliteStore
from tests.support.catalogs import roomy_catalog


class TimedStore(SqliteStore):
    def __init__(self, path: str, log_path: str) -> None:
        super().__init__(path)
        self._log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def write(
        self,
        records: Sequence[CallRecord],
        counts: Sequence[OutcomeCount],
        nonces: Sequence[ClaimedNonce] = (),
    ) -> None:
        started = time.monotonic()
        await super().write(records, counts, nonces)
        line = f"{started:.6f} {time.monotonic():.6f} {len(records)}\n"
        os.write(self._log_fd, line.encode())


async def _add_key(store: SqliteStore, key: str, secret: str) -> None:
    await store.open()
    try:
        await CredentialManager(store, SecretBox(None), SystemClock()).add(
            "acme", secret, access_key_id=key
        )
    finally:
        await store.close()


def main() -> None:
    cfg: dict[str, Any] = json.loads(sys.argv[1])
    asyncio.run(_add_key(SqliteStore(cfg["ledger"]), cfg["key"], cfg["secret"]))
    config = MeteringConfig(
        ledger_url=cfg["ledger"],
        mode="batched",
        flush_interval=cfg["flush_interval"],
        enforce_qps=False,
    )
    runtime = MeteringRuntime(
        config, catalog=roomy_catalog(), store=TimedStore(cfg["ledger"], cfg["commits"])
    )
    app = create_gateway_app(GatewayConfig(upstream=cfg["upstream"]), runtime)
    uvicorn.run(app, host="127.0.0.1", port=cfg["port"], log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
