"""The live dashboard in a real browser: Debian's Chromium, driven by Playwright (no browser download)."""

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import ConsoleMessage, Error, async_playwright, expect

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / ".reports"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def chromium() -> str:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (make test does)"
    REPORTS.mkdir(exist_ok=True)
    return CHROMIUM


async def test_the_dashboard_places_an_order_and_follows_it_to_completed(
    urls: Any, user_id: int, chromium: str
) -> None:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    def on_error(error: Error) -> None:
        problems.append(f"page error: {error}")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 1000})
            page.on("console", on_console)
            page.on("pageerror", on_error)
            # The query service's front page links to the dashboard.
            await page.goto(urls.query + "/")
            await page.click("a[href='/dashboard']")
            await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)

            await page.fill("input[name=userId]", str(user_id))
            await page.fill("input[name=productName]", "Ordered from the browser test")
            await page.fill("input[name=quantity]", "3")
            await page.fill("input[name=price]", "19.99")
            await page.click("#place")
            result = page.locator("#result.ok")
            await expect(result).to_be_visible(timeout=30_000)
            order_id = await result.get_attribute("data-order-id")
            assert order_id

            row = page.locator(f"tr[data-order-id='{order_id}']")
            await expect(row).to_have_attribute("data-status", "COMPLETED", timeout=30_000)
            await expect(row.locator(".status")).to_have_text("COMPLETED")
            await expect(row.locator(".product")).to_have_text("Ordered from the browser test")
            await expect(page.locator("#count-COMPLETED")).not_to_have_text("0", timeout=10_000)

            await page.screenshot(path=str(REPORTS / "dashboard.png"), full_page=True)
        finally:
            await browser.close()
    assert problems == []
