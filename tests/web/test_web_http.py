"""The billing page without a browser (httpx, in process): cookies, sign-in, sessions,
rotation, CSRF and same-origin refusals (nothing written), escaping, security headers."""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from datetime import timedelta
from decimal import Decimal
from html import unescape
from pathlib import Path

import httpx
import pytest

from metering_middleware.admin.app import create_admin_app
from metering_middleware.admin.context import AdminContext
from metering_middleware.admin.tokens import AdminTokens
from metering_middleware.admin.web import create_billing_web
from metering_middleware.reports import account_overview
from tests.web.conftest import sign_in
from tests.web.seed import DEMO, KNOWN, NOW, TOKEN, XSS_CODE, XSS_NAMES, Seeded, context

OTHER_TOKEN = "second-admin-token-for-rotation-0123456789"


def dump(path: Path) -> list[str]:
    """Every row of the ledger file: equal dumps mean nothing was written."""
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def balance(seeded: Seeded, account: str) -> Decimal:
    return (await account_overview(seeded.path, account, NOW)).balance


async def key_enabled(ctx: AdminContext, key: str) -> bool:
    found = [k for k in await (await ctx.credentials()).list() if k.access_key_id == key]
    return found[0].enabled


# -- sign-in and the cookie --------------------------------------------------------------------


async def test_pages_need_a_session(client: httpx.AsyncClient) -> None:
    for path in ("/ui/accounts", f"/ui/account?name={KNOWN}", "/ui/refund?name=x&plan=y"):
        r = await client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/ui/signin", path
    r = await client.get("/ui/signin")
    assert r.status_code == 200 and 'name="token"' in r.text


async def test_wrong_token_gives_the_form_again_and_no_cookie(client: httpx.AsyncClient) -> None:
    for wrong in ("", "x", TOKEN[:-1], TOKEN + "x", OTHER_TOKEN):
        r = await client.post("/ui/signin", data={"token": wrong})
        assert r.status_code == 401
        assert "set-cookie" not in r.headers
        assert "That is not an admin token." in r.text and 'name="token"' in r.text
    assert not client.cookies
    assert (await client.get("/ui/accounts")).status_code == 303


async def test_sign_in_from_another_origin_is_refused(client: httpx.AsyncClient) -> None:
    # Login CSRF: another site cannot sign a browser into the page, even with a token.
    for header in ({"origin": "http://evil.test"}, {"referer": "http://evil.test/x"}):
        r = await client.post("/ui/signin", data={"token": TOKEN}, headers=header)
        assert r.status_code == 403 and "set-cookie" not in r.headers
    r = await client.post(
        "/ui/signin", data={"token": TOKEN}, headers={"origin": "http://admin.test"}
    )
    assert r.status_code == 303 and "set-cookie" in r.headers


async def test_session_cookie_flags(client: httpx.AsyncClient) -> None:
    r = await client.post("/ui/signin", data={"token": TOKEN})
    assert r.status_code == 303 and r.headers["location"] == "/ui/accounts"
    cookie = r.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/ui;" in cookie.lower() + ";"
    assert "secure" not in attributes  # served over plain HTTP here
    assert TOKEN not in cookie  # the token is never in the cookie
    assert (await client.get("/ui/accounts")).status_code == 200


async def test_cookie_is_secure_over_https(ctx: AdminContext) -> None:
    app = create_admin_app(ctx, ui=create_billing_web(ctx))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://admin.test") as c:
        r = await c.post("/ui/signin", data={"token": TOKEN})
    assert r.status_code == 303
    attributes = [p.strip().lower() for p in r.headers["set-cookie"].split(";")]
    assert "secure" in attributes


