"""The example gateway mounts the admin API under its prefix, before the meter: requests
under it reach neither the meter nor the upstream; a metered call elsewhere still is."""

from __future__ import annotations

from pathlib import Path

import httpx

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import MeteringConfig, MeteringRuntime
from tests.e2e.signed import v3_headers
from tests.support.servers import run_server

from .conftest import PREFIX, Served, auth


async def test_admin_calls_are_neither_metered_nor_forwarded(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10.0) as client:
        assert (await client.get(f"{PREFIX}/accounts")).status_code == 401
        listed = await client.get(f"{PREFIX}/accounts", headers=auth())
        assert listed.status_code == 200
        assert [a["account"] for a in listed.json()["items"]] == ["acme"]
        made = await client.post(f"{PREFIX}/accounts/newco/keys", headers=auth())
        assert made.status_code == 201
        top = await client.post(
            f"{PREFIX}/accounts/newco/topups",
            json={"amount": "9.90", "idempotency_key": "k"},
            headers=auth(),
        )
        assert top.json()["balance"]["balance"] == "9.90"
        # The prefix itself, unknown paths under it, and a signed VIAPI call sent there:
        # all the admin app's (its own 401/404), none the meter's.
        body = b"ImageURL=https%3A%2F%2Fx%2Fface.jpg"
        signed = v3_headers(served.key, served.secret, body)
        for path, headers in (
            (PREFIX, {}),
            (f"{PREFIX}/", auth()),
            (f"{PREFIX}/nothing", auth()),
            (f"{PREFIX}/accounts", signed),
        ):
            r = await client.post(path, content=body, headers=headers)
            assert r.json()["HostId"] == "metering-admin", (path, r.text)
            assert r.status_code in (401, 404, 405), path
        assert (await client.get(f"{PREFIX}/openapi.json", headers=auth())).status_code == 200
    assert served.mock.stats.requests == 0
    assert served.metered() == (0, 0)


async def test_a_metered_call_beside_the_admin_api_is_still_metered(served: Served) -> None:
    body = b"ImageURL=https%3A%2F%2Fx%2Fface.jpg"
    async with httpx.AsyncClient(base_url=served.url, timeout=10.0) as client:
        r = await client.post(
            "/", content=body, headers=v3_headers(served.key, served.secret, body)
        )
        assert r.status_code == 200, r.text
        # A path that only starts like the prefix is not under it: the meter's.
        near = await client.post(f"{PREFIX}x", content=b"", headers=auth())
        assert "metering-gateway" in near.text and "metering-admin" not in near.text
        assert near.status_code in (400, 403, 404)
    assert served.mock.stats.requests == 1
    calls, counted = served.metered()
    # The charged call; the meter refused the unidentified one (no account to count it on).
    assert calls == 1 and counted == 1


async def test_the_gateway_without_admin_tokens_has_no_admin_api(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url, settle_interval=0))
    mock = create_mock_upstream()
    async with run_server(mock) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
        async with (
            run_server(app) as base,
            httpx.AsyncClient(base_url=base, timeout=10.0) as client,
        ):
            r = await client.get("/admin/accounts", headers=auth())
            # The meter answers (an unsigned call), not an admin API.
            assert "metering-gateway" in r.text and "metering-admin" not in r.text
    assert mock.stats.requests == 0
