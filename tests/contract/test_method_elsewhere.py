"""The two apps as built: a method sent to the service that does not serve it gets a 405 that
names the other one (its public URL from the settings) and the front door's path; no server
starts (the answer comes from routing, before any client of the lifespan is needed)."""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from orders_api.app import create_app as create_api
from orders_api.settings import Settings as ApiSettings
from orders_query.app import create_app as create_query
from orders_query.settings import Settings as QuerySettings

LOOPBACK: dict[str, Any] = {"auth_mode": "none", "bind_host": "127.0.0.1"}
ORDER = "0193a4b2-0000-7000-8000-000000000001"


def _api() -> FastAPI:
    return create_api(ApiSettings(**LOOPBACK, query_public_url="http://reads.example/"))


def _query() -> FastAPI:
    return create_query(QuerySettings(**LOOPBACK, api_public_url="http://writes.example"))


async def _send(app: FastAPI, method: str, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path)


@pytest.mark.parametrize(
    ("app", "method", "path", "other"),
    [
        (_api, "GET", "/api/orders", "query service: http://reads.example"),
        (_query, "POST", "/api/orders", "ingest api: http://writes.example"),
        (_query, "POST", "/api/orders/batch", "ingest api: http://writes.example"),
    ],
)
async def test_the_405_names_where_the_method_is_served(app: Any, method: str, path: str, other: str) -> None:
    response = await _send(app(), method, path)
    assert response.status_code == 405
    body = response.json()
    assert body["success"] is False
    assert body["message"] == f"{method} {path} is served by the {other}{path}"
    url = other.split(": ", 1)[1]
    assert response.headers["link"] == f'<{url}{path}>; rel="alternate"'
    assert response.headers["allow"]


@pytest.mark.parametrize(
    ("app", "method", "path"),
    [
        (_api, "GET", "/api/orders/batch"),
        (_api, "GET", f"/api/orders/{ORDER}/cancel"),
        (_query, "DELETE", "/api/orders"),
    ],
)
async def test_a_method_served_by_neither_is_a_plain_405(app: Any, method: str, path: str) -> None:
    response = await _send(app(), method, path)
    assert response.status_code == 405
    assert response.json()["message"] == "Method Not Allowed"
    assert "link" not in response.headers
