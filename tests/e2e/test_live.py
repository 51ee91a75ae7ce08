"""Live tracking over HTTP only: the SSE streams, resuming, many subscribers, history, no leaks."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from orders_stack.metrics import metric_value
from orders_stack.sse import SseEvent, read_events

pytestmark = pytest.mark.e2e

STATUSES = {"PLACED", "PROCESSING", "COMPLETED", "CANCELLED", "FAILED"}
LIFECYCLE = ["PLACED", "PROCESSING", "COMPLETED"]


def an_order(user_id: int, name: str = "Gaming Laptop") -> dict[str, Any]:
    return {"userId": user_id, "productName": name, "quantity": 2, "price": 1299.99}


@pytest.fixture
async def streams(urls: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client for long-lived streams: many connections, reads that may wait."""
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
    timeout = httpx.Timeout(30, read=60)
    async with httpx.AsyncClient(base_url=urls.query, timeout=timeout, limits=limits) as client:
        yield client


async def follow(
    client: httpx.AsyncClient,
    path: str,
    until: Callable[[list[SseEvent]], bool],
    *,
    started: asyncio.Event | None = None,
    headers: dict[str, str] | None = None,
) -> list[SseEvent]:
    """Transitions of one stream (and its id-only opening) until `until` holds or the server ends it."""
    seen: list[SseEvent] = []
    async with asyncio.timeout(60), client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, response.status_code
        if started is not None:
            started.set()
        async for event in read_events(response):
            seen.append(event)
            if until(seen):
                break
    return seen


def transitions(events: list[SseEvent]) -> list[SseEvent]:
    return [e for e in events if e.event in STATUSES]


def count(n: int) -> Callable[[list[SseEvent]], bool]:
    return lambda seen: len(transitions(seen)) >= n


async def position_now(client: httpx.AsyncClient) -> str:
    """A position before anything placed from now on: the id-only opening of a fresh feed."""
    async with client.stream("GET", "/api/orders/events") as response:
        async for event in read_events(response):
            assert event.event == ""
            assert event.id is not None
            return event.id
    raise AssertionError("the feed ended without its opening")


async def place(api: httpx.AsyncClient, user_id: int, name: str = "Gaming Laptop") -> dict[str, Any]:
    response = await api.post("/api/orders", json=an_order(user_id, name))
    assert response.status_code == 202, response.text
    order: dict[str, Any] = response.json()["data"]
    return order


async def test_the_feed_subscribed_before_placing_sees_every_transition(
    api: httpx.AsyncClient, streams: httpx.AsyncClient, user_id: int
) -> None:
    ready = [asyncio.Event(), asyncio.Event()]
    everything = asyncio.create_task(
        follow(streams, f"/api/orders/events?userId={user_id}", count(3), started=ready[0])
    )
    completed = asyncio.create_task(
        follow(streams, f"/api/orders/events?userId={user_id}&status=completed", count(1), started=ready[1])
    )
    for event in ready:
        await asyncio.wait_for(event.wait(), 30)
    order = await place(api, user_id)

    seen = transitions(await everything)
    assert [e.event for e in seen] == LIFECYCLE
    assert {e.json()["orderId"] for e in seen} == {order["orderId"]}
    assert [e.json()["version"] for e in seen] == [1, 2, 3]
    assert [e.json()["status"] for e in seen] == LIFECYCLE
    assert seen[0].json() == order, "PLACED carries the order as the api answered it"
    done = seen[-1].json()
    assert done["processedAt"] is not None
    assert done["completedAt"] is not None
    only_completed = transitions(await completed)
    assert [(e.event, e.json()["orderId"]) for e in only_completed] == [("COMPLETED", order["orderId"])]


