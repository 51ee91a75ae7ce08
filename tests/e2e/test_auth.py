"""Access control end to end: the stack in AUTH_MODE=oidc, tokens from the real Ory Hydra.

Customer tokens come from the authorization-code flow (orders_stack.oidc), the
service client's from client credentials. Each check here fails if the rule it
names is removed: another user's order, history, stream and cancel are 404; a
customer cannot place for someone else; staff reads and cancels everything; a
service client places for anyone; an Idempotency-Key belongs to its principal.
"""

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from orders_stack.oidc import Provider
from orders_stack.sse import read_events

from .conftest import BrowserPage, Urls

pytestmark = pytest.mark.e2e


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def body(user_id: int, name: str = "Desk") -> dict[str, Any]:
    return {"userId": user_id, "productName": name, "quantity": 1, "price": 120}


@pytest.fixture
def users() -> tuple[int, int]:
    base = 10**9 + secrets.randbelow(10**12)
    return base, base + 1


@pytest.fixture
async def api(oidc_urls: Urls) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=oidc_urls.api, timeout=30) as client:
        yield client


@pytest.fixture
async def query(oidc_urls: Urls) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=oidc_urls.query, timeout=30) as client:
        yield client


async def place(api: httpx.AsyncClient, token: str, user_id: int, **headers: str) -> httpx.Response:
    return await api.post("/api/orders", json=body(user_id), headers={**bearer(token), **headers})


