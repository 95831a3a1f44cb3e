"""The example gateway on a PostgreSQL ledger, over real HTTP: a call is charged once,
and a captured signed request replayed after a restart is refused (the nonce came back
from PostgreSQL), never charged again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from metering_middleware import MeteringConfig
from tests.e2e.conftest import add_account
from tests.e2e.signed import v3_headers
from tests.e2e.test_replay_restart import BODY, call_through


async def _charged(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT request_id FROM calls")]
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"mode": "strict"}, id="strict"),
        pytest.param({"mode": "batched", "flush_interval": 0.5}, id="batched"),
        pytest.param({"mode": "strict", "enforce_qps": False}, id="no-limiter"),
    ],
)
async def test_a_replay_after_a_restart_on_postgresql_is_refused_and_charged_once(
    pg_url: str, tmp_path: Path, settings: dict[str, Any]
) -> None:
    key, secret = await add_account(pg_url, "acme")
    config = MeteringConfig(ledger_url=pg_url, journal_path=str(tmp_path / "j"), **settings)
    captured = v3_headers(key, secret, BODY)

    first = await call_through(config, captured)
    assert first.status_code == 200
    for _ in range(2):
        replay = await call_through(config, captured)
        assert replay.status_code == 400, replay.text
        assert replay.json()["Code"] == "SignatureNonceUsed"
    charged = await _charged(pg_url)
    assert charged == [first.json()["RequestId"]]
    assert (await call_through(config, v3_headers(key, secret, BODY))).status_code == 200
    assert len(await _charged(pg_url)) == 2
