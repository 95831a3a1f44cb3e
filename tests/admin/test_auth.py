"""Every route of the admin API is guarded: no token, a wrong one, a rotated-out one and
another scheme are 401 (nothing written); each configured token works."""

from __future__ import annotations

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from metering_middleware.admin.app import create_admin_app
from metering_middleware.admin.context import AdminContext
from metering_middleware.admin.tokens import AdminTokens

from .conftest import OLD_TOKEN, TOKEN, TOKEN_2, Admin, auth
from .samples import samples

REFUSED = {
    "none": ({}, "MissingToken"),
    "empty": ({"authorization": ""}, "MissingToken"),
    "wrong": (auth("wrong-admin-token-but-long-enough-0000000"), "InvalidToken"),
    "rotated out": (auth(OLD_TOKEN), "InvalidToken"),
    "prefix of a token": (auth(TOKEN[:-1]), "InvalidToken"),
    "token plus more": (auth(TOKEN + "x"), "InvalidToken"),
    "basic scheme": ({"authorization": f"Basic {TOKEN}"}, "InvalidToken"),
    "bare token": ({"authorization": TOKEN}, "InvalidToken"),
}


def test_every_route_has_a_sample(admin: Admin) -> None:
    app = admin.client._transport.app  # type: ignore[attr-defined]
    routes = {
        (method, r.path) for r in app.routes if isinstance(r, APIRoute) for method in r.methods
    }
    assert routes == {(s.method, s.template) for s in samples(admin)}
    # The OpenAPI document is one of them: guarded like the rest.
    assert ("GET", "/openapi.json") in routes


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_every_route_refuses_without_a_valid_token(admin: Admin, case: str) -> None:
    headers, code = REFUSED[case]
    before = admin.dump()
    for s in samples(admin):
        r = await admin.client.request(s.method, s.path, json=s.json, headers=headers)
        assert r.status_code == 401, (s.method, s.path, r.text)
        body = r.json()
        assert body["Code"] == code, (s.method, s.path)
        assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in r.text and OLD_TOKEN not in r.text
    assert admin.dump() == before


async def test_unknown_paths_without_a_token_reveal_nothing(admin: Admin) -> None:
    for path in ("/nothing-here", "/accounts/alice/nothing"):
        r = await admin.client.get(path)
        assert r.status_code == 401 and r.json()["Code"] == "MissingToken"
        r = await admin.client.get(path, headers=auth())
        assert r.status_code == 404 and r.json()["Code"] == "NotFound"
    r = await admin.client.delete("/accounts", headers=auth())
    assert r.status_code == 405 and r.json()["Code"] == "MethodNotAllowed"
    assert (await admin.client.delete("/accounts")).status_code == 401


@pytest.mark.parametrize("token", [TOKEN, TOKEN_2])
async def test_every_route_answers_each_configured_token(admin: Admin, token: str) -> None:
    for s in samples(admin):
        r = await admin.client.request(s.method, s.path, json=s.json, headers=auth(token))
        assert r.status_code == s.status, (s.method, s.path, r.text)


async def test_rotation_old_and_new_then_new_only(admin: Admin) -> None:
    # Before: OLD_TOKEN configured beside the new one, both work; after: only the new.
    for tokens, old_ok in (([OLD_TOKEN, TOKEN], True), ([TOKEN], False)):
        ctx = AdminContext.from_ledger_url(
            str(admin.db), AdminTokens(tokens), clock=admin.clock, secret_box=admin.box
        )
        app = create_admin_app(ctx)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
            assert (await client.get("/accounts", headers=auth(TOKEN))).status_code == 200
            old = await client.get("/accounts", headers=auth(OLD_TOKEN))
            assert old.status_code == (200 if old_ok else 401)
        await ctx.close()


async def test_the_scheme_is_case_insensitive_and_spaces_are_tolerated(admin: Admin) -> None:
    for value in (f"bearer {TOKEN}", f"BEARER {TOKEN}", f"  Bearer   {TOKEN}  "):
        r = await admin.client.get("/accounts", headers={"authorization": value})
        assert r.status_code == 200, value


async def test_a_refused_request_body_is_never_read(admin: Admin) -> None:
    # FastAPI parses a body before a route's dependencies: the guard answers first, so a
    # caller without a token cannot get a MalformedJSON 400 (nor make the app parse).
    for s in samples(admin):
        if s.method in ("POST", "PUT"):
            r = await admin.client.request(
                s.method,
                s.path,
                content=b'{"amount": ',
                headers={"content-type": "application/json"},
            )
            assert (r.status_code, r.json()["Code"]) == (401, "MissingToken"), s.path


async def _ui(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ui:" + scope["path"].encode()})


async def test_the_ui_is_mounted_and_guards_itself(admin: Admin) -> None:
    app = create_admin_app(admin.ctx, ui=_ui)
    outer = Starlette(routes=[Mount("/ops", app=app)])
    for base, inner in (("http://a", app), ("http://a/ops", outer)):
        transport = httpx.ASGITransport(app=inner)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            # The page's own sign-in decides there; the API's guard everywhere else.
            r = await client.get("/ui/")
            assert (r.status_code, r.text.startswith("ui:")) == (200, True), base
            for path in ("/uix", "/accounts", "/openapi.json"):
                r = await client.get(path)
                assert r.status_code == 401, (base, path)
            assert (await client.get("/accounts", headers=auth())).status_code == 200
