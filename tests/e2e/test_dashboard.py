"""The live dashboard in a real browser: Debian's Chromium, driven by Playwright (no browser download)."""

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from .conftest import BrowserPage

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / ".reports"


async def test_the_dashboard_places_an_order_and_follows_it_to_completed(
    urls: Any, user_id: int, browser_page: BrowserPage
) -> None:
    page = browser_page.page
    # The query service's front page links to the dashboard.
    await page.goto(urls.query + "/")
    await page.click("a[href='/dashboard']")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)

    await page.fill("input[name=userId]", str(user_id))
    # The form counts a name as the api does (code points, a visible character).
    await page.fill("input[name=productName]", "\u200b\u200d\u3164")
    await page.click("#place")
    await expect(page.locator("#result.error")).to_contain_text("productName: must not be blank")
    await page.fill("input[name=productName]", "\U0001f600" * 201)
    await page.click("#place")
    await expect(page.locator("#result.error")).to_contain_text("1 to 200 characters")
    await page.fill("input[name=productName]", "\U0001f600" * 200)  # 400 UTF-16 units
    await page.click("#place")
    await expect(page.locator("#result.ok")).to_be_visible(timeout=30_000)

    order_id = await browser_page.place("Ordered from the browser test", 3, "19.99")
    row = page.locator(f"tr[data-order-id='{order_id}']")
    await expect(row.locator(".status")).to_have_text("COMPLETED")
    await expect(row.locator(".product")).to_have_text("Ordered from the browser test")
    await expect(page.locator("#count-COMPLETED")).not_to_have_text("0", timeout=10_000)

    REPORTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(REPORTS / "dashboard.png"), full_page=True)
    assert browser_page.problems == []


async def test_the_dashboard_works_for_staff_with_a_pasted_token(
    oidc_urls: Any, provider: Any, user_id: int, browser_page: BrowserPage
) -> None:
    """AUTH_MODE=oidc: the page asks for a token; with a staff token (Hydra's) it reads, places
    (as the staff member's own user) and follows the feed through stream tickets."""
    page = browser_page.page
    await page.goto(oidc_urls.query + "/dashboard")
    form = page.locator("#token-form")
    await expect(form).to_be_visible(timeout=30_000)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "down")
    await page.fill("input[name=token]", provider.user_token(user_id, "staff"))
    await page.click("#token-form button")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    await expect(form).to_be_hidden()

    await page.fill("input[name=userId]", str(user_id))
    await page.fill("input[name=productName]", "Ordered by staff")
    await page.click("#place")
    result = page.locator("#result.ok")
    await expect(result).to_be_visible(timeout=30_000)
    order_id = await result.get_attribute("data-order-id")
    row = page.locator(f"tr[data-order-id='{order_id}']")
    await expect(row).to_have_attribute("data-status", "COMPLETED", timeout=30_000)
    # The only console errors are the browser's report of the first, token-less 401s.
    assert all("401" in problem for problem in browser_page.problems), browser_page.problems
