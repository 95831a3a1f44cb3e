"""The billing page on a seeded ledger: in-process (httpx) and on a real uvicorn port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from metering_middleware.admin.app import create_admin_app
from metering_middleware.admin.context import AdminContext
from metering_middleware.admin.web import create_billing_web
from tests.web.seed import TOKEN, Seeded, context, seed


@pytest.fixture
async def seeded(tmp_path: Path) -> Seeded:
    return await seed(tmp_path / "ledger.sqlite")


@pytest.fixture
async def ctx(seeded: Seeded) -> AsyncIterator[AdminContext]:
    ctx = context(seeded)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def client(ctx: AdminContext) -> AsyncIterator[httpx.AsyncClient]:
    """The admin app with the page mounted at /ui, as the gateway serves it (not signed in)."""
    app = create_admin_app(ctx, ui=create_billing_web(ctx))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as c:
        yield c


async def sign_in(client: httpx.AsyncClient, token: str = TOKEN) -> str:
    """Sign ``client`` in through the form; returns the session cookie's value."""
    r = await client.post("/ui/signin", data={"token": token})
    assert r.status_code == 303, r.text
    value = client.cookies.get("metering_session")
    assert value
    return value
