"""The front door (nginx on GATEWAY_PORT): the tutorial's commands on one port, writes to the api,
everything else to the query service, live streams passed through as they happen."""

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import expect

from orders_stack.sse import SseEvent, read_events

from .conftest import BrowserPage
from .test_orders import wait_until_final

pytestmark = pytest.mark.e2e

LIFECYCLE = ["PLACED", "PROCESSING", "COMPLETED"]
# The tutorial's own request, verbatim (README, "Try it").
TUTORIAL_ORDER = {"userId": 1, "productName": "Laptop", "quantity": 1, "price": 999.99}


@pytest.fixture
async def front(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    timeout = httpx.Timeout(30, read=60)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=timeout) as client:
        yield client


async def test_the_tutorials_commands_work_on_the_front_door(
    front: httpx.AsyncClient, gateway_url: str
) -> None:
    placed = await front.post("/api/orders", json=TUTORIAL_ORDER)
    assert placed.status_code == 202, placed.text
    order = placed.json()["data"]
    assert order["status"] == "PLACED"
    assert order["totalAmount"] == 999.99
    # The order's address names the front door, not the query service behind it.
    assert placed.headers["Location"] == f"{gateway_url}/api/orders/{order['orderId']}"

    done = await wait_until_final(front, placed.headers["Location"])
    assert done["version"] == 3
    one = await front.get(f"/api/orders/{order['orderId']}")
    assert one.status_code == 200
    assert one.json()["data"] == done
    for path in ("/api/orders", "/api/orders/user/1", "/api/orders/status/COMPLETED"):
        listed = await front.get(path, params={"limit": 1000})
        assert listed.status_code == 200, path
        assert order["orderId"] in {o["orderId"] for o in listed.json()["data"]}, path
    assert (await front.get(f"/api/orders/{uuid.uuid4()}")).json()["success"] is False


async def test_writes_reach_the_api(front: httpx.AsyncClient, user_id: int) -> None:
    one = {"userId": user_id, "productName": "Mouse", "quantity": 1, "price": 19.99}
    batch = await front.post("/api/orders/batch", json={"orders": [one, one]})
    assert batch.status_code == 202, batch.text
    assert len(batch.json()["data"]) == 2
    # The api decides a cancel (the query service has no such route: it would say 405).
    unknown = await front.post(f"/api/orders/{uuid.uuid4()}/cancel")
    assert unknown.status_code == 404
    assert unknown.json()["success"] is False
    invalid = await front.post("/api/orders", json={**one, "quantity": 0})
    assert invalid.status_code == 400
    assert "errors" in invalid.json()
    asyncapi = await front.get("/asyncapi.json")
    assert asyncapi.status_code == 200
    assert asyncapi.json()["asyncapi"].startswith("3.")
    page = await front.get("/asyncapi")
    assert page.status_code == 200
    assets = re.findall(r'(?:href|src)="(/asyncapi/assets/[^"]+)"', page.text)
    assert assets, "the page names its assets"
    for asset in assets:
        assert (await front.get(asset)).status_code == 200, asset


async def test_the_root_docs_dashboard_and_health(front: httpx.AsyncClient, gateway_url: str) -> None:
    root = await front.get("/")
    assert root.status_code == 302
    assert root.headers["Location"] == "/docs"
    docs = await front.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    openapi = await front.get("/openapi.json")
    assert openapi.status_code == 200
    paths = openapi.json()["paths"]
    assert "get" in paths["/api/orders/{orderId}"], "the query service's reads"
    assert {"get", "post"} <= set(paths["/api/orders"]), "one document: the api's writes beside the reads"
    assert "post" in paths["/api/orders/batch"]
    dashboard = await front.get("/dashboard")
    assert dashboard.status_code == 200
    assert f'<meta name="orders-api" content="{gateway_url}">' in dashboard.text, (
        "its form posts to the gateway"
    )
    assert (await front.get("/metrics")).status_code == 404, "metrics stay on the internal network"
    health = await front.get("/health")
    assert health.status_code == 200
    assert health.text == "ok\n"
    assert (await front.get("/health/ready")).status_code == 200


async def follow(
    front: httpx.AsyncClient, path: str, n: int, started: asyncio.Event, headers: dict[str, str] | None = None
) -> list[tuple[float, SseEvent]]:
    """The first `n` transitions of a stream through the gateway, each with when it arrived."""
    seen: list[tuple[float, SseEvent]] = []
    async with asyncio.timeout(60), front.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in read_events(response):
            if event.event == "":
                started.set()  # the id-only opening: subscribed
            if event.event in LIFECYCLE:
                seen.append((time.monotonic(), event))
                if len(seen) == n:
                    break
    return seen


async def test_a_live_stream_passes_through_as_it_happens(front: httpx.AsyncClient, user_id: int) -> None:
    started = asyncio.Event()
    feed = asyncio.create_task(follow(front, f"/api/orders/events?userId={user_id}", 3, started))
    await asyncio.wait_for(started.wait(), 30)
    placed = await front.post(
        "/api/orders", json={"userId": user_id, "productName": "Laptop", "quantity": 1, "price": 999.99}
    )
    assert placed.status_code == 202
    order_id = placed.json()["data"]["orderId"]
    seen = await feed
    assert [e.event for _, e in seen] == LIFECYCLE
    assert {e.json()["orderId"] for _, e in seen} == {order_id}
    # Last-Event-ID goes through: resuming after PLACED gives exactly the rest. (The order's
    # stream takes the feed's id; its own ids are its shard's positions, the feed's one per shard.)
    resumed = await follow(
        front,
        f"/api/orders/{order_id}/events",
        2,
        asyncio.Event(),
        headers={"Last-Event-ID": seen[0][1].id or ""},
    )
    versions = [(e.event, e.json()["version"]) for _, e in resumed]
    assert versions == [(e.event, e.json()["version"]) for _, e in seen[1:]]


@pytest.mark.browser
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_dashboard_through_the_gateway_places_and_follows_an_order(
    gateway_url: str, host: str, user_id: int, browser_page: BrowserPage
) -> None:
    """Served by the gateway, its form posts through the gateway too (same origin, or the other
    name of this machine, which CORS allows), and its live feed comes through unbuffered."""
    page = browser_page.page
    await page.goto(gateway_url.replace("127.0.0.1", host) + "/dashboard")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    await browser_page.place("Laptop", 1, "999.99", user_id=user_id)
    assert browser_page.problems == []
