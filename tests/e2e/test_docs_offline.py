"""Swagger UI with the network cut off: `/docs` on both services loads nothing from outside the machine;
nor does the api's page of the event contract, `/asyncapi`.

Chromium (Debian's, driven by Playwright as in test_dashboard.py) opens each service's `/docs`
with every request to a host other than this machine aborted and recorded; the page must ask
for none and still list the service's operations.
"""

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Page, Route, expect

from .conftest import BrowserPage

pytestmark = pytest.mark.e2e

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
DOCS_ROUTES = ("/docs", "/docs/oauth2-redirect")


async def cut_off(page: Page) -> list[str]:
    """Abort every request of `page` to a host other than this machine; the list fills with
    their URLs."""
    outside: list[str] = []

    async def local_only(route: Route) -> None:
        host = urlsplit(route.request.url).hostname
        if host is None or host in LOCAL_HOSTS:
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort("internetdisconnected")

    await page.route("**/*", local_only)
    return outside


@pytest.mark.browser
@pytest.mark.parametrize(
    ("service", "method"),
    [("api", "post"), ("query", "get")],
)
async def test_swagger_ui_lists_the_operations_with_the_network_cut_off(
    urls: Any, browser_page: BrowserPage, service: str, method: str
) -> None:
    base = getattr(urls, service)
    page = browser_page.page
    outside = await cut_off(page)
    response = await page.goto(base + "/docs", wait_until="networkidle")
    assert response is not None
    assert response.ok
    assert outside == [], "Swagger UI asked for something outside this machine"
    # Swagger UI drew the service's operations from its OpenAPI document.
    operation = page.locator(f".opblock-{method} .opblock-summary-path[data-path='/api/orders']")
    await expect(operation).to_be_visible(timeout=30_000)
    await expect(operation).to_contain_text("/api/orders")
    assert await page.locator(".opblock").count() >= 3
    # Its Authorize flow returns to a page of the service's own.
    redirect = await page.request.get(base + "/docs/oauth2-redirect")
    assert redirect.ok
    assert "swaggerUIRedirectOauth2" in await redirect.text()
    assert outside == [], "Swagger UI asked for something outside this machine"
    assert browser_page.problems == []


@pytest.mark.parametrize("service", ["api", "query"])
async def test_the_docs_routes_stay_out_of_the_openapi_document(urls: Any, service: str) -> None:
    async with httpx.AsyncClient(base_url=getattr(urls, service), timeout=30) as client:
        paths = (await client.get("/openapi.json")).raise_for_status().json()["paths"]
        assert not [path for path in paths if path.startswith("/docs")]
        assert set(DOCS_ROUTES).isdisjoint(paths)
        html = (await client.get("/docs")).raise_for_status().text
        assert "/docs/assets/swagger-ui-bundle.js" in html
        assert not re.search(r"""(?:src|href)=["'](?:[a-z]+:)?//""", html), "nothing from elsewhere"
        # Only the files the page needs are served from the package, not its example index page.
        assert (await client.get("/docs/assets/swagger-ui.css")).status_code == 200
        assert (await client.get("/docs/assets/index.html")).status_code == 404


@pytest.mark.browser
async def test_the_event_contract_page_renders_with_the_network_cut_off(
    urls: Any, browser_page: BrowserPage
) -> None:
    """`/asyncapi` on the api: the AsyncAPI document drawn by the viewer the `asyncapi-viewer`
    package ships, loading nothing from outside the machine."""
    page = browser_page.page
    outside = await cut_off(page)
    response = await page.goto(urls.api + "/asyncapi", wait_until="networkidle")
    assert response is not None
    assert response.ok
    # The viewer drew the document: its title and the status topic's address.
    await expect(page.get_by_text("Order tracking events").first).to_be_visible(timeout=30_000)
    await expect(page.get_by_text("order.status.changed").first).to_be_attached()
    assert outside == [], "the page asked for something outside this machine"
    assert browser_page.problems == []
    async with httpx.AsyncClient(base_url=urls.api) as http:
        assert (await http.get("/asyncapi/assets/manifest.json")).status_code == 404, (
            "only the viewer's files"
        )