async def test_an_order_stream_resumes_with_no_gap_and_no_repeat(
    api: httpx.AsyncClient, query: httpx.AsyncClient, streams: httpx.AsyncClient, user_id: int
) -> None:
    before = await position_now(streams)
    order = await place(api, user_id)
    path = f"/api/orders/{order['orderId']}/events"

    # From a position taken before the order existed: the whole life, then the stream ends.
    whole = transitions(await follow(streams, path, lambda s: False, headers={"Last-Event-ID": before}))
    assert [e.event for e in whole] == LIFECYCLE
    ids = [e.id for e in whole]
    assert all(ids), "every event carries its position"

    # Mid-way: exactly the rest.
    rest = await follow(streams, path, lambda s: False, headers={"Last-Event-ID": ids[0] or ""})
    assert [(e.event, e.id) for e in transitions(rest)] == [(e.event, e.id) for e in whole[1:]]

    # Fresh, once final: the current state only, then the end; resuming from it: 204.
    fresh = transitions(await follow(streams, path, lambda s: False))
    assert [(e.event, e.id) for e in fresh] == [("COMPLETED", ids[-1])]
    assert fresh[0].json() == (await query.get(f"/api/orders/{order['orderId']}")).json()["data"]
    finished = await streams.get(path, headers={"Last-Event-ID": ids[-1] or ""})
    assert finished.status_code == 204

    # The history has the same transitions, with their times and positions.
    history = (await query.get(f"{path.removesuffix('/events')}/history")).json()
    assert history["success"] is True
    entries = history["data"]
    assert [(h["status"], h["version"], h["position"]) for h in entries] == [
        (status, version, position)
        for status, version, position in zip(LIFECYCLE, [1, 2, 3], ids, strict=True)
    ]
    final = fresh[0].json()
    assert [h["at"] for h in entries] == [final["createdAt"], final["processedAt"], final["completedAt"]]
    assert (await query.get(f"/api/orders/{uuid.uuid4()}/history")).status_code == 404


async def test_a_hundred_concurrent_subscribers_all_get_every_event(
    api: httpx.AsyncClient, streams: httpx.AsyncClient, user_id: int
) -> None:
    orders = 3
    started = [asyncio.Event() for _ in range(100)]
    subscribers = [
        asyncio.create_task(
            follow(streams, f"/api/orders/events?userId={user_id}", count(3 * orders), started=event)
        )
        for event in started
    ]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 60)
    placed = await asyncio.gather(*(place(api, user_id, f"item {i}") for i in range(orders)))

    received = [transitions(events) for events in await asyncio.gather(*subscribers)]
    first = [(e.id, e.event, e.json()["orderId"]) for e in received[0]]
    assert len(first) == 3 * orders
    assert {order_id for _, _, order_id in first} == {o["orderId"] for o in placed}
    for order in placed:
        assert [status for _, status, oid in first if oid == order["orderId"]] == LIFECYCLE
    for events in received[1:]:
        assert [(e.id, e.event, e.json()["orderId"]) for e in events] == first


async def test_thousands_of_clients_come_and_go_without_a_leak(
    query: httpx.AsyncClient, streams: httpx.AsyncClient, user_id: int
) -> None:
    position = await position_now(streams)
    paths = [
        ("/api/orders/events", {}),
        (f"/api/orders/events?userId={user_id}&status=placed", {}),
        ("/api/orders/events", {"Last-Event-ID": position}),
        (f"/api/orders/{uuid.uuid4()}/events", {}),  # unknown yet: it waits
    ]

    async def come_and_go(i: int) -> None:
        path, headers = paths[i % len(paths)]
        if i % len(paths) == 3:
            path = f"/api/orders/{uuid.uuid4()}/events"
        async with streams.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200
            async for _ in response.aiter_bytes():
                break  # leave after the first bytes, mid-stream

    async def wave(start: int, size: int) -> None:
        await asyncio.gather(*(come_and_go(i) for i in range(start, start + size)))

    async def settled() -> str:
        return (await query.get("/metrics")).text

    await wave(0, 100)  # warm-up: pools reach their working size
    async with asyncio.timeout(60):
        while metric_value(before := await settled(), "query_live_subscribers") != 0:
            await asyncio.sleep(0.1)
    clients = 2000
    for start in range(100, 100 + clients, 100):
        await wave(start, 100)

    # Disconnects are noticed at once; the deadline only allows for a busy machine. The Redis pool
    # may have grown to serve a wave's concurrent reads, but holds no connection and stays bounded.
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        after = await settled()
        settled_now = (
            metric_value(after, "query_live_subscribers") == 0
            and metric_value(after, "query_asyncio_tasks") <= metric_value(before, "query_asyncio_tasks")
            and metric_value(after, "query_redis_connections_in_use") == 0
        )
        if settled_now or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert settled_now, f"before:\n{before}\nafter:\n{after}"
    assert metric_value(after, "query_redis_connections") <= max(
        metric_value(before, "query_redis_connections"), 110
    )
    opened = metric_value(after, "query_live_streams_total") - metric_value(
        before, "query_live_streams_total"
    )
    assert opened >= clients
