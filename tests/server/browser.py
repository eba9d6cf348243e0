"""Headless Debian chromium driven by Playwright, for the browser tests: a page that records
its console errors, sign-in through the dashboard's own form, and screenshots as artefacts.

Never `playwright install`: the browser is Debian's (resources/run-tests.sh installs it)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import ConsoleMessage, Page, async_playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("EWMS_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def artifacts_dir() -> Path:
    where = Path(os.environ.get("EWMS_TEST_ARTIFACTS") or REPO / "test-artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


@dataclass
class Tab:
    page: Page
    errors: list[str] = field(default_factory=list)
    expected_failures: set[str] = field(default_factory=set)
    """URLs whose failed loads the page expects (it shows what they mean)."""

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type != "error":
            return
        url = msg.location.get("url", "")
        if msg.text.startswith("Failed to load resource") and url in self.expected_failures:
            return
        self.errors.append(f"{msg.text} ({url})")

    async def screenshot(self, name: str) -> Path:
        path = artifacts_dir() / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def open_dashboard(self, base: str, hash_: str = "#/") -> None:
        """Go to a dashboard page and wait until it has rendered."""
        await self.page.goto(f"{base}/dashboard/{hash_}")
        await self.wait_ready(hash_)

    async def wait_ready(self, ready: str) -> None:
        await self.page.wait_for_selector(f'main[data-ready="{ready}"]', timeout=20_000)

    async def sign_in(self, base: str, token: str) -> None:
        """Paste `token` into the sign-in form, as a user does."""
        await self.page.goto(f"{base}/dashboard/")
        await self.wait_ready("login")
        await self.page.fill("#token", token)
        await self.page.click("#token-submit")
        await self.wait_ready("#/")

    async def goto_hash(self, hash_: str) -> None:
        await self.page.evaluate("h => { location.hash = h; }", hash_)
        await self.wait_ready(hash_)


@contextlib.asynccontextmanager
async def browser_tab() -> AsyncIterator[Tab]:
    if not shutil.which(CHROMIUM):
        raise AssertionError(
            f"{CHROMIUM} is missing: `apt-get install -y chromium` (resources/run-tests.sh does)"
        )
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            tab = Tab(page)
            page.on("console", tab._console)
            page.on("pageerror", lambda e: tab.errors.append(f"uncaught: {e}"))
            yield tab
        finally:
            await browser.close()
