"""Access control of the query service's live streams (AUTH_MODE=oidc): the customer's feed,
stream tickets, the bounded and charged catch-up, rate limits across instances."""

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from orders_contract.models import Order
from orders_query.routes import live
from orders_readmodel.store import OrderStore
from orders_stack.sse import read_events

from .oidc_provider import USER_A, USER_B, KeyProvider, bearer, oidc_settings

pytestmark = pytest.mark.redis


async def test_the_customer_feed_carries_only_their_transitions(
    query: httpx.AsyncClient, provider: KeyProvider, store: OrderStore, new_order: Callable[..., Order]
) -> None:
    a = bearer(provider.token(USER_A))
    async with asyncio.timeout(20), query.stream("GET", "/api/orders/events", headers=a) as response:
        assert response.status_code == 200
        events = read_events(response)
        first = await anext(events)
        assert first.event == ""  # the starting position
        others, own = new_order(user_id=USER_B), new_order(user_id=USER_A)
        await store.create(others)
        await store.create(own)
        event = await anext(events)
        assert event.json()["orderId"] == own.order_id  # B's order, created first, never shown


async def test_a_stream_ticket_opens_one_stream_once(
    query: httpx.AsyncClient, provider: KeyProvider, orders: dict[int, Order]
) -> None:
    a = bearer(provider.token(USER_A))
    issued = await query.post("/api/orders/events/tickets", headers=a)
    assert issued.status_code == 201
    ticket = issued.json()["data"]["ticket"]
    assert issued.json()["data"]["expiresIn"] == 30
    path = f"/api/orders/{orders[USER_A].order_id}/events?ticket={ticket}"
    async with asyncio.timeout(20), query.stream("GET", path) as response:
        assert response.status_code == 200
        event = await anext(read_events(response))
        assert event.json()["orderId"] == orders[USER_A].order_id
    again = await query.get(path)
    assert again.status_code == 401
    assert "ticket" in again.json()["message"]
    # A ticket carries its principal: A's ticket does not open B's order.
    ticket = (await query.post("/api/orders/events/tickets", headers=a)).json()["data"]["ticket"]
    other = await query.get(f"/api/orders/{orders[USER_B].order_id}/events?ticket={ticket}")
    assert other.status_code == 404
    # Only the live routes take a ticket.
    ticket = (await query.post("/api/orders/events/tickets", headers=a)).json()["data"]["ticket"]
    assert (await query.get(f"/api/orders?ticket={ticket}")).status_code == 401


async def test_only_a_stream_route_uses_up_a_ticket(
    query: httpx.AsyncClient, provider: KeyProvider, orders: dict[int, Order]
) -> None:
    a = bearer(provider.token(USER_A))
    ticket = (await query.post("/api/orders/events/tickets", headers=a)).json()["data"]["ticket"]
    order_id = orders[USER_A].order_id
    for method, path in (
        ("GET", "/api/orders/x/y/events"),  # shaped like a stream, but no route
        ("GET", f"/api/orders/{order_id}/history/events"),
        ("POST", "/api/orders/events"),  # the path of a stream, not its method
        ("GET", f"/api/orders/{order_id}"),
    ):
        answer = await query.request(method, f"{path}?ticket={ticket}")
        assert answer.status_code == 401, (method, path, answer.text)
        assert "bearer token is required" in answer.json()["message"]
    async with (
        asyncio.timeout(20),
        query.stream("GET", f"/api/orders/{order_id}/events?ticket={ticket}") as live,
    ):
        assert live.status_code == 200  # still unused
        assert (await anext(read_events(live))).json()["orderId"] == order_id


async def _noise(store: OrderStore, entries: int) -> list[str]:
    """`entries` transitions of user B's in the update stream, straight; their positions."""
    noise: dict[Any, Any] = {
        "orderId": "01939a4e-0000-7000-8000-000000000001",
        "userId": str(USER_B),
        "status": "PLACED",
    }
    async with store.redis.pipeline(transaction=False) as pipe:
        for n in range(entries):
            pipe.xadd(store.keys.updates(0), {**noise, "version": str(n)})
        return [str(p) for p in await pipe.execute()]


async def test_a_customer_s_catch_up_is_bounded_and_charged_to_the_rate_limit(
    test_env: dict[str, str],
    provider: KeyProvider,
    serve: Any,
    store: OrderStore,
    new_order: Callable[..., Order],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "CATCH_UP_ENTRIES", 1000)  # 10 requests' worth at 100 an entry
    first, second = new_order(user_id=USER_A), new_order(user_id=USER_A)
    await store.create(first)
    noise = await _noise(store, 1500)
    await store.create(second)
    settings = oidc_settings(test_env, provider, rate_limit_requests=20, rate_limit_window_s=600)
    a, staff = bearer(provider.token(USER_A)), bearer(provider.token(None, roles=["orders:staff"]))

    async def events(path: str, after: str, headers: dict[str, str], count: int) -> list[Any]:
        seen = []
        async with (
            asyncio.timeout(20),
            client.stream("GET", path, headers={**headers, "Last-Event-ID": after}) as r,
        ):
            assert r.status_code == 200
            async for event in read_events(r):
                seen.append(event)
                if len(seen) == count:
                    return seen
        return seen

    async with serve(settings) as client:
        # Not too far behind (700 entries): every own event after the position, once.
        near = await events("/api/orders/events", noise[800], a, 1)
        assert [(e.event, e.json()["orderId"]) for e in near] == [("PLACED", second.order_id)]
        # Further behind than one catch-up reads: a reset, as for a trimmed position.
        far = await events("/api/orders/events", "0-0", a, 2)
        assert [e.event for e in far] == ["PLACED", "reset"]  # what the 1000 entries read held, then
        assert far[1].json()["lastEventId"] == noise[998]  # the last entry read
        one = await events(f"/api/orders/{first.order_id}/events", noise[0], a, 2)
        assert [e.event for e in one] == ["reset", "PLACED"]  # then the order as it is now
        # Staff catch up as before, however far.
        all_of_a = await events(f"/api/orders/events?userId={USER_A}", "0-0", staff, 2)
        assert [e.json()["orderId"] for e in all_of_a] == [first.order_id, second.order_id]
        # What was read was charged: 3 requests, 7 + 10 pages of 100 entries, then one page of the
        # third catch-up (5) takes the customer over the limit, so it reads no further: 25 > 20.
        limited = await client.get("/api/orders", headers=a)
        assert limited.status_code == 429


async def test_429_with_retry_after_across_two_instances_sharing_redis(
    test_env: dict[str, str], provider: KeyProvider, orders: dict[int, Order], serve: Any
) -> None:
    settings = oidc_settings(test_env, provider, rate_limit_requests=6, rate_limit_window_s=600)
    a, b = bearer(provider.token(USER_A)), bearer(provider.token(USER_B))
    async with serve(settings) as one, serve(settings) as two:
        codes = [(await (one if n % 2 else two).get("/api/orders", headers=a)).status_code for n in range(6)]
        assert codes == [200] * 6
        for instance in (one, two):
            limited = await instance.get("/api/orders", headers=a)
            assert limited.status_code == 429
            assert 1 <= int(limited.headers["retry-after"]) <= 600
            assert limited.json()["success"] is False
        # Another principal has a budget of its own.
        assert (await one.get("/api/orders", headers=b)).status_code == 200
