"""A 405 names the service (and the gateway path) that serves the method, in the envelope and
a `Link` header; a method neither serves stays a plain 405."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from orders_web.elsewhere import SERVED, install_elsewhere, served_by
from orders_web.http import install_common


def _api() -> FastAPI:
    """The api's two POST routes, with the query service named as the other."""
    app = FastAPI()
    install_common(app)
    install_elsewhere(app, "query", "http://reads.example:8001/")  # a trailing slash is dropped

    @app.post("/api/orders")
    async def place_order() -> dict[str, str]:
        return {}

    @app.post("/api/orders/{orderId}/cancel")
    async def cancel_order(orderId: str) -> dict[str, str]:
        return {}

    return app


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_api())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_a_read_sent_to_the_api_is_pointed_at_the_query_service(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/orders", params={"limit": 5})
    assert response.status_code == 405
    body = response.json()
    assert body["success"] is False
    assert body["message"] == (
        "GET /api/orders is served by the query service: http://reads.example:8001/api/orders"
    )
    assert response.headers["link"] == '<http://reads.example:8001/api/orders>; rel="alternate"'
    assert response.headers["allow"] == "POST"


async def test_a_path_with_an_id_keeps_it(api: httpx.AsyncClient) -> None:
    order_id = "0193a4b2-0000-7000-8000-000000000001"
    response = await api.get(f"/api/orders/{order_id}/cancel")
    assert response.status_code == 405
    # the query service has no GET of .../cancel: a plain 405, no Link
    assert response.json()["message"] == "Method Not Allowed"
    assert "link" not in response.headers


async def test_a_method_served_nowhere_is_a_plain_405(api: httpx.AsyncClient) -> None:
    response = await api.delete("/api/orders")
    assert response.status_code == 405
    body = response.json()
    assert (body["success"], body["message"]) == (False, "Method Not Allowed")
    assert "link" not in response.headers


def test_served_by_matches_templates() -> None:
    order_id = "0193a4b2-0000-7000-8000-000000000001"
    assert served_by("query", "GET", f"/api/orders/{order_id}/history")
    assert served_by("query", "HEAD", "/api/orders/user/7")
    assert not served_by("query", "POST", "/api/orders")
    assert served_by("api", "POST", f"/api/orders/{order_id}/cancel")
    assert not served_by("api", "GET", f"/api/orders/{order_id}/cancel")
    assert not served_by("api", "POST", f"/api/orders/{order_id}/cancel/more")
    assert not served_by("query", "GET", "/api/orders/batch")  # not an orderId: the api's path
    assert not served_by("query", "GET", "/api/orders/user/seven")
    assert SERVED["api"].isdisjoint(SERVED["query"])