async def test_without_a_token_nothing_but_health_and_docs(
    api: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    assert (await api.post("/api/orders", json=body(1))).status_code == 401
    assert (await api.post(f"/api/orders/{uuid.uuid4()}/cancel")).status_code == 401
    assert (await query.get("/api/orders")).status_code == 401
    for client in (api, query):
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200


async def test_user_a_gets_404_for_user_b_s_order_history_stream_and_cancel(
    api: httpx.AsyncClient, query: httpx.AsyncClient, provider: Provider, users: tuple[int, int]
) -> None:
    a_id, b_id = users
    a, b = provider.user_token(a_id), provider.user_token(b_id)
    placed = await place(api, b, b_id)
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["data"]["orderId"]
    for path in (
        f"/api/orders/{order_id}",
        f"/api/orders/{order_id}/history",
        f"/api/orders/{order_id}/events",
    ):
        answer = await query.get(path, headers=bearer(a))
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["data"] is None
    cancel = await api.post(f"/api/orders/{order_id}/cancel", headers=bearer(a))
    assert cancel.status_code == 404
    # B still reads it, untouched by A's attempt.
    mine = await query.get(f"/api/orders/{order_id}", headers=bearer(b))
    assert mine.status_code == 200
    assert mine.json()["data"]["status"] != "CANCELLED"
    assert (await query.get(f"/api/orders/user/{b_id}", headers=bearer(a))).status_code == 404
    listed = await query.get("/api/orders", headers=bearer(a))
    assert order_id not in listed.text


async def test_a_customer_places_only_as_themselves(
    api: httpx.AsyncClient, provider: Provider, users: tuple[int, int]
) -> None:
    a_id, b_id = users
    a = provider.user_token(a_id)
    refused = await place(api, a, b_id)
    assert refused.status_code == 403
    assert "userId must be your own" in refused.json()["message"]
    batch = {"orders": [body(a_id), body(b_id)]}
    assert (await api.post("/api/orders/batch", json=batch, headers=bearer(a))).status_code == 403
    assert (await place(api, a, a_id)).status_code == 202


async def test_a_token_without_the_user_claim_is_403(api: httpx.AsyncClient, provider: Provider) -> None:
    answer = await place(api, provider.user_token(None), 1)
    assert answer.status_code == 403
    assert "no user id" in answer.json()["message"]


async def test_staff_reads_and_cancels_every_order(
    api: httpx.AsyncClient, query: httpx.AsyncClient, provider: Provider, users: tuple[int, int]
) -> None:
    a_id, _ = users
    staff = provider.user_token(None, "staff")
    order_id = (await place(api, provider.user_token(a_id), a_id)).json()["data"]["orderId"]
    read = await query.get(f"/api/orders/{order_id}", headers=bearer(staff))
    assert read.status_code == 200
    assert read.json()["data"]["userId"] == a_id
    assert (await query.get(f"/api/orders/user/{a_id}", headers=bearer(staff))).status_code == 200
    assert (await query.get("/api/orders/stats", headers=bearer(staff))).status_code == 200
    cancel = await api.post(f"/api/orders/{order_id}/cancel", headers=bearer(staff))
    assert cancel.status_code in (200, 409)  # 409: the processor started it first
    # Staff cannot place orders for others: that is a service client's job.
    assert (await place(api, staff, a_id)).status_code == 403


async def test_a_service_client_places_for_any_user_but_does_not_cancel(
    api: httpx.AsyncClient, query: httpx.AsyncClient, provider: Provider, users: tuple[int, int]
) -> None:
    a_id, b_id = users
    service = provider.service_token()
    batch = {"orders": [body(a_id), body(b_id)]}
    placed = await api.post("/api/orders/batch", json=batch, headers=bearer(service))
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["data"][0]["orderId"]
    assert (await query.get(f"/api/orders/{order_id}", headers=bearer(service))).status_code == 200
    assert (await api.post(f"/api/orders/{order_id}/cancel", headers=bearer(service))).status_code == 403
    # The order's user reads it.
    own = await query.get(f"/api/orders/{order_id}", headers=bearer(provider.user_token(a_id)))
    assert own.status_code == 200


async def test_an_idempotency_key_belongs_to_its_principal(
    api: httpx.AsyncClient, provider: Provider, users: tuple[int, int]
) -> None:
    a_id, b_id = users
    a, b, service = provider.user_token(a_id), provider.user_token(b_id), provider.service_token()
    key = f"checkout-{uuid.uuid4()}"
    first = await place(api, a, a_id, **{"Idempotency-Key": key})
    again = await place(api, a, a_id, **{"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["data"]["orderId"] == first.json()["data"]["orderId"]
    # B's request with A's key is B's own: a new order, nothing of A's.
    other = await place(api, b, b_id, **{"Idempotency-Key": key})
    assert other.status_code == 202
    assert "idempotent-replayed" not in other.headers
    assert other.json()["data"]["orderId"] != first.json()["data"]["orderId"]
    # Not even a service client placing the very same body for A gets A's order.
    theirs = await place(api, service, a_id, **{"Idempotency-Key": key})
    assert theirs.status_code == 202
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["data"]["orderId"] != first.json()["data"]["orderId"]


async def test_the_customer_feed_through_a_stream_ticket(
    api: httpx.AsyncClient, query: httpx.AsyncClient, provider: Provider, users: tuple[int, int]
) -> None:
    """What the browser does: a ticket by POST with the token, then EventSource with the ticket."""
    a_id, b_id = users
    a = provider.user_token(a_id)
    ticket = (await query.post("/api/orders/events/tickets", headers=bearer(a))).json()["data"]["ticket"]
    async with asyncio.timeout(30), query.stream("GET", f"/api/orders/events?ticket={ticket}") as stream:
        assert stream.status_code == 200
        events = read_events(stream)
        assert (await anext(events)).event == ""  # the starting position
        await place(api, provider.service_token(), b_id)  # someone else's
        mine = (await place(api, a, a_id)).json()["data"]["orderId"]
        event = await anext(events)
        assert event.event == "PLACED"
        assert event.json()["orderId"] == mine
    assert (await query.get(f"/api/orders/events?ticket={ticket}")).status_code == 401  # used once


@pytest.mark.browser
async def test_swagger_ui_authorizes_with_client_credentials_against_hydra(
    oidc_urls: Urls, provider: Provider, browser_page: BrowserPage
) -> None:
    """Authorize in Swagger UI (client credentials of orders-service) gets a token from Hydra
    that the services accept: the page adds the audience Hydra needs to the token request."""
    page = browser_page.page
    provider.allow_origins([oidc_urls.api])
    await page.goto(oidc_urls.api + "/docs")
    await page.click("button.authorize")
    dialog = page.locator(".auth-container").filter(has_text="clientCredentials")
    await dialog.locator("#client_id_clientCredentials").fill(provider.service_client)
    await dialog.locator("#client_secret_clientCredentials").fill(provider.service_secret)
    await dialog.locator("label[for$='-checkbox-clientCredentials']").click()  # orders:service
    await dialog.locator("button[aria-label='Apply given OAuth2 credentials']").click()
    await expect(dialog.locator("button[aria-label='Remove authorization']")).to_be_visible(timeout=30_000)
    token = await page.evaluate(
        "() => ui.authSelectors.authorized().toJS().clientCredentials.token.access_token"
    )
    assert token
    async with httpx.AsyncClient(base_url=oidc_urls.query, timeout=30) as query:
        answer = await query.get("/api/orders", headers=bearer(token))
        assert answer.status_code == 200, answer.text
    assert browser_page.problems == []
