"""Debian's chromium driven by Python Playwright (no browser download), and a watcher that
collects what must never happen on a page: console errors, script errors, failed
requests, error answers and dialogs."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    Response,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError

__all__ = ["CHROMIUM", "Watch", "chromium", "watch"]

CHROMIUM = os.environ.get("METERING_CHROMIUM", "/usr/bin/chromium")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless chromium; a missing binary fails the test, never skips it (.ci/run
    installs Debian's ``chromium``)."""
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium (as .ci/run does)")
    async with async_playwright() as pw:
        try:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        except PlaywrightError as exc:
            pytest.fail(f"chromium at {CHROMIUM} did not start: {exc}")
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watch:
    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    allowed_status: set[int] = field(default_factory=set)

    def check(self) -> None:
        assert not self.dialogs, f"dialogs opened: {self.dialogs}"
        assert not self.problems, "\n".join(self.problems)


def watch(page: Page) -> Watch:
    """Start watching ``page``: ``watch(page).check()`` after the visits."""
    seen = Watch()

    def console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            seen.problems.append(f"console {message.type}: {message.text}")

    def page_error(error: PlaywrightError) -> None:
        seen.problems.append(f"page error: {error}")

    def failed(request: Request) -> None:
        seen.problems.append(f"request failed: {request.method} {request.url} {request.failure}")

    def answered(response: Response) -> None:
        if response.status >= 400 and response.status not in seen.allowed_status:
            seen.problems.append(
                f"HTTP {response.status}: {response.request.method} {response.url}"
            )

    async def dialog(d: Dialog) -> None:
        seen.dialogs.append(f"{d.type}: {d.message}")
        await d.dismiss()

    page.on("console", console)
    page.on("pageerror", page_error)
    page.on("requestfailed", failed)
    page.on("response", answered)
    page.on("dialog", dialog)
    return seen
