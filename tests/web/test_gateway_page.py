"""The example gateway serves the billing page under its admin prefix, unmetered: a
browser-like client signs in and reads an account whose AccessKey was made in the ledger,
and nothing of it reaches the meter or the upstream."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from example_gateway.app import create_gateway_app
from example_gateway.config import AdminConfig, GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import MeteringConfig, MeteringRuntime
from metering_middleware.admin.tokens import AdminTokens
from tests.e2e.conftest import add_account
from tests.support.catalogs import roomy_catalog
from tests.support.servers import run_server
from tests.web.seed import TOKEN

PREFIX = "/ops/admin"


def _metered(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        calls = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        counted = conn.execute("SELECT COALESCE(SUM(count), 0) FROM outcome_counts").fetchone()
        return int(calls), int(counted[0])


async def test_the_gateway_serves_the_page(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    await add_account(url, "acme")
    mock = create_mock_upstream()
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=url, mode="strict", settle_interval=0), catalog=roomy_catalog()
    )
    admin = AdminConfig(AdminTokens([TOKEN]), PREFIX)
    async with run_server(mock) as upstream:
        gateway = GatewayConfig(upstream=upstream, timeout=5.0, admin=admin)
        async with (
            run_server(create_gateway_app(gateway, runtime)) as base,
            httpx.AsyncClient(base_url=base) as client,
        ):
            r = await client.get(f"{PREFIX}/ui/accounts")
            assert r.status_code == 303 and r.headers["location"] == f"{PREFIX}/ui/signin"
            r = await client.post(f"{PREFIX}/ui/signin", data={"token": TOKEN})
            assert r.status_code == 303
            assert f"path={PREFIX}/ui;" in r.headers["set-cookie"].lower() + ";"
            page = await client.get(f"{PREFIX}/ui/accounts")
            assert page.status_code == 200 and 'data-account="acme"' in page.text
            account = await client.get(f"{PREFIX}/ui/account", params={"name": "acme"})
            assert account.status_code == 200 and 'id="balance">0<' in account.text
            assert "default-src 'none'" in account.headers["content-security-policy"]
    assert _metered(db) == (0, 0)  # the page's requests were never metered
    assert mock.stats.requests == 0  # nor forwarded
