"""The e2e suite talks to a running stack over HTTP only.

Point it at any stack (for example `docker compose up`) with
E2E_API_URL and E2E_QUERY_URL (and E2E_GATEWAY_URL, the front door); without
them it starts the stack itself as local processes on free loopback ports, the
gateway (nginx) included, and stops it at the end.
"""

import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Error, Page, async_playwright, expect

if TYPE_CHECKING:
    from orders_stack.oidc import Provider


@dataclass(frozen=True)
class Urls:
    api: str
    query: str
    gateway: str | None = None
    """The front door (nginx), None for a stack without one."""


@contextlib.contextmanager
def own_stack(request: pytest.FixtureRequest, label: str, oidc: bool = False) -> Iterator[Urls]:
    """The stack named by E2E_API_URL and E2E_QUERY_URL, or one started here on the session's
    Kafka and Redis, with a topic, group and key prefix of its own (stopped at the end).
    `oidc`: in AUTH_MODE=oidc, with the session's Ory Hydra as its provider (never the
    stack named by E2E_*, whose mode is its own)."""
    api, query = os.environ.get("E2E_API_URL"), os.environ.get("E2E_QUERY_URL")
    if api and query and not oidc:
        gateway = os.environ.get("E2E_GATEWAY_URL")
        yield Urls(api.rstrip("/"), query.rstrip("/"), gateway.rstrip("/") if gateway else None)
        return
    from orders_stack import Stack

    infra = request.getfixturevalue("infra")
    unique = f"{label}-{uuid.uuid4().hex[:12]}"
    env = {
        "KAFKA_ORDERS_TOPIC": f"orders-{unique}",
        "KAFKA_DLQ_TOPIC": f"orders-{unique}.dlq",
        "KAFKA_STATUS_TOPIC": f"orders-{unique}.status",
        "KAFKA_CONSUMER_GROUP": f"processor-{unique}",
        "REDIS_KEY_PREFIX": f"{unique}:",
        "PROCESSING_DELAY_MS": "200",
        "BIND_HOST": "127.0.0.1",  # servers in tests listen on loopback only
    }
    if oidc:
        env.update(request.getfixturevalue("provider").service_env)
    # The open stack has its front door too (its Location headers then name it); an oidc one not.
    gateway_port = None if oidc else 0
    # The cluster profile (TEST_PROFILE=cluster) scales out as well: three processors, and two
    # query instances behind the gateway.
    scaled = infra.redis_cluster
    with Stack(
        infra,
        api_port=0,
        query_port=0,
        processor_port=0,
        env=env,
        gateway_port=gateway_port,
        processors=3 if scaled else 1,
        query_instances=2 if scaled else 1,
    ) as stack:
        yield Urls(stack.api_url, stack.query_url, stack.gateway_url)


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory) -> "Iterator[Provider]":
    """Ory Hydra (in-memory, loopback) with the project's clients, for the session."""
    from orders_stack.oidc import Hydra

    with Hydra(tmp_path_factory.mktemp("hydra"), public_port=0, admin_port=0) as running:
        yield running


@pytest.fixture(scope="session")
def oidc_urls(request: pytest.FixtureRequest) -> Iterator[Urls]:
    """A stack of its own in AUTH_MODE=oidc, on the session's Hydra."""
    with own_stack(request, "oidc", oidc=True) as running:
        yield running


@pytest.fixture(scope="session")
def own_stack_factory() -> Callable[..., AbstractContextManager[Urls]]:
    """`own_stack`, for test modules that want a stack of their own."""
    return own_stack


@pytest.fixture(scope="session")
def urls(request: pytest.FixtureRequest) -> Iterator[Urls]:
    with own_stack(request, "e2e") as running:
        yield running


@pytest.fixture
async def api(urls: Urls) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=urls.api, timeout=30, limits=limits) as client:
        yield client


@pytest.fixture
async def query(urls: Urls) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=urls.query, timeout=30) as client:
        yield client


@pytest.fixture
def gateway_url(urls: Urls) -> str:
    """The front door of the e2e stack (skips against a stack named without E2E_GATEWAY_URL)."""
    if urls.gateway is None:
        pytest.skip("the stack under test has no gateway (set E2E_GATEWAY_URL)")
    return urls.gateway


@pytest.fixture
def user_id() -> int:
    """A user no other test (or earlier run against the same stack) has used."""
    return 10**9 + secrets.randbelow(10**12)


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class BrowserPage:
    """A page of Debian's Chromium (driven by Playwright, no browser download) and what went
    wrong in it: console errors and uncaught page errors."""

    page: Page
    problems: list[str]

    async def place(self, product: str, quantity: int, price: str, user_id: int | None = None) -> str:
        """Place an order with the dashboard's form (the user id field only if given), wait for
        its confirmation, then for its row to reach COMPLETED; the order's id."""
        page = self.page
        if user_id is not None:
            await page.fill("input[name=userId]", str(user_id))
        await page.fill("input[name=productName]", product)
        await page.fill("input[name=quantity]", str(quantity))
        await page.fill("input[name=price]", price)
        await page.click("#place")
        result = page.locator("#result.ok")
        await expect(result).to_be_visible(timeout=30_000)
        order_id = await result.get_attribute("data-order-id")
        assert order_id
        row = page.locator(f"tr[data-order-id='{order_id}']")
        await expect(row).to_have_attribute("data-status", "COMPLETED", timeout=30_000)
        return order_id


@pytest.fixture
def chromium() -> str:
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium (make test does)"
    return CHROMIUM


@pytest.fixture
async def browser_page(chromium: str) -> AsyncIterator[BrowserPage]:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    def on_error(error: Error) -> None:
        problems.append(f"page error: {error}")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 1000})
            page.on("console", on_console)
            page.on("pageerror", on_error)
            yield BrowserPage(page, problems)
        finally:
            await browser.close()
