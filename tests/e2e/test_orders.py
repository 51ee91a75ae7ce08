"""Black-box tests of the running system, over HTTP only."""

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e


def an_order(user_id: int, **changes: Any) -> dict[str, Any]:
    return {"userId": user_id, "productName": "Gaming Laptop", "quantity": 2, "price": 1299.99, **changes}


async def wait_until_final(query: httpx.AsyncClient, location: str, timeout: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            response = await query.get(location)
            if response.status_code == 200 and response.json()["data"]["status"] == "COMPLETED":
                order: dict[str, Any] = response.json()["data"]
                return order
            await asyncio.sleep(0.05)


async def all_pages(query: httpx.AsyncClient, path: str, limit: int = 100) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        body = (await query.get(path, params=params)).json()
        orders += body["data"]
        cursor = body["page"]["nextCursor"]
        if cursor is None:
            return orders


def ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp() * 1000


async def test_the_readme_flow(api: httpx.AsyncClient, query: httpx.AsyncClient, user_id: int) -> None:
    placed = await api.post("/api/orders", json=an_order(user_id))
    assert placed.status_code == 202
    body = placed.json()
    assert body["success"] is True
    assert body["message"] == "Order accepted"
    order = body["data"]
    assert order["status"] == "PLACED"
    assert order["totalAmount"] == 2599.98
    location = placed.headers["Location"]
    assert location.endswith(f"/api/orders/{order['orderId']}")

    done = await wait_until_final(query, location)
    assert done["version"] == 3
    assert done["createdAt"] <= done["processedAt"] <= done["completedAt"]
    # The tutorial's 200 ms processing delay (timestamps and event-loop timers have 1 ms resolution).
    assert ms(done["completedAt"]) - ms(done["processedAt"]) >= 199

    by_user = (await query.get(f"/api/orders/user/{user_id}")).json()["data"]
    assert [o["orderId"] for o in by_user] == [order["orderId"]]
    assert by_user[0]["status"] == "COMPLETED"
    listed = (await query.get("/api/orders", params={"limit": 1000})).json()["data"]
    assert order["orderId"] in {o["orderId"] for o in listed}
    completed = (await query.get("/api/orders/status/completed", params={"limit": 1000})).json()["data"]
    assert order["orderId"] in {o["orderId"] for o in completed}
    assert all(o["status"] == "COMPLETED" for o in completed)


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"userId": 0}, {"userId"}),
        ({"quantity": 1001}, {"quantity"}),
        ({"price": 0.001}, {"price"}),
        ({"productName": "x" * 201}, {"productName"}),
        ({"quantity": "two", "price": -1}, {"quantity", "price"}),
        ({"shipping": "express"}, {"shipping"}),
    ],
)
async def test_invalid_orders_get_400_with_field_errors(
    api: httpx.AsyncClient, query: httpx.AsyncClient, user_id: int, changes: dict[str, Any], fields: set[str]
) -> None:
    response = await api.post("/api/orders", json=an_order(user_id, **changes))
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert {e["field"] for e in response.json()["errors"]} == fields
    assert (await query.get(f"/api/orders/user/{user_id}")).json()["data"] == []


async def test_unknown_order_is_a_404_envelope(query: httpx.AsyncClient) -> None:
    response = await query.get("/api/orders/01939a4e-1111-7000-8000-000000000000")
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False
    assert body["data"] is None
    assert "not found" in body["message"]
    assert body["timestamp"].endswith("Z")


async def test_pagination_across_pages(
    api: httpx.AsyncClient, query: httpx.AsyncClient, user_id: int
) -> None:
    ids = []
    for n in range(7):
        response = await api.post("/api/orders", json=an_order(user_id, quantity=n + 1))
        assert response.status_code == 202
        ids.append(response.json()["data"]["orderId"])
    async with asyncio.timeout(30):  # the read model follows Kafka within moments
        while len(await all_pages(query, f"/api/orders/user/{user_id}")) < len(ids):
            await asyncio.sleep(0.05)
    pages = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        body = (await query.get(f"/api/orders/user/{user_id}", params=params)).json()
        pages.append([o["orderId"] for o in body["data"]])
        assert body["page"]["limit"] == 3
        cursor = body["page"]["nextCursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [i for page in pages for i in page] == ids[::-1], "newest first, nothing repeated or missed"


async def test_200_orders_at_once_are_processed_side_by_side(
    api: httpx.AsyncClient, query: httpx.AsyncClient, user_id: int
) -> None:
    count, delay_ms = 200, 200
    started = time.monotonic()
    responses = await asyncio.gather(
        *(api.post("/api/orders", json=an_order(user_id, quantity=n % 1000 + 1)) for n in range(count))
    )
    assert [r.status_code for r in responses].count(202) == count
    accepted = {r.json()["data"]["orderId"] for r in responses}
    async with asyncio.timeout(60):
        while True:
            orders = await all_pages(query, f"/api/orders/user/{user_id}", limit=1000)
            if len(orders) == count and all(o["status"] == "COMPLETED" for o in orders):
                break
            await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    assert {o["orderId"] for o in orders} == accepted
    assert all(o["version"] == 3 for o in orders)
    # One at a time, as the tutorial did, would take count x delay = 40 s.
    assert elapsed < count * delay_ms / 1000 / 4, f"took {elapsed:.1f}s"


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
async def test_health(api: httpx.AsyncClient, query: httpx.AsyncClient, path: str) -> None:
    for client in (api, query):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json()["success"] is True


async def test_swagger_on_both(api: httpx.AsyncClient, query: httpx.AsyncClient) -> None:
    root = await api.get("/")
    assert root.status_code in (302, 307)
    assert root.headers["location"] == "/docs"
    for client in (api, query):
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")
