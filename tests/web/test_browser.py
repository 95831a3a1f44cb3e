"""The billing page in a real headless chromium against a real uvicorn: sign-in, every
page clean (no console error, no failed request), the seeded account's numbers read from
the DOM, a forged cross-origin post refused with nothing written, tenant markup inert,
and the screenshot (docs/img/billing-page.png is made by this same test, see docs/web.md).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.async_api import Browser, Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from example_gateway.serving import run_server
from metering_middleware.admin.app import create_admin_app
from metering_middleware.admin.context import AdminContext
from metering_middleware.admin.web import create_billing_web
from tests.web.browser import chromium, watch
from tests.web.seed import DEMO, KNOWN, TOKEN, XSS_CODE, XSS_NAMES, Seeded

#: Set to a path (docs/img/billing-page.png) to write the screenshot there as well.
SCREENSHOT_ENV = "METERING_WEB_SCREENSHOT"


@pytest.fixture
async def base(ctx: AdminContext) -> AsyncIterator[str]:
    """The admin app (page at /ui) on a real uvicorn port."""
    async with run_server(create_admin_app(ctx, ui=create_billing_web(ctx))) as url:
        yield url


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def signed_in(browser: Browser, base: str) -> Page:
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await page.goto(f"{base}/ui/signin")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/ui/accounts")
    return page


def account_url(base: str, name: str, **more: str) -> str:
    return f"{base}/ui/account?{urlencode({'name': name, **more})}"


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


async def test_sign_in_pages_and_numbers(browser: Browser, base: str, tmp_path: Path) -> None:
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await page.goto(f"{base}/ui/accounts")
    assert page.url == f"{base}/ui/signin"  # not signed in: the form
    await page.fill("#token", TOKEN + "x")
    await page.click("button[type=submit]")  # a 401 (chromium logs it): watched from below
    assert await page.text_content("#error") == "That is not an admin token."
    assert not await page.context.cookies()
    seen = watch(page)
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/ui/accounts")
    cookies = await page.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"], c["path"]) for c in cookies] == [
        ("metering_session", True, "Strict", "/ui")
    ]
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it

    rows = page.locator("#accounts tbody tr")
    assert await rows.count() == 5
    await page.fill("#q", "tech")
    await page.click("form.card button[type=submit]")
    assert await page.locator("#accounts tbody tr").count() == 1
    await page.click(f"text={KNOWN}")
    await page.wait_for_url(account_url(base, KNOWN))

    # The numbers the seed gives by arithmetic (tests/web/seed.py).
    assert await page.text_content("#bill-total") == "2.00"
    left = page.locator('tr[data-plan="rp-initech-ocr"] .points-left')
    assert await left.text_content() == "40"
    day = page.locator('#usage-chart g[data-day="2026-11-05"]')
    assert await day.get_attribute("data-total") == "5"
    assert await day.locator("text.total").text_content() == "5"
    assert (
        await day.locator("rect title").text_content() == "2026-11-05 facebody.DetectFace: 5 calls"
    )
    assert await page.text_content("#balance") == "47.00"

    await page.select_option("#month", "2026-10")
    await page.click("text=Show")
    await page.wait_for_url(account_url(base, KNOWN, month="2026-10"))
    assert await page.text_content("#bill-total") == "0.00"

    await page.goto(account_url(base, DEMO))
    assert await page.locator("#usage-chart rect[data-action]").count() > 40
    assert await page.locator("#usage-legend li").count() == 3
    await page.click('tr[data-plan="rp-acme-general"] >> text=Refund…')
    assert await page.text_content("#refund-amount") == "0"
    seen.check()

    shot = tmp_path / "billing-page.png"
    await page.goto(account_url(base, DEMO))
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if target := os.environ.get(SCREENSHOT_ENV):
        Path(target).write_bytes(shot.read_bytes())


async def test_a_top_up_from_the_page(browser: Browser, base: str) -> None:
    page = await signed_in(browser, base)
    seen = watch(page)
    await page.goto(account_url(base, KNOWN))
    await page.fill("#amount", "10.25")
    await page.click("#topup button[type=submit]")
    await page.wait_for_url("**done=topup")
    assert await page.text_content("#balance") == "57.25"
    assert await page.text_content(".flash") == "Top-up posted."
    seen.check()


def _attacker(victim: str, fields: dict[str, str]) -> Starlette:
    """A page of another origin with a form posting to the billing page."""
    inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(
            f'<!doctype html><form method="post" action="{victim}/ui/topup">{inputs}'
            '<button id="go">Win a prize</button></form>'
        )

    return Starlette(routes=[Route("/", home)])


async def test_a_forged_post_from_another_origin_is_refused(
    browser: Browser, base: str, seeded: Seeded
) -> None:
    page = await signed_in(browser, base)
    await page.goto(account_url(base, KNOWN))
    token = await page.get_attribute("#topup input[name=csrf]", "value")
    assert token
    before = dump(seeded.path)
    # Another port of the same host: the same site, so the Strict cookie goes along;
    # refused without the token, and with it (leaked) by the Origin check.
    for fields in (
        {"name": KNOWN, "amount": "1000"},
        {"name": KNOWN, "amount": "1000", "csrf": "guessed"},
        {"name": KNOWN, "amount": "1000", "csrf": token},
    ):
        async with run_server(_attacker(base, fields)) as evil:
            await page.goto(evil)
            async with page.expect_navigation() as nav:
                await page.click("#go")
            response = await nav.value
            assert response is not None and response.status == 403
            assert "Forbidden" in (await page.text_content("h1") or "")
    assert dump(seeded.path) == before
    await page.goto(account_url(base, KNOWN))
    assert await page.text_content("#balance") == "47.00"


async def test_tenant_markup_is_inert(browser: Browser, base: str) -> None:
    page = await signed_in(browser, base)
    seen = watch(page)
    await page.goto(f"{base}/ui/accounts")
    links = page.locator("#accounts tbody td a")
    names = {await links.nth(i).text_content() for i in range(await links.count())}
    assert set(XSS_NAMES) <= names  # shown as the text they are
    for name in XSS_NAMES:
        await page.click(
            f'#accounts tr[data-account="{name.replace(chr(34), chr(92) + chr(34))}"] a'
        )
        await page.wait_for_url(account_url(base, name))
        assert await page.text_content("#account-name") == name
        codes = page.locator("#outcomes td.mono")
        assert await codes.text_content() == XSS_CODE
        for tag in ("img", "script", "iframe", "object"):
            assert await page.locator(tag).count() == 0, tag
        assert await page.locator("svg[onload]").count() == 0
        await page.goto(f"{base}/ui/accounts")
    seen.check()  # no dialog opened, no console error (a CSP refusal would be one)