async def test_session_expires(ctx: AdminContext, seeded: Seeded) -> None:
    app = create_admin_app(ctx, ui=create_billing_web(ctx, session_lifetime=timedelta(hours=1)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as c:
        await sign_in(c)
        seeded.clock.advance(59 * 60)
        assert (await c.get("/ui/accounts")).status_code == 200
        seeded.clock.advance(60)
        assert (await c.get("/ui/accounts")).status_code == 303


async def test_forged_or_tampered_cookies_are_refused(client: httpx.AsyncClient) -> None:
    value = await sign_in(client)
    version, sid, issued, expires, mac = value.split(".")
    later = str(int(expires) + 10**6)
    for forged in (
        f"{version}.{sid}.{issued}.{later}.{mac}",  # a longer life
        f"{version}.{sid[:-1]}A.{issued}.{expires}.{mac}",  # another session id
        f"{version}.{sid}.{issued}.{expires}.{mac[:-2]}AA",  # another signature
        f"v2.{sid}.{issued}.{expires}.{mac}",
        "garbage",
        "",
    ):
        client.cookies.clear()
        client.cookies.set("metering_session", forged, domain="admin.test", path="/ui")
        assert (await client.get("/ui/accounts")).status_code == 303, forged


async def test_rotating_the_token_out_ends_its_sessions(ctx: AdminContext) -> None:
    ctx.tokens = AdminTokens([TOKEN, OTHER_TOKEN])
    app = create_admin_app(ctx, ui=create_billing_web(ctx))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as c:
        await sign_in(c, TOKEN)
        assert (await c.get("/ui/accounts")).status_code == 200
        ctx.tokens = AdminTokens([OTHER_TOKEN])  # TOKEN rotated out, live
        assert (await c.get("/ui/accounts")).status_code == 303
        r = await c.post("/ui/signin", data={"token": TOKEN})
        assert r.status_code == 401 and "set-cookie" not in r.headers
        await sign_in(c, OTHER_TOKEN)
        assert (await c.get("/ui/accounts")).status_code == 200


async def test_adding_a_token_or_removing_another_keeps_a_session(ctx: AdminContext) -> None:
    # Rotation's first step (configure the new token beside the old) signs nobody out; a
    # session lives as long as the token it signed in with, whatever else changes.
    third = "third-admin-token-for-rotation-0123456789ab"
    ctx.tokens = AdminTokens([TOKEN])
    app = create_admin_app(ctx, ui=create_billing_web(ctx))
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://admin.test") as old,
        httpx.AsyncClient(transport=transport, base_url="http://admin.test") as new,
    ):
        await sign_in(old, TOKEN)
        ctx.tokens = AdminTokens([TOKEN, OTHER_TOKEN])  # the new token added
        assert (await old.get("/ui/accounts")).status_code == 200
        await sign_in(new, OTHER_TOKEN)
        ctx.tokens = AdminTokens([third, OTHER_TOKEN])  # TOKEN out, another one in
        assert (await old.get("/ui/accounts")).status_code == 303
        assert (await new.get("/ui/accounts")).status_code == 200
        # The CSRF token of the surviving session is still its own.
        page = await new.get(f"/ui/account?name={KNOWN}")
        assert page.status_code == 200 and csrf_of(page.text)


async def test_a_cookie_of_another_configuration_is_refused(seeded: Seeded) -> None:
    # Two gateway processes with the same tokens accept each other's sessions; a process
    # whose token set differs (the token was rotated out there) accepts none of them.
    first, same, rotated = context(seeded), context(seeded), context(seeded, OTHER_TOKEN)
    try:
        apps = [create_admin_app(c, ui=create_billing_web(c)) for c in (first, same, rotated)]
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://admin.test")
            for a in apps
        ]
        value = await sign_in(clients[0])
        for c, expected in zip(clients[1:], (200, 303), strict=True):
            c.cookies.set("metering_session", value, domain="admin.test", path="/ui")
            assert (await c.get("/ui/accounts")).status_code == expected
        for c in clients:
            await c.aclose()
    finally:
        for c in (first, same, rotated):
            await c.close()


async def test_sign_out_ends_the_session(client: httpx.AsyncClient) -> None:
    value = await sign_in(client)
    page = await client.get("/ui/accounts")
    r = await client.post("/ui/signout", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/ui/signin"
    assert "max-age=0" in r.headers["set-cookie"].lower()
    client.cookies.set("metering_session", value, domain="admin.test", path="/ui")
    assert (await client.get("/ui/accounts")).status_code == 303  # the old cookie is dead


async def test_the_session_cookie_is_not_an_admin_api_credential(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client)
    assert (await client.get("/accounts")).status_code == 401


# -- CSRF and same origin ----------------------------------------------------------------------


async def test_forged_posts_are_403_and_write_nothing(
    client: httpx.AsyncClient, ctx: AdminContext, seeded: Seeded
) -> None:
    await sign_in(client)
    page = await client.get("/ui/account", params={"name": KNOWN})
    token = csrf_of(page.text)
    other = httpx.AsyncClient(
        transport=client._transport, base_url="http://admin.test"
    )  # a second operator's session: its own CSRF token
    await sign_in(other)
    foreign = csrf_of((await other.get("/ui/accounts")).text)
    await other.aclose()
    assert foreign != token
    forms = {
        "/ui/topup": {"name": KNOWN, "amount": "1000", "key": "forged-1"},
        "/ui/disable-key": {"name": KNOWN, "key": seeded.keys[KNOWN][0]},
        "/ui/refund": {"name": KNOWN, "plan": "rp-initech-ocr"},
        "/ui/signout": {},
    }
    before = dump(seeded.path)
    for path, fields in forms.items():
        for csrf in (None, "", "wrong", token[:-1], foreign):
            data = dict(fields) if csrf is None else {**fields, "csrf": csrf}
            r = await client.post(path, data=data)
            assert r.status_code == 403, (path, csrf)
        # The right token from another origin: refused by the Origin (or Referer) check.
        for header in (
            {"origin": "http://evil.test"},
            {"origin": "null"},
            {"referer": "http://evil.test/page"},
            {"origin": "https://admin.test"},  # another scheme is another origin
        ):
            r = await client.post(path, data={**fields, "csrf": token}, headers=header)
            assert r.status_code == 403, (path, header)
    assert dump(seeded.path) == before
    assert await balance(seeded, KNOWN) == Decimal("47.00")
    assert await key_enabled(ctx, seeded.keys[KNOWN][0])
    assert (await client.get("/ui/accounts")).status_code == 200  # still signed in


async def test_posts_without_a_session_are_403(client: httpx.AsyncClient, seeded: Seeded) -> None:
    before = dump(seeded.path)
    r = await client.post("/ui/topup", data={"name": KNOWN, "amount": "5", "csrf": "x"})
    assert r.status_code == 403
    assert dump(seeded.path) == before


async def test_a_post_that_is_not_one_of_the_forms_is_refused(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    await sign_in(client)
    token = csrf_of((await client.get("/ui/accounts")).text)
    before = dump(seeded.path)
    r = await client.post("/ui/topup", json={"name": KNOWN, "amount": "5", "csrf": token})
    assert r.status_code == 403
    r = await client.post("/ui/topup", data={"name": KNOWN, "amount": "5", "csrf": token,
                                             "pad": "x" * 10_000})  # fmt: skip
    assert r.status_code == 403
    r = await client.post(
        "/ui/topup",
        content=f"name={KNOWN}&amount=5&amount=500&csrf={token}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 403  # a field given twice: which one would count?
    assert dump(seeded.path) == before


async def test_top_up_with_the_token_posts_once(client: httpx.AsyncClient, seeded: Seeded) -> None:
    await sign_in(client)
    page = await client.get("/ui/account", params={"name": KNOWN})
    key = re.search(r'name="key" value="([^"]+)"', page.text)
    assert key
    form = {"name": KNOWN, "amount": "12.50", "key": key.group(1), "csrf": csrf_of(page.text)}
    headers = {"origin": "http://admin.test"}
    r = await client.post("/ui/topup", data=form, headers=headers)
    assert r.status_code == 303 and "done=topup" in r.headers["location"]
    assert await balance(seeded, KNOWN) == Decimal("59.50")
    again = await client.post("/ui/topup", data=form)  # the form sent twice: posted once
    assert "done=topup-again" in again.headers["location"]
    assert await balance(seeded, KNOWN) == Decimal("59.50")
    shown = await client.get(again.headers["location"])
    assert "posted before: nothing added" in shown.text and 'id="balance">59.50<' in shown.text


async def test_top_up_refusal_is_shown_and_writes_nothing(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    await sign_in(client)
    token = csrf_of((await client.get("/ui/accounts")).text)
    before = dump(seeded.path)
    for amount in ("", "-5", "abc", "0.001", "NaN"):
        r = await client.post("/ui/topup", data={"name": KNOWN, "amount": amount, "csrf": token})
        assert r.status_code == 400, amount
        assert "Top-up refused" in r.text
    r = await client.post("/ui/topup", data={"name": "nobody", "amount": "5", "csrf": token})
    assert r.status_code == 404
    assert dump(seeded.path) == before


async def test_disable_only_a_key_of_the_account(
    client: httpx.AsyncClient, ctx: AdminContext, seeded: Seeded
) -> None:
    await sign_in(client)
    token = csrf_of((await client.get("/ui/accounts")).text)
    theirs = seeded.keys[KNOWN][0]
    for name, key in ((DEMO, theirs), (KNOWN, KNOWN), (KNOWN, "")):
        # Another account's key, or an account name (``disable`` takes one): refused.
        r = await client.post("/ui/disable-key", data={"name": name, "key": key, "csrf": token})
        assert r.status_code == 404
    assert await key_enabled(ctx, theirs)
    r = await client.post("/ui/disable-key", data={"name": KNOWN, "key": theirs, "csrf": token})
    assert r.status_code == 303
    assert not await key_enabled(ctx, theirs)
    assert await key_enabled(ctx, seeded.keys[DEMO][0])


async def test_refund_shows_the_quote_then_refunds(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    await sign_in(client)
    before = dump(seeded.path)
    quote = await client.get("/ui/refund", params={"name": KNOWN, "plan": "rp-initech-ocr"})
    assert quote.status_code == 200
    # Bought 2026-11-01 04:00, now 2026-11-20: past the 120 h window, nothing to refund.
    assert 'id="refund-amount">0<' in quote.text and "no refund after 120 h" in quote.text
    assert "Refund now" not in quote.text
    wrong = await client.get("/ui/refund", params={"name": DEMO, "plan": "rp-initech-ocr"})
    assert wrong.status_code == 404
    assert dump(seeded.path) == before  # the quote wrote nothing
    r = await client.post(
        "/ui/refund", data={"name": KNOWN, "plan": "rp-initech-ocr", "csrf": csrf_of(quote.text)}
    )
    assert r.status_code == 400 and "cannot be refunded" in r.text
    assert await balance(seeded, KNOWN) == Decimal("47.00")


async def test_refund_within_the_window(client: httpx.AsyncClient, seeded: Seeded) -> None:
    from metering_middleware.rating import SqliteRatingStore, buy_resource_plan
    from tests.support.money import priced_catalog

    async with SqliteRatingStore(seeded.path) as rating:
        await buy_resource_plan(
            rating, priced_catalog(), account=KNOWN, kind="single", categories={"ocr"},
            points=Decimal(100), ordered_at=NOW - timedelta(hours=1), price_paid=Decimal("3.00"),
            plan_id="rp-fresh", clock=seeded.clock,
        )  # fmt: skip
    await sign_in(client)
    paid = await balance(seeded, KNOWN)
    quote = await client.get("/ui/refund", params={"name": KNOWN, "plan": "rp-fresh"})
    assert 'id="refund-amount">3.00<' in quote.text and "Refund now" in quote.text
    form = {"name": KNOWN, "plan": "rp-fresh", "csrf": csrf_of(quote.text)}
    r = await client.post("/ui/refund", data={**form, "name": DEMO})
    assert r.status_code == 404  # not this account's plan: nothing refunded
    assert await balance(seeded, KNOWN) == paid
    r = await client.post("/ui/refund", data=form)
    assert r.status_code == 303 and "done=refund" in r.headers["location"]
    assert await balance(seeded, KNOWN) == paid + Decimal("3.00")


# -- what the pages show -------------------------------------------------------------------------


async def test_known_numbers(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    page = (await client.get("/ui/account", params={"name": KNOWN, "month": "2026-11"})).text
    assert 'id="bill-total">2.00<' in page
    assert re.search(r'data-plan="rp-initech-ocr".*?class="points-left">40<', page, re.S)
    assert 'data-day="2026-11-05" data-total="5"' in page
    assert "2026-11-05 facebody.DetectFace: 5 calls</title>" in page
    assert 'id="balance">47.00<' in page  # 50 paid in, 1.00 for the plan, 2.00 due
    earlier = (await client.get("/ui/account", params={"name": KNOWN, "month": "2026-10"})).text
    assert 'id="bill-total">0.00<' in earlier and 'id="usage-empty"' in earlier
    bad = await client.get("/ui/account", params={"name": KNOWN, "month": "2026-13"})
    assert bad.status_code == 400
    missing = await client.get("/ui/account", params={"name": "nobody"})
    assert missing.status_code == 404


async def test_search_by_name(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    page = (await client.get("/ui/accounts", params={"q": "TECH"})).text
    rows = re.findall(r'<tr data-account="([^"]*)"', page)
    assert rows == [KNOWN]
    everyone = re.findall(r'<tr data-account="([^"]*)"', (await client.get("/ui/accounts")).text)
    assert {unescape(r) for r in everyone} == {KNOWN, DEMO, "globex", *XSS_NAMES}


async def test_tenant_markup_is_escaped(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    pages = [(await client.get("/ui/accounts")).text]
    for name in XSS_NAMES:
        r = await client.get("/ui/account", params={"name": name})
        assert r.status_code == 200
        pages.append(r.text)
        assert f'<h1 id="account-name">{_escaped(name)}</h1>' in r.text
        assert _escaped(XSS_CODE) in r.text
    for page in pages:
        for raw in (*XSS_NAMES, XSS_CODE, "<script", "onerror=alert(1)>", "<svg onload"):
            assert raw not in page


def _escaped(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&#34;")
        .replace("'", "&#39;")
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ui/signin"),
        ("GET", "/ui/accounts"),  # a redirect
        ("POST", "/ui/topup"),  # a refusal
        ("GET", "/ui/nowhere"),  # a 404
    ],
)
async def test_security_headers_on_every_answer(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    r = await client.request(method, path)
    policy = r.headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "img-src 'self' data:",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ):
        assert directive in policy
    assert "script-src" not in policy and "unsafe" not in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"


async def test_the_style_hash_allows_exactly_the_inline_stylesheet(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/ui/signin")
    styles = re.findall(r"<style>(.*?)</style>", r.text, re.S)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in r.headers["content-security-policy"]
    assert ' style="' not in r.text  # no inline style attribute (the hash does not allow one)


async def test_under_the_gateways_admin_prefix(ctx: AdminContext) -> None:
    # The gateway mounts the admin app under its prefix; the page's links, redirects and
    # cookie path follow the mount, whatever it is.
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(
        routes=[Mount("/ops/admin", app=create_admin_app(ctx, ui=create_billing_web(ctx)))]
    )
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as c:
        r = await c.get("/ops/admin/ui/accounts")
        assert r.status_code == 303 and r.headers["location"] == "/ops/admin/ui/signin"
        r = await c.post("/ops/admin/ui/signin", data={"token": TOKEN})
        assert r.headers["location"] == "/ops/admin/ui/accounts"
        assert "path=/ops/admin/ui;" in r.headers["set-cookie"].lower() + ";"
        page = await c.get("/ops/admin/ui/accounts")
        assert page.status_code == 200
        assert f'href="/ops/admin/ui/account?name={KNOWN}"' in page.text
        assert 'action="/ops/admin/ui/signout"' in page.text
